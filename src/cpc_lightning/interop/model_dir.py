"""A model folder that travels without its run dir: ``config.json`` + ``model.safetensors`` +
``README.md`` (the layout of huggingface_hub's ``PyTorchModelHubMixin``, so a hub upload takes it
as it is; nothing here talks to a hub).

- ``config.json``: the resolved config groups that rebuild the model and its input (``encoder``,
  ``context``, ``heads``, ``negatives``, ``model``, ``data``: sample rate, image preprocessing),
  ``cpc_lightning`` (this format's name and version, the package version, the modality) and
  ``provenance`` (git commit, data, steps, probe scores: what the run's result file says);
- ``model.safetensors``: the ``CPCModule`` state dict (every tensor, heads included);
- ``README.md``: a model card with the run's evaluation tables.

:func:`read_model_dir` rebuilds the model (``cpc_lightning.load`` calls it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cpc_lightning.build import build_model
from cpc_lightning.errors import UserError
from cpc_lightning.model.module import CPCModule

try:  # the optional extra `export`
    import safetensors.torch as safetensors_torch
except ImportError:  # pragma: no cover - exercised only without the extra
    safetensors_torch = None

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
#: The files of a model folder (what ``export`` writes and may replace).
FILES = (CONFIG, WEIGHTS, CARD)
#: The config groups a model folder keeps: they rebuild the model and its preprocessing.
GROUPS = ("encoder", "context", "heads", "negatives", "model", "data")
FORMAT, VERSION = "cpc_lightning.model_dir", 1
#: What to install when safetensors is missing.
INSTALL = "pip install 'cpc_lightning[export]' (safetensors)"


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` is a model folder (``config.json`` beside ``model.safetensors``)."""
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def _safetensors(what: str) -> Any:
    if safetensors_torch is None:
        raise UserError(f"{what} needs safetensors, which is not installed: {INSTALL}")
    return safetensors_torch


def model_config(cfg: DictConfig, modality: str, package: str | None) -> dict[str, Any]:
    """``config.json`` without its provenance: the run's groups, resolved, and the format."""
    out: dict[str, Any] = {
        "cpc_lightning": {"format": FORMAT, "version": VERSION, "modality": modality},
    }
    if package:
        out["cpc_lightning"]["package"] = package
    for group in GROUPS:
        if cfg.get(group) is not None:
            out[group] = OmegaConf.to_container(cfg[group], resolve=True)
    return out


def write_model_dir(
    folder: Path, model: CPCModule, config: dict[str, Any], card: str
) -> list[Path]:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` (``card``) into
    ``folder``; return their paths."""
    save = _safetensors("to=safetensors").save_file
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (folder / CARD).write_text(card)
    return [folder / name for name in FILES]


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as err:
        why = f"cpc_lightning.load: {path / CONFIG} is not readable JSON ({err})"
        raise UserError(why) from err
    meta = config.get("cpc_lightning") if isinstance(config, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(
            f"cpc_lightning.load: {path / CONFIG} is not a cpc_lightning model config (no "
            f"'cpc_lightning.format': {FORMAT}): give a folder written by "
            "python -m cpc_lightning.export to=safetensors"
        )
    if int(meta.get("version", 0)) > VERSION:
        raise UserError(
            f"cpc_lightning.load: {path} is model folder version {meta['version']}; this "
            f"release reads version {VERSION}: upgrade cpc_lightning"
        )
    return config


def read_model_dir(path: Path) -> tuple[DictConfig, CPCModule]:
    """The config groups and the model (eval mode) of a model folder."""
    config = _read_config(path)
    cfg = OmegaConf.create({k: config[k] for k in GROUPS if k in config})
    model = build_model(cfg)
    load = _safetensors(f"cpc_lightning.load({path})").load_file
    try:
        state = load(str(path / WEIGHTS))
    except Exception as err:  # noqa: BLE001 - any failure to read is a damaged file
        raise UserError(f"cpc_lightning.load: {path / WEIGHTS} cannot be read ({err})") from err
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(
            f"cpc_lightning.load: {path / WEIGHTS} does not fit the model {CONFIG} describes "
            f"({first}): the two files come from different exports"
        ) from err
    return cfg, model.eval()


def _target(node: Any) -> str:
    return str((node or {}).get("_target_", "-")).rsplit(".", 1)[-1]


def _summary(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """The card's first table: what the model is and where it comes from."""
    meta, prov = config["cpc_lightning"], config.get("provenance", {})
    enc, ctx, heads = config.get("encoder", {}), config.get("context", {}), config.get("heads", {})
    rows = [
        ("modality", meta["modality"]),
        ("encoder", f"{_target(enc)} (out_dim {enc.get('out_dim', '-')}, norm "
                    f"{enc.get('norm', '-')})"),
        ("context", f"{_target(ctx)} (out_dim {ctx.get('out_dim', '-')}, "
                    f"{ctx.get('num_layers', '-')} layers)"),
        ("heads", f"{_target(heads)}, K = {config.get('model', {}).get('prediction_steps')}"),
        ("data", prov.get("data", "-")),
        ("steps", prov.get("global_step", "-")),
        ("code", f"cpc_lightning {meta.get('package') or '-'}, git {prov.get('git_commit')}"),
    ]  # fmt: skip
    return [(key, "-" if value is None else value) for key, value in rows]


def model_card(name: str, config: dict[str, Any], tables: list[tuple[str, str]]) -> str:
    """The folder's ``README.md``: what the model is, where it came from, its evaluation tables
    (``(title, Markdown table)``, e.g. the end-of-run probes, ``evaluate`` reports) and how to
    load it."""
    modality = config["cpc_lightning"]["modality"]
    lines = [
        "---",
        "library_name: cpc_lightning",
        "tags: [cpc, contrastive-predictive-coding, self-supervised, model_hub_mixin, "
        "pytorch_model_hub_mixin]",
        "---",
        "",
        f"# {name}",
        "",
        "A Contrastive Predictive Coding model trained with cpc_lightning.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in _summary(config)),
        "",
        "## Evaluation",
        "",
    ]
    for title, table in tables:
        lines += [f"### {title}", "", table.strip(), ""]
    if not tables:
        lines += ["No evaluation was recorded for this run.", ""]
    audio = "features([waveform], sample_rate=16000)"
    usage = audio if modality == "audio" else "features([pil_image])"
    lines += [
        "## Use",
        "",
        "```python",
        "import cpc_lightning",
        "",
        f'model = cpc_lightning.load("{name}")  # this folder',
        f"out = model.{usage}",
        "```",
        "",
        f"`{WEIGHTS}` holds the `CPCModule` state dict (`safetensors.torch.load_file`); "
        f"`{CONFIG}` the config that rebuilds it and the run's provenance.",
        "",
    ]
    return "\n".join(lines)
