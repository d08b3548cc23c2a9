"""A training run dir: its saved config, its checkpoints, resuming it. The one place that
validates a run dir and rebuilds its model.

A run dir (Hydra's output dir of ``python -m cpc_lightning.train``; its files are named by
:class:`cpc_lightning.run_dir.RunDir`, re-exported here) alone rebuilds and evaluates the model.
Configs written by older releases are upgraded on load (:func:`upgrade_config`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.build import build_datamodule, build_model
from cpc_lightning.errors import UserError, user_errors
from cpc_lightning.model.module import CPCModule
from cpc_lightning.run_dir import HYDRA_CONFIG, LAST_CHECKPOINT, RESOLVED_CONFIG, RunDir
from cpc_lightning.training.checkpoint_files import (
    TRAINING_KEYS,
    checkpoint_problem,
    load_checkpoint,
    load_error_problem,
    newest_intact_checkpoint,
)
from cpc_lightning.training.checkpoint_files import (  # re-exported for train.py
    checkpoint_global_step as checkpoint_global_step,
)

log = logging.getLogger(__name__)

#: ``_target_`` paths of release 0.1 (flat package) -> today's.
LEGACY_TARGETS = {
    "cpc_lightning.encoders.Conv1dEncoder": "cpc_lightning.model.encoders.audio.Conv1dEncoder",
    "cpc_lightning.resnet.PatchResNet": "cpc_lightning.model.encoders.patch.PatchResNet",
    "cpc_lightning.resnet.TorchvisionResNet": (
        "cpc_lightning.model.encoders.patch.TorchvisionResNet"
    ),
    "cpc_lightning.context.GRUContext": "cpc_lightning.model.context.sequence.GRUContext",
    "cpc_lightning.context.LSTMContext": "cpc_lightning.model.context.sequence.LSTMContext",
    "cpc_lightning.context.TransformerContext": (
        "cpc_lightning.model.context.sequence.TransformerContext"
    ),
    "cpc_lightning.masked_conv.MaskedConvContext": (
        "cpc_lightning.model.context.grid.MaskedConvContext"
    ),
    "cpc_lightning.heads.PredictionHeads": "cpc_lightning.model.heads.PredictionHeads",
    "cpc_lightning.negatives.NegativeSampler": "cpc_lightning.model.negatives.NegativeSampler",
    "cpc_lightning.module.warmup_cosine": "cpc_lightning.model.schedules.warmup_cosine",
    "cpc_lightning.callbacks.AtomicModelCheckpoint": (
        "cpc_lightning.training.checkpointing.AtomicModelCheckpoint"
    ),
    "cpc_lightning.callbacks.AppendingCSVLogger": (
        "cpc_lightning.training.csv_logger.AppendingCSVLogger"
    ),
    **{
        f"cpc_lightning.data.modules.{name}": f"cpc_lightning.data.audio.datamodules.{name}"
        for name in (
            "LibriSpeechDataModule",
            "AudioFolderDataModule",
            "SyntheticSpeechDataModule",
        )
    },
    **{
        f"cpc_lightning.data.images.{name}": f"cpc_lightning.data.images.datamodules.{name}"
        for name in ("ImagePatchDataModule", "CIFAR10PatchDataModule")
    },
}
#: ``data.*`` keys renamed since release 0.1.
LEGACY_DATA_KEYS = {
    "val_fraction": "test_fraction",
    "utterances_per_speaker": "windows_per_speaker",
}


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """A run config written by an older release, in today's names (targets and keys)."""
    container = OmegaConf.to_container(cfg, resolve=False)
    changed = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target in LEGACY_TARGETS:
                node["_target_"] = LEGACY_TARGETS[target]
                changed.append(target)
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    container = walk(container)
    data = container.get("data") or {}
    for old, new in LEGACY_DATA_KEYS.items():
        if isinstance(data, dict) and old in data and new not in data:
            data[new] = data.pop(old)
            changed.append(f"data.{old}")
    model = container.get("model") or {}
    if isinstance(model, dict) and "heads" in model:  # model.heads -> the `heads` group
        heads = model.pop("heads")
        container.setdefault("heads", heads)
        changed.append("model.heads")
    if isinstance(model, dict) and "online_probe" in model:
        if model.pop("online_probe"):
            callbacks = container.setdefault("callbacks", {}) or {}
            callbacks["online_probe"] = {
                "_target_": "cpc_lightning.eval.online_probe.OnlineProbe",
                "lr": 1.0e-3,
            }
            container["callbacks"] = callbacks
        changed.append("model.online_probe")
    if changed:
        log.info("run config written by an older release: upgraded %s", ", ".join(changed))
    return OmegaConf.create(container)


