"""The one wrapper of the five entry points (``train``, ``evaluate``, ``extract``, ``prepare``,
``convert``): the same command-line contract for each.

:func:`entry_point` turns a function of the composed config into the module's ``main``: it
refuses an override Hydra cannot parse with one line before Hydra reads the command line
(:func:`~cpc_lightning.errors.check_overrides`), composes ``conf/<config_name>.yaml`` with
``@hydra.main`` and prints a :class:`~cpc_lightning.errors.UserError` raised by the body as one
line ``<name>: error: ...``, exit code 2. The body's return value is the job's (the metric a
sweeper optimises).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import hydra
from omegaconf import DictConfig

from cpc_lightning.errors import UserError, check_overrides, exit_with

T = TypeVar("T")


def entry_point(
    name: str, config_name: str
) -> Callable[[Callable[[DictConfig], T]], Callable[..., T | None]]:
    """Decorate ``body(cfg)`` into an entry point's ``main`` (``name``: the prefix of its error
    line, ``config_name``: its config in ``conf/``).

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
            return job()

        main.entry_name = name  # type: ignore[attr-defined]
        return main

    return decorate
