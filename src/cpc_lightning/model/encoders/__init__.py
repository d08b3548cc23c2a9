"""Encoders ``g_enc``: audio waveforms (``audio.py``) and image patch grids (``patch.py``).

Every encoder declares ``modality`` (``"audio"`` or ``"image"``) and ``out_dim``; audio encoders
also ``downsampling`` (samples per frame), ``receptive_field`` and ``num_frames(num_samples)``.
"""
