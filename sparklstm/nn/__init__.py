"""The network: the LSTM classifier (model.py), its wide TF-IDF path (wide.py), and the
peephole LSTM written from scratch with its fused C step (peephole*.py, peephole_step.c).
"""
