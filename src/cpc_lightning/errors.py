"""User errors and the start-up checks: one message naming the key, the value and the fix.

Entry points print a :class:`UserError` as one line (``cpc_lightning.<entry>: error: ...``) and
exit with code 2; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

from hydra.errors import InstantiationException
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
    from hydra.errors import OverrideParseException

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_config(cfg: DictConfig) -> None:
    """Fail early, with the offending key and value, on model values that cannot work."""
    k = cfg.model.prediction_steps
    if not _is_int(k) or k < 1:
        raise UserError(f"model.prediction_steps={k!r} must be an integer >= 1 (paper audio: 12)")
    off = cfg.model.get("step_offset", 0)
    if not _is_int(off) or off < 0:
        raise UserError(f"model.step_offset={off!r} must be an integer >= 0")
    n = cfg.negatives.num_negatives
    if not _is_int(n) or n < 1:
        raise UserError(f"negatives.num_negatives={n!r} must be an integer >= 1 (paper: 128)")


def check_data_fits_model(model: Any, datamodule: Any) -> None:
    """Same modality; audio windows long enough for the encoder and K; image grids tall enough
    for K; speakers present where the negatives need them."""
    data, enc = datamodule.modality, model.modality
    if data != enc:
        raise UserError(
            f"encoder {type(model.encoder).__name__} reads {enc} but data "
            f"{type(datamodule).__name__} is {data}: pick an {data} encoder "
            f"({'encoder=conv1d' if data == 'audio' else 'encoder=resnet'}) or other data"
        )
    need = model.steps[-1] + 1
    if data == "audio":
        _check_window(model, datamodule, need)
    else:
        rows = int(datamodule.grid_size)
        if rows < need:
            raise UserError(
                f"model.prediction_steps={model.prediction_steps} with model.step_offset="
                f"{model.step_offset} predicts {model.steps[-1]} rows ahead, but the patch grid "
                f"has {rows} rows: lower model.prediction_steps to at most "
                f"{rows - 1 - model.step_offset} or make the grid larger (data.image_size, "
                "data.patch_size, data.stride)"
            )
    if model.negatives.needs_speakers and not datamodule.provides_speakers:
        raise UserError(
            f"negatives={model.negatives.mode} needs speaker ids per sequence, but "
            f"{type(datamodule).__name__} provides none: use data=librispeech or "
            "data=synthetic_speech, or give data.pattern a (?P<speaker>...) group"
        )
    _check_batches_hold_negatives(model.negatives, datamodule)


def _check_batches_hold_negatives(negatives: Any, datamodule: Any) -> None:
    """Modes that exclude the anchor's own sequence need other sequences in every batch."""
    if not negatives.exclude_own:
        return
    if negatives.group_by == "speaker":
        sampler = getattr(datamodule, "sampler_name", None)
        q = getattr(datamodule, "windows_per_speaker", None)
        if sampler != "speaker_groups" or not _is_int(q) or q < 2:
            got = f"data.sampler={sampler}" + (
                f" with data.windows_per_speaker={q}" if sampler == "speaker_groups" else ""
            )
            raise UserError(
                f"negatives={negatives.mode} draws each anchor's negatives from the other "
                f"sequences of its speaker in the batch, but {got} does not put two sequences of "
                "every speaker in each batch: use data.sampler=speaker_groups "
                "data.windows_per_speaker=2 (or more), or negatives=same_speaker"
            )
    elif int(datamodule.batch_size) < 2:
        raise UserError(
            f"negatives={negatives.mode} draws from the other sequences of the batch, but "
            f"data.batch_size={datamodule.batch_size}: use data.batch_size >= 2"
        )


def _check_window(model: Any, datamodule: Any, need: int) -> None:
    encoder, window = model.encoder, int(datamodule.window)
    if not hasattr(encoder, "num_frames"):
        return
    field = encoder.receptive_field
    frames = encoder.num_frames(window)
    if window < field or frames < need:
        raise UserError(
            f"data.window={window} samples is too short: the encoder's receptive field is "
            f"{field} samples and predicting {model.steps[-1]} steps ahead needs at least "
            f"{need} frames ({need * encoder.downsampling} samples); "
            f"got {frames} frames. Raise data.window or lower model.prediction_steps"
        )
    max_len, anchors = getattr(model.heads, "max_len", None), frames - model.steps[-1]
    if max_len is not None and anchors > max_len:
        raise UserError(
            f"data.window={window} samples gives {anchors} anchors per sequence, but the "
            f"prediction heads learned relative positions for heads.max_len={max_len}: raise "
            "heads.max_len or lower data.window"
        )


