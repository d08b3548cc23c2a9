"""User errors: one message naming the key, the value and the fix, and how entry points show it.

Entry points print a :class:`UserError` as one line (``cpc_lightning.<entry>: error: ...``) and
exit with code 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import NoReturn

from hydra.errors import InstantiationException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue


class UserError(Exception):
    """A mistake in the configuration or the input data, reported as one message."""


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@contextlib.contextmanager
def user_errors(where: str) -> Iterator[None]:
    """Turn configuration/data errors raised while building ``where`` into :class:`UserError`."""
    try:
        yield
    except UserError:
        raise
    except InstantiationException as exc:
        cause = _root_cause(exc)
        if isinstance(cause, (ValueError, FileNotFoundError, NotADirectoryError, KeyError)):
            raise UserError(f"{where}: {cause}") from exc
        raise UserError(f"{where}: {exc}") from exc
    except MissingMandatoryValue as exc:
        raise UserError(_missing_message(str(exc.full_key))) from exc
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        raise UserError(f"{where}: {exc}") from exc


_WORKER_ERROR = re.compile(r"^cpc_lightning\.[\w.]+\.(?:UserError|TrainingDiverged): (.+)$", re.M)


def user_error_from_worker(exc: BaseException) -> UserError | None:
    """A :class:`UserError` raised in a spawned worker (``strategy=ddp_spawn``) reaches the parent
    as the worker's traceback text: the same error again (None if it was something else)."""
    if type(exc).__name__ != "ProcessRaisedException":
        return None
    found = _WORKER_ERROR.findall(str(exc))
    return UserError(found[-1]) if found else None


def one_line(text: str) -> str:
    """``text`` with its line breaks joined by ``; `` (an error is always one line)."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def exit_with(entry: str, exc: UserError) -> NoReturn:
    """Print ``exc`` as the one-line error of ``entry`` and exit with code 2."""
    print(f"{entry}: error: {one_line(str(exc))}", file=sys.stderr)
    sys.exit(2)


def check_overrides(entry: str, argv: list[str]) -> None:
    """Exit with one line (code 2) if Hydra cannot parse an override of the command line
    (typically a regex with brackets that was not quoted); otherwise do nothing."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = get_args_parser().parse_known_args(argv)[0].overrides
    except SystemExit:  # argparse already said what is wrong with the flags
        raise
    parser = OverridesParser.create()
    for item in overrides:
        try:
            parser.parse_overrides([item])
        except OverrideParseException as err:
            key = item.split("=", 1)[0]
            value = item.split("=", 1)[1] if "=" in item else ""
            exit_with(
                entry,
                UserError(
                    f"cannot read the override {item!r} ({one_line(str(err.message))}); quote a "
                    f"value with brackets, spaces or quotes: {key}='{value}' (in bash: "
                    f"\"{key}='{value}'\")"
                ),
            )


def _missing_message(key: str) -> str:
    if key.endswith("root"):
        return (
            f"{key} is required and not set: give it on the command line, {key}=/path/to/dataset "
            "(the fsdd, speech_commands and cifar10_patches presets look under data_dir, "
            "$CPC_DATA_DIR or ./data)"
        )
    return (
        f"{key} is required and not set (??? in its YAML): give it on the command line, {key}=..."
    )


def check_required(cfg: DictConfig, optional: tuple[str, ...] = ("resume",)) -> None:
    """Every mandatory (``???``) key except ``optional`` ones has a value."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k not in optional)
    if missing:
        raise UserError(_missing_message(missing[0]))
