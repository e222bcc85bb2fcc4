"""Why a model predicted what it did: attributions (attribution.py), integrated gradients
(ig.py), and their display in a terminal or HTML (view.py).
"""
