"""Hydra's files in a run dir (``.hydra/*`` and ``<job name>.log``), written only once the run
is known to go ahead.

Hydra itself would write ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml`` and open the
job's log file in the output dir *before* the job runs, so a refused run (a dir holding another
run, a model that does not fit the checkpoint, a finished run) would still rewrite them. So
``train`` sets ``hydra.output_subdir: null`` and logs to the console only
(``conf/hydra/default.yaml``, ``conf/train.yaml``), and :func:`record_job` writes the same files
(each atomically) after every check passed; :func:`job_log` is the log file for the run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cpc_lightning.run_dir import RunDir, write_text

#: Hydra's file log format (``hydra/job_logging/default.yaml``).
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def record_job(cfg: DictConfig, out_dir: Path) -> None:
    """Write ``.hydra/config.yaml`` (the config this run trains with), ``hydra.yaml`` and
    ``overrides.yaml`` (this command line's) as Hydra would; nothing outside a Hydra job."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    run = RunDir(out_dir)
    run.hydra_dir.mkdir(parents=True, exist_ok=True)
    write_text(run.hydra_config, OmegaConf.to_yaml(cfg))
    write_text(run.hydra_dir / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    write_text(run.hydra_overrides, OmegaConf.to_yaml(hydra_cfg.overrides.task))


@contextlib.contextmanager
def job_log(out_dir: Path) -> Iterator[None]:
    """Append this process's log records to ``<out_dir>/<job name>.log`` while in the block."""
    name = HydraConfig.get().job.name if HydraConfig.initialized() else "train"
    handler = logging.FileHandler(Path(out_dir) / f"{name}.log", mode="a")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
