"""Running again into a run dir that already holds a run: reuse, resume or refuse, never
overwrite.

A run dir's resolved config (:attr:`RunDir.config_resolved`) says what was trained there. "The
same config" is that file equal to the config of this command, apart from :data:`IGNORED` keys
(how to resume, where the cache is, the progress bar). Paths come from :class:`RunDir`.

- A sweep point (multirun) whose dir holds the result file for the same config is *reused*: its
  result is returned without training, and :attr:`RunDir.reused` tells the sweep summary.
- A sweep point with the same config and a last checkpoint but no result (killed) *resumes*
  from it.
- A single run, or a point whose dir holds another config, is refused when the dir holds a run
  (:meth:`RunDir.holds_a_run`: checkpoints, a result or metrics rows): one message naming the
  dir, the first differing key and the fix (:class:`RunDirRefused`; nothing in the dir is
  touched, not even a sweep point's ``failed.txt``). A point of the same config killed before its
  first checkpoint trains again from step 0.
- A run that starts from a checkpoint is checked first (:func:`check_start`): the checkpoint's
  weights must fit the model of this config (else one message naming the parameter and the
  override that changed it), and a run that already reached ``trainer.max_steps`` has nothing to
  train (:class:`AlreadyFinished`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cpc_lightning.errors import UserError
from cpc_lightning.run_dir import RunDir, write_json
from cpc_lightning.runs import load_run_config, newest_intact_checkpoint
from cpc_lightning.training.checkpoint_files import checkpoint_global_step, load_checkpoint

log = logging.getLogger("cpc_lightning.train")

#: Keys that do not change what a run computes.
IGNORED = (
    "ckpt_path",
    "resume",
    "auto_resume",
    "paths.cache_dir",
    "data.cache_dir",
    "trainer.enable_progress_bar",
)
#: Config groups that decide the model's parameters (what a checkpoint must fit).
MODEL_KEYS = ("encoder.", "context.", "heads.", "model.", "negatives.", "data.modality")


class RunDirRefused(UserError):
    """The dir holds a run this command must not write over; nothing in it was changed."""


class AlreadyFinished(Exception):
    """The checkpoint to resume from already reached ``trainer.max_steps``: nothing to train."""


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_difference(
    saved: DictConfig, current: DictConfig, only: tuple[str, ...] = ()
) -> str | None:
    """The first key (sorted; among those starting with one of ``only`` if given) whose value
    differs, as ``key: saved -> current``; None if equal."""

    def plain(cfg: DictConfig) -> dict[str, Any]:
        # through YAML, as the resolved config was written, so both sides have the same types
        text = OmegaConf.to_yaml(cfg, resolve=True)
        flat = _flat(OmegaConf.to_container(OmegaConf.create(text), resolve=False))
        return {k: v for k, v in flat.items() if not k.startswith(IGNORED)}

    a, b = plain(saved), plain(current)
    for key in sorted(k for k in set(a) | set(b) if not only or k.startswith(only)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            return f"{key}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}"
    return None


def refuse_to_overwrite(out_dir: Path) -> None:
    """A fresh (not resumed) run must not write into a dir that holds another run's work."""
    held = RunDir(out_dir).holds_a_run()
    if held is not None:
        raise RunDirRefused(
            f"hydra.run.dir={out_dir} already holds a run ({held}); nothing was changed: continue "
            "it with ckpt_path=last (or resume=<that dir>), or choose another hydra.run.dir"
        )


def prepare_point(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """Decide what a sweep point does with its dir (see the module docstring).

    Returns the saved result of a reused point (nothing to train), else None, having set
    ``cfg.ckpt_path = "last"`` when the point resumes. Refuses before it changes anything."""
    run = RunDir(out_dir)
    held = run.holds_a_run()
    if held is not None and not run.config_resolved.is_file():
        refuse_to_overwrite(out_dir)
    if held is not None:
        diff = config_difference(load_run_config(out_dir), cfg)  # older releases' names upgraded
        if diff is not None:
            raise RunDirRefused(
                f"sweep point dir {out_dir} holds a run of another config ({diff}); nothing was "
                "changed: use a new hydra.sweep.dir, or delete that dir to retrain the point"
            )
    if run.failed.is_file():  # a retry: keep the old error beside it, not in the summary's way
        run.failed.replace(run.failed_previous)
    data = run.read_result()
    if data is not None:
        write_json(run.reused, {"global_step": data.get("global_step")}, indent=None)
        log.info(
            "sweep point %s: finished before with this config; reusing %s", out_dir, run.result
        )
        return data
    run.reused.unlink(missing_ok=True)
    if run.last_checkpoint.is_file():
        cfg.ckpt_path = "last"
    elif (found := newest_intact_checkpoint(run.checkpoints)) is not None:
        cfg.ckpt_path = str(found[0])  # killed between its first step file and the last one
    if cfg.get("ckpt_path"):
        log.info("sweep point %s: unfinished; resuming from %s", out_dir, cfg.ckpt_path)
    elif held is not None:
        log.info("sweep point %s: killed before its first checkpoint; training it again", out_dir)
    return None


def check_start(cfg: DictConfig, model: Any, ckpt_path: str | None, key: str) -> int | None:
    """Before anything is written: the global step of the checkpoint to start from (None for a
    fresh run); :class:`UserError` if its weights do not fit ``model``; :class:`AlreadyFinished`
    if it already reached ``trainer.max_steps``. ``key``: the override that chose it."""
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    misfit = weights_misfit(model.state_dict(), load_checkpoint(path, mmap=True)["state_dict"])
    if misfit is not None:
        saved = RunDir.of_checkpoint(path).config_resolved
        diff = None
        if saved.is_file():
            diff = config_difference(load_run_config(saved.parent), cfg, only=MODEL_KEYS)
        cause = f"; this config changes {diff}" if diff else ""
        raise UserError(
            f"{key}: the checkpoint {path} does not fit the model of this config ({misfit}"
            f"{cause}); nothing was changed: resume without the overrides that change the model, "
            "or train that model as a new run in another hydra.run.dir"
        )
    step = checkpoint_global_step(path)
    max_steps = int(cfg.trainer.get("max_steps") or -1)
    if step is not None and 0 < max_steps <= step:
        raise AlreadyFinished(
            f"{key}: the run already reached trainer.max_steps={max_steps} ({path} is at step "
            f"{step}); nothing to train, nothing was changed: raise trainer.max_steps to train on"
        )
    return step


def weights_misfit(model: dict[str, Any], saved: dict[str, Any]) -> str | None:
    """The first difference between a model's and a checkpoint's ``state_dict`` (a parameter
    only one has, or two shapes), or None when the checkpoint loads into the model."""
    for name, tensor in saved.items():
        if name not in model:
            return f"the checkpoint has {name}, the model has not"
        if tuple(tensor.shape) != tuple(model[name].shape):
            return (
                f"{name} is {list(tensor.shape)} in the checkpoint, "
                f"{list(model[name].shape)} in the model"
            )
    missing = next((name for name in model if name not in saved), None)
    return None if missing is None else f"the model has {missing}, the checkpoint has not"
