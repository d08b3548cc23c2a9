"""Weights & Biases, offline-safe: one rule for "have credentials" in ``train`` and ``evaluate``.

Without an API key (``WANDB_API_KEY`` or a netrc entry for the W&B host) runs log offline, never
prompt, and print the ``wandb sync`` command. ``wandb`` is imported only when used.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from cpc_lightning.errors import UserError

log = logging.getLogger(__name__)

OFFLINE_MODES = ("offline", "dryrun")


def require_wandb() -> None:
    """A :class:`UserError` with the install command when wandb is missing."""
    if importlib.util.find_spec("wandb") is None:
        raise UserError("logger=wandb needs the wandb package: pip install 'cpc_lightning[wandb]'")


def have_credentials() -> bool:
    """``WANDB_API_KEY`` is set, or ``~/.netrc`` (``$NETRC``) has an entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host.split("/")[0]) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def choose_mode(requested: str | None = None) -> str:
    """``online`` or ``offline``: ``requested`` (or ``WANDB_MODE``) if given, else online only
    with credentials."""
    mode = requested if requested not in (None, "auto") else os.environ.get("WANDB_MODE")
    if mode:
        return "offline" if mode in OFFLINE_MODES else str(mode)
    return "online" if have_credentials() else "offline"


def logger_kwargs(
    cfg: DictConfig, node: DictConfig, out_dir: Path, resuming: bool, group: str | None
) -> dict[str, Any]:
    """``WandbLogger`` keyword arguments: offline without credentials, the multirun ``group``,
    the same run id when resuming online."""
    require_wandb()
    mode = "offline" if node.get("offline") else choose_mode()
    if mode == "offline":
        if not node.get("offline") and not os.environ.get("WANDB_MODE"):
            log.info("W&B: no API key or netrc entry found, logging offline")
        os.environ["WANDB_MODE"] = "offline"
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")
    kwargs: dict[str, Any] = {"config": OmegaConf.to_container(cfg, resolve=True)}
    if node.get("group") is None and group is not None:
        kwargs["group"] = group
    # Online, a resumed run continues the same W&B run. (Offline, wandb 0.31 records nothing
    # for a run given both an id and resume: each process gets its own offline run.)
    if node.get("id") is None and mode != "offline":
        import wandb

        id_file = out_dir / "wandb_run_id.txt"
        if resuming and id_file.is_file():
            kwargs["id"] = id_file.read_text().strip()
        else:
            kwargs["id"] = wandb.util.generate_id()
            if rank_zero_only.rank == 0:
                id_file.write_text(kwargs["id"] + "\n")
        kwargs["resume"] = "allow"
    return kwargs


def finish() -> None:
    """Close the W&B run if this process started one; say how to sync an offline run."""
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    offline = bool(getattr(run.settings, "_offline", False)) or (
        os.environ.get("WANDB_MODE") in OFFLINE_MODES
    )
    run_dir = Path(run.dir).parent
    wandb.finish()
    if offline:
        print(f"W&B run logged offline in {run_dir}; upload it later with: wandb sync {run_dir}")


def log_report(run_cfg: DictConfig, report: dict[str, Any], out: Path, requested: str) -> None:
    """Log an evaluation report to W&B when the run used it (``requested``: the ``wandb``
    setting of ``evaluate``: auto | offline | online | disabled). Never fatal."""
    if requested == "disabled" or "wandb" not in (run_cfg.get("logger") or {}):
        return
    if importlib.util.find_spec("wandb") is None:
        log.info("the run used W&B but wandb is not installed: not logged there")
        return
    import wandb

    wcfg = run_cfg.logger.wandb
    try:
        run = wandb.init(
            project=wcfg.get("project"),
            entity=wcfg.get("entity"),
            group=wcfg.get("group"),
            job_type="evaluate",
            dir=str(out),
            mode=choose_mode(requested),
            config={"task": report["task"], "run_dir": report["run_dir"]},
        )
        try:
            run.log({f"eval/{report['task']}/{k}": v for k, v in report_metrics(report).items()})
            run.summary["eval_table"] = report["table"]
        finally:
            wandb.finish()
    except Exception as exc:  # noqa: BLE001 - logging must not fail the evaluation
        log.warning("W&B logging failed (%s); the report is in %s", exc, out)


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """``<source>_<figure>`` per feature source of an evaluation report (accuracy, ABX
    within/across error, PER)."""
    names = {"accuracy": "acc", "within": "abx_within", "across": "abx_across", "per": "per"}
    return {
        f"{name}_{short}": float(src[key])
        for name, src in report["sources"].items()
        for key, short in names.items()
        if src.get(key) is not None
    }
