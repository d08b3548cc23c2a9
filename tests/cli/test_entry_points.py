"""The five entry points share one wrapper (``cpc_lightning/cli.py``): an override Hydra cannot
parse is one line and exit code 2 in each, a :class:`UserError` of the body too, and the body's
value is the job's (what a sweeper optimises)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from helpers import REPO, cli_env
from omegaconf import OmegaConf

from cpc_lightning.cli import entry_point
from cpc_lightning.errors import UserError

#: Module -> the prefix of its one-line errors.
ENTRIES = {
    "cpc_lightning.train": "cpc_lightning",
    "cpc_lightning.evaluate": "cpc_lightning.evaluate",
    "cpc_lightning.extract": "cpc_lightning.extract",
    "cpc_lightning.prepare": "cpc_lightning.prepare",
    "cpc_lightning.convert": "cpc_lightning.convert",
    "cpc_lightning.export": "cpc_lightning.export",
    "cpc_lightning.quantize": "cpc_lightning.quantize",
}
BAD = "data.test_pattern=[ab"


def _is_the_unparsable_override_line(line: str, prefix: str) -> bool:
    return line.startswith(f"{prefix}: error: cannot read the override '{BAD}'") and "quote" in line


@pytest.mark.parametrize("module", sorted(ENTRIES))
def test_each_main_is_the_wrapper(module, monkeypatch, capsys):
    main = importlib.import_module(module).main
    assert main.entry_name == ENTRIES[module]
    monkeypatch.setattr(sys, "argv", [module, BAD])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and _is_the_unparsable_override_line(lines[0], ENTRIES[module]), lines


@pytest.mark.slow  # five interpreter starts; the in-process test above runs by default
def test_python_m_of_each_entry_is_one_line():
    """``python -m cpc_lightning.<entry>`` (all five at once: each start imports torch)."""
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, BAD],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in ENTRIES
    }
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, err[-2000:]
        assert len(lines) == 1 and _is_the_unparsable_override_line(lines[0], ENTRIES[module])


def test_the_body_value_and_its_user_error(capsys):
    @entry_point("toy", "train")
    def main(cfg):
        if cfg.get("fail"):
            raise UserError("fail=true: a mistake\nover two lines")
        return 0.25

    assert main(OmegaConf.create({})) == 0.25
    with pytest.raises(SystemExit) as exit_:
        main(OmegaConf.create({"fail": True}))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "toy: error: fail=true: a mistake; over two lines"
    ]
