"""Context models ``g_ar``: causal sequence models (``sequence.py``) and the row-causal grid
model for images (``grid.py``).

Every context declares ``grid`` (True: runs on ``(B, H, W, D)`` grids; False: on sequences
``(B, T, D)``), ``out_dim``, and ``hidden_states(z)``: the output of every layer, last = ``c``.
"""
