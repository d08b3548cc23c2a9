"""Running again into a run dir that already holds a run: reuse, resume or refuse, never
overwrite.

A run dir's resolved config (:attr:`RunDir.config_resolved`) says what was trained there. "The
same config" is that file equal to the config of this command, apart from :data:`IGNORED` keys
(how to resume, where the cache is, the progress bar). Paths come from :class:`RunDir`.

- A sweep point (multirun) whose dir holds the result file for the same config is *reused*: its
  result is returned without training, and :attr:`RunDir.reused` tells the sweep summary.
- A sweep point with the same config and a last checkpoint but no result (killed) *resumes*
  from it.
- A single run, or a point whose dir holds another config, is refused when the dir has
  checkpoints or a result: one message naming the dir, the first differing key and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cpc_lightning.errors import UserError
from cpc_lightning.run_dir import RunDir, write_json
from cpc_lightning.runs import load_run_config, newest_intact_checkpoint

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


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_difference(saved: DictConfig, current: DictConfig) -> str | None:
    """The first key (sorted) whose value differs, as ``key: saved -> current``; None if equal."""

    def plain(cfg: DictConfig) -> dict[str, Any]:
        # through YAML, as the resolved config was written, so both sides have the same types
        text = OmegaConf.to_yaml(cfg, resolve=True)
        flat = _flat(OmegaConf.to_container(OmegaConf.create(text), resolve=False))
        return {k: v for k, v in flat.items() if not k.startswith(IGNORED)}

    a, b = plain(saved), plain(current)
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            return f"{key}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}"
    return None


def refuse_to_overwrite(out_dir: Path) -> None:
    """A fresh (not resumed) run must not write into a dir that holds another run's work."""
    held = RunDir(out_dir).holds_a_run()
    if held is not None:
        raise UserError(
            f"hydra.run.dir={out_dir} already holds a run ({held}); nothing was changed: continue "
            "it with ckpt_path=last (or resume=<that dir>), or choose another hydra.run.dir"
        )


def prepare_point(cfg: DictConfig, out_dir: Path) -> dict[str, Any] | None:
    """Decide what a sweep point does with its dir (see the module docstring).

    Returns the saved result of a reused point (nothing to train), else None, having set
    ``cfg.ckpt_path = "last"`` when the point resumes."""
    run = RunDir(out_dir)
    if run.failed.is_file():  # a retry: keep the old error beside it, not in the summary's way
        run.failed.replace(run.failed_previous)
    if run.holds_a_run() is None or not run.config_resolved.is_file():
        run.reused.unlink(missing_ok=True)
        return None
    diff = config_difference(load_run_config(out_dir), cfg)  # older releases' names upgraded
    if diff is not None:
        raise UserError(
            f"sweep point dir {out_dir} holds a run of another config ({diff}); nothing was "
            "changed: use a new hydra.sweep.dir, or delete that dir to retrain the point"
        )
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
    return None
