"""The one wrapper of the seven entry points (``train``, ``evaluate``, ``extract``, ``prepare``,
``convert``, ``export``, ``quantize``): the same command-line contract for each.

:func:`entry_point` turns a function of the composed config into the module's ``main``: it
refuses an override Hydra cannot parse with one line before Hydra reads the command line
(:func:`~cpc_lightning.errors.check_overrides`), composes ``conf/<config_name>.yaml`` with
``@hydra.main`` (a key that is not in it, or an option that is not there, is one line naming
the nearest keys: :func:`~cpc_lightning.errors.composition_errors`) and prints a
:class:`~cpc_lightning.errors.UserError` raised by the body as one line ``<name>: error: ...``,
exit code 2. The body's return value is the job's (the metric a
sweeper optimises).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hydra
from omegaconf import DictConfig

from cpc_lightning.errors import UserError, check_overrides, composition_errors, exit_with

T = TypeVar("T")


def entry_point(
    name: str, config_name: str, check_argv: Callable[[list[str]], None] | None = None
) -> Callable[[Callable[[DictConfig], T]], Callable[..., T | None]]:
    """Decorate ``body(cfg)`` into an entry point's ``main`` (``name``: the prefix of its error
    line, ``config_name``: its config in ``conf/``; ``check_argv``: checks of the command line
    that must run before Hydra acts on it, raising :class:`UserError`).

    ``main()`` reads ``sys.argv`` like any ``@hydra.main`` function; ``main(cfg)`` runs the body
    on a composed config (no command line), with the same error handling.
    """

    def decorate(body: Callable[[DictConfig], T]) -> Callable[..., T | None]:
        # `wraps` keeps the body's module and name: Hydra finds conf/ and names the job (the
        # run dir's `<job name>.log`) by the module that defines the body.
        @hydra.main(config_path="conf", config_name=config_name, version_base="1.3")
        @functools.wraps(body)
        def job(cfg: DictConfig) -> T:
            try:
                return body(cfg)
            except UserError as exc:
                exit_with(name, exc)

        @functools.wraps(body)
        def main(cfg: DictConfig | None = None) -> T | None:
            if cfg is not None:
                return job(cfg)
            check_overrides(name, sys.argv[1:])
            if check_argv is not None:
                try:
                    check_argv(sys.argv[1:])
                except UserError as exc:
                    exit_with(name, exc)
            conf = Path(inspect.getfile(body)).parent / "conf"
            with composition_errors(name, conf, config_name, sys.argv[1:]):
                return job()

        main.entry_name = name  # type: ignore[attr-defined]
        return main

    return decorate