def load_run_config(run_dir: Path) -> DictConfig:
    """The resolved training config saved in a run dir, in today's names."""
    for path in RunDir(run_dir).config_files():
        if path.is_file():
            return upgrade_config(OmegaConf.load(path))
    raise UserError(
        f"{run_dir} is not a training run dir: it has neither {RESOLVED_CONFIG} nor "
        f"{HYDRA_CONFIG} (point run_dir at a directory written by cpc_lightning.train)"
    )


def find_checkpoint(run_dir: Path) -> Path:
    """The last checkpoint of a run dir (or the newest checkpoint there)."""
    run = RunDir(run_dir)
    ckpt_dir, last = run.checkpoints, run.last_checkpoint
    if last.is_file():
        return last
    found = sorted(ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"no checkpoint in {ckpt_dir}: train with callbacks=default (it writes "
            f"{LAST_CHECKPOINT}) or pass checkpoint=<file>"
        )
    return found[-1]


def corrupt_checkpoint_error(key: str, path: Path, problem: str) -> UserError:
    """One message: the file, what is wrong, and the newest intact checkpoint beside it."""
    other = newest_intact_checkpoint(path.parent, exclude=path)
    if other is None:
        fix = f"no other intact checkpoint is in {path.parent}: start a new run"
    else:
        fix = (
            f"the newest intact checkpoint in {path.parent} is {other[0].name} (step {other[1]}): "
            f"use {key}={other[0]}"
        )
    return UserError(f"{key}={path}: the checkpoint {problem}; {fix}")


