"""Single-node training: the loop (loop.py), checkpoints and resume, the in-memory and
streamed train splits (data.py, shards.py).
"""
