"""Other tools' checkpoints as cpc_lightning run dirs (``python -m cpc_lightning.convert``).

``cpc_audio``: facebookresearch/CPC_audio (its formats and arguments), ``cpc_audio_tensors``:
its tensors -> a :class:`~cpc_lightning.model.module.CPCModule` state (and Adam state),
``run_dir``: the converted config, model and run dir.
"""