def read_checkpoint(path: Path, key: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint file's content (CPU tensors); a damaged file is a :class:`UserError` naming
    the newest intact checkpoint beside it (``key``: the override that selects a checkpoint)."""
    try:
        state = load_checkpoint(path, mmap=False)
    except Exception as err:  # noqa: BLE001 - any failure to load is a damaged file
        raise corrupt_checkpoint_error(key, path, load_error_problem(err)) from err
    if not isinstance(state, dict) or "state_dict" not in state:
        raise corrupt_checkpoint_error(key, path, "holds no model weights ('state_dict')")
    return state


def load_weights(model: CPCModule, state: dict[str, Any], path: Path) -> None:
    """Load ``state["state_dict"]``; a mismatch names the checkpoint and the first bad key."""
    try:
        model.load_state_dict(state["state_dict"])
    except (RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()
        detail = next((ln.strip() for ln in first[1:] if ln.strip()), first[0] if first else "")
        raise UserError(
            f"checkpoint {path} does not fit the model its run config describes ({detail}); "
            "pass the checkpoint of this run (checkpoint=<file>) or its own run_dir"
        ) from err


@dataclass
class Run:
    """A trained run, rebuilt: where it lives, which checkpoint, its config, the frozen model."""

    run_dir: Path
    checkpoint: Path
    config: DictConfig
    model: CPCModule
    global_step: int | None = None


def open_run(run_dir: str | Path | None = None, checkpoint: str | Path | None = None) -> Run:
    """Rebuild a run from ``run_dir`` and/or ``checkpoint`` (CPU, eval mode, frozen).

    Given only a checkpoint, its run dir is the folder above ``checkpoints/``.
    """
    ckpt = Path(checkpoint).expanduser().resolve() if checkpoint else None
    if ckpt is not None and not ckpt.is_file():
        raise UserError(f"checkpoint={ckpt} does not exist")
    if run_dir:
        root = Path(run_dir).expanduser().resolve()
    elif ckpt is not None:
        root = RunDir.of_checkpoint(ckpt).root
    else:
        raise UserError("give run_dir=<training run dir> or checkpoint=<file>")
    if root.is_file():
        raise UserError(
            f"run_dir={root} is a file, not a run dir: give the training run dir (the folder "
            f"holding {RESOLVED_CONFIG}), or pass a checkpoint file as checkpoint={root}"
        )
    if not root.is_dir():
        raise UserError(f"run_dir={root} does not exist")
    cfg = load_run_config(root)
    ckpt = ckpt or find_checkpoint(root)
    model = build_model(cfg)
    state = read_checkpoint(ckpt)
    load_weights(model, state, ckpt)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Run(root, ckpt, cfg, model, state.get("global_step"))


def data_config(cfg: DictConfig, run_cfg: DictConfig) -> DictConfig:
    """The run's data config, or the chosen ``data=<option>``; non-null ``data.*`` keys override."""
    given = cfg.get("data") or OmegaConf.create({})
    if "_target_" in given:
        return given
    data = OmegaConf.create(OmegaConf.to_container(run_cfg.data, resolve=True))
    for key, value in given.items():
        if value is not None:
            data[key] = value
    return data


def open_data(cfg: DictConfig, run_cfg: DictConfig) -> Any:
    """The DataModule to evaluate on (the run's data unless ``data=`` says otherwise), set up."""
    datamodule = build_datamodule(data_config(cfg, run_cfg))
    with user_errors("data"):
        datamodule.prepare_data()
        datamodule.setup("fit")
    return datamodule


def weights_tag(path: Path | None) -> str | None:
    """A cache tag for a checkpoint file (path, size, mtime), or None."""
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


# ------------------------------------------------------------------------------------ resume
def resolve_ckpt_path(cfg: DictConfig, out_dir: Path) -> str | None:
    """The checkpoint ``fit`` starts from: ``ckpt_path`` (a file or ``last``); with ``resume``
    or ``auto_resume`` and no ``ckpt_path``, the run dir's last checkpoint when it exists. A
    damaged checkpoint is refused, naming the newest intact one in its folder."""
    last = RunDir(out_dir).last_checkpoint
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path is None and cfg.get("resume"):
        if not last.is_file():
            raise UserError(f"resume={cfg.resume}: nothing to resume, {last} does not exist")
        ckpt_path = "last"
    if ckpt_path is None and cfg.get("auto_resume") and last.is_file():
        ckpt_path = "last"
    if ckpt_path == "last":
        if not last.is_file():
            log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
            return None
        ckpt_path = str(last)
    if not ckpt_path:
        return None
    path = Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt_path={ckpt_path} does not exist")
    problem = checkpoint_problem(path, TRAINING_KEYS)
    if problem is not None:
        raise corrupt_checkpoint_error("ckpt_path", path, problem)
    return str(path)


_NOT_A_KEY = object()


def check_run_dir_overrides(argv: list[str]) -> None:
    """Before Hydra makes ``resume=``'s (or ``hydra.run.dir=``'s) path the output dir: refuse a
    file there, and a ``resume=`` path that does not exist (Hydra would create it)."""
    for item in argv:
        key, _, value = item.partition("=")
        if key not in ("resume", "hydra.run.dir") or not value:
            continue
        path = Path(value).expanduser()
        if path.is_file() and key == "resume":
            raise UserError(
                f"resume={value} is a file, not a run dir: give the run dir "
                f"(resume={RunDir.of_checkpoint(path).root}), or start a new run from that "
                f"checkpoint with ckpt_path={value}"
            )
        if path.is_file():
            raise UserError(f"hydra.run.dir={value} is a file: give a folder")
        if key == "resume" and not path.exists():
            raise UserError(
                f"resume={value} does not exist: give a run dir written by cpc_lightning.train"
            )


def resume_config(cfg: DictConfig) -> DictConfig:
    """``resume=<run dir>``: that run's saved config, with this command line's overrides on top.

    Hydra has already made ``<run dir>`` this job's output dir (``hydra.run.dir``). Each override
    ``key=value`` (a group choice like ``logger=wandb`` included) copies the freshly composed,
    resolved node at ``key``; overrides of global groups (``experiment=...``) are not applied.
    """
    run_dir = Path(str(cfg.resume))
    if not RunDir(run_dir).config_resolved.is_file():
        raise UserError(f"resume={run_dir}: no {RESOLVED_CONFIG} there (not a training run dir)")
    here = Path(HydraConfig.get().runtime.output_dir).resolve()
    base = load_run_config(run_dir)
    if Path(str(base.paths.output_dir)).resolve() != here:
        raise UserError(
            f"resume={run_dir}: the run was written in {base.paths.output_dir} (moved?); resume "
            "it with hydra.run.dir=<dir> ckpt_path=last and the original overrides"
        )
    for override in HydraConfig.get().overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in ("resume", "ckpt_path") or key.startswith("hydra"):
            continue
        node = OmegaConf.select(cfg, key, default=_NOT_A_KEY)
        if node is _NOT_A_KEY:
            log.warning("resume: override %r does not name a config key; not applied", override)
            continue
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        OmegaConf.update(base, key, value, merge=False, force_add=True)
    base.resume = str(run_dir)
    base.ckpt_path = cfg.get("ckpt_path")
    # `train` writes this config into .hydra/config.yaml once the run goes ahead
    log.info("resuming run dir %s with its saved config", run_dir)
    return base
