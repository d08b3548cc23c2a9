"""cpc_lightning: Contrastive Predictive Coding for speech and images on Lightning + Hydra."""

__version__ = "0.1.0"
