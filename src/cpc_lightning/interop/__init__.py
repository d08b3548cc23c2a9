"""Other tools' checkpoints as cpc_lightning run dirs (``python -m cpc_lightning.convert``),
and the way back (``python -m cpc_lightning.export``).

``cpc_audio``: facebookresearch/CPC_audio (its formats and arguments), ``cpc_audio_tensors``:
its tensors <-> a :class:`~cpc_lightning.model.module.CPCModule` state (and Adam state), one
table both ways, ``run_dir``: the converted config, model and run dir; ``export_cpc_audio``:
our config and tensors -> CPC_audio's; ``model_dir``: the safetensors model folder and card;
``zerospeech``: the ZeroSpeech 2021 submission tree and unit files.
"""
