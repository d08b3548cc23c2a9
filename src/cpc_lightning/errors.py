"""User errors: one message naming the key, the value and the fix, and how entry points show it.

Entry points print a :class:`UserError` as one line (``cpc_lightning.<entry>: error: ...``) and
exit with code 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
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


_UNKNOWN_KEY = re.compile(r"Could not override '([^']+)'")


@contextlib.contextmanager
def composition_errors(entry: str, config_dir: Path, config_name: str, argv: list[str]):
    """Hydra's own errors while composing ``config_name`` (an unknown key, an option that is not
    there) as one line, exit code 2; an unknown key with its nearest keys (difflib over the
    composed config's keys). Hydra is made to raise them (``HYDRA_FULL_ERROR``) to catch them."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except ConfigCompositionException as exc:
        exit_with(entry, UserError(composition_message(exc, config_dir, config_name, argv)))
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def composition_message(
    exc: ConfigCompositionException, config_dir: Path, config_name: str, argv: list[str]
) -> str:
    """One line for a composition error; for an override of a key that does not exist, the
    nearest existing keys ("did you mean ...?")."""
    text = one_line(f"{exc}: {exc.__cause__}" if exc.__cause__ is not None else str(exc))
    found = _UNKNOWN_KEY.search(str(exc))
    if not found:
        return text
    key = found.group(1).lstrip("+~")
    overrides = [o for o in _overrides_of(argv) if o.split("=", 1)[0].lstrip("+~") != key]
    keys = config_keys(config_dir, config_name, overrides)
    if key in keys:  # the key exists: Hydra's own reason (a wrong type, ...)
        return text
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    value = next((o.split("=", 1)[1] for o in _overrides_of(argv) if o.startswith(key)), "...")
    hint = f"did you mean {' or '.join(close)}?" if close else "no key of it is close"
    return (
        f"{key} is not a key of the {config_name} config; {hint} (to add a new key: +{key}={value})"
    )


def _overrides_of(argv: list[str]) -> list[str]:
    from hydra._internal.utils import get_args_parser

    return list(get_args_parser().parse_known_args(argv)[0].overrides)


def config_keys(config_dir: Path, config_name: str, overrides: list[str]) -> list[str]:
    """Every dotted key of ``config_name`` composed with ``overrides`` (without them if they do
    not compose; none if it does not compose at all), Hydra's own keys included."""
    for attempt in (overrides, []):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
                cfg = compose(config_name, overrides=attempt, return_hydra_config=True)
            return _dotted(OmegaConf.to_container(cfg, resolve=False))
        except Exception:  # noqa: BLE001 - another mistake in the overrides: try without them
            continue
        finally:
            GlobalHydra.instance().clear()
    return []


def _dotted(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    out = []
    for k, v in node.items():
        out.append(f"{prefix}{k}")
        out += _dotted(v, f"{prefix}{k}.")
    return out


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
