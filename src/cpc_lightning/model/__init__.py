"""The model: encoder -> context -> heads -> InfoNCE with a negative sampler (``CPCModule``).

Plain ``nn.Module`` parts know neither Lightning nor Hydra; ``module.py`` wires them.
"""