# ------------------------------------------------------------------------ training start-up
#: trainer keys that must be integers: key -> (smallest value, what to write instead)
_TRAINER_INTS = {
    "max_steps": (-1, "trainer.max_steps=400 (-1: no step limit)"),
    "max_epochs": (-1, "trainer.max_epochs=10 (-1: no epoch limit)"),
    "log_every_n_steps": (1, "trainer.log_every_n_steps=10"),
    "accumulate_grad_batches": (1, "trainer.accumulate_grad_batches=1"),
    "num_sanity_val_steps": (-1, "trainer.num_sanity_val_steps=0"),
    "num_nodes": (1, "trainer.num_nodes=1"),
}
#: trainer keys that take a fraction in [0, 1] or a count of batches (or null)
_TRAINER_AMOUNTS = ("limit_train_batches", "limit_val_batches", "overfit_batches")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_trainer(trainer: DictConfig) -> None:
    for key, (low, example) in _TRAINER_INTS.items():
        value = trainer.get(key)
        if value is None and key == "max_epochs":
            continue
        if key in trainer and not (_is_int(value) and value >= low):
            raise UserError(f"trainer.{key}={value!r} must be an integer >= {low}, e.g. {example}")
    for key in _TRAINER_AMOUNTS:
        value = trainer.get(key)
        ok = (
            value is None
            or (_is_int(value) and value >= 0)
            or (_is_number(value) and 0 <= value <= 1)
        )
        if not ok:
            raise UserError(
                f"trainer.{key}={value!r} must be a fraction in [0, 1], a number of batches or "
                f"null (all), e.g. trainer.{key}=1.0"
            )
    interval = trainer.get("val_check_interval")
    counts = _is_int(interval) and interval >= 1
    fraction = _is_number(interval) and not _is_int(interval) and 0 < interval <= 1
    timed = isinstance(interval, (str, DictConfig, dict))  # wall-clock ("00:00:30:00", {...})
    if not (interval is None or counts or fraction or timed):
        raise UserError(
            f"trainer.val_check_interval={interval!r} must be a number of training steps >= 1, a "
            "fraction of an epoch in (0, 1], a duration or null, e.g. "
            "trainer.val_check_interval=100"
        )
    clip = trainer.get("gradient_clip_val")
    if not (clip is None or (_is_number(clip) and clip >= 0)):
        raise UserError(
            f"trainer.gradient_clip_val={clip!r} must be a number >= 0 or null (no clipping), "
            "e.g. trainer.gradient_clip_val=1.0"
        )


def _check_optimizer(model: DictConfig) -> None:
    import torch
    from hydra.utils import instantiate

    opt = model.get("optimizer")
    if not opt:
        return
    lr = opt.get("lr")
    if "lr" in opt and not (_is_number(lr) and lr > 0):
        raise UserError(
            f"model.optimizer.lr={lr!r} must be a positive number (the CPC default is 2e-4)"
        )
    with user_errors("model.optimizer"):  # the optimizer's own checks (betas, eps, ...)
        optimizer = instantiate(opt)([torch.nn.Parameter(torch.zeros(1))])
    if model.get("scheduler"):
        with user_errors("model.scheduler"):
            instantiate(model.scheduler)(optimizer, total_steps=1)


def check_training(cfg: DictConfig) -> None:
    """Fail at start-up, naming key, value and fix, on trainer and optimizer values that would
    otherwise fail (or misbehave) only once training runs."""
    check_required(cfg)
    threads = cfg.get("torch_threads")
    if not (threads is None or (_is_int(threads) and threads >= 1)):
        raise UserError(f"torch_threads={threads!r} must be an integer >= 1 or null, e.g. 1")
    if cfg.get("trainer"):
        _check_trainer(cfg.trainer)
    if cfg.get("model"):
        _check_optimizer(cfg.model)
