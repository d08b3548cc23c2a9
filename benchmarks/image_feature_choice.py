"""Which feature and pooling of an image run to probe: CPC minus random init on held-out
TRAINING images (the test images are never read), as ``docs/image_recipe_search.md`` reports.

    python benchmarks/image_feature_choice.py <run dir or .ckpt> --root ../shared/data/cifar10

Of each class folder under ``<root>/train``, a seeded permutation (numpy ``default_rng(seed)``)
gives ``--held-out`` images to score on and the next ``--fit`` images to fit the probe on. The
run's model and the same architecture at random init (``evaluate``'s ``random_init_model``) give
the patch grids of ``z`` and ``c``; each ``feature:pool`` choice is probed with
``eval.linear_probe.fit_probe`` (standardised features, Adam, cosine schedule) at every penalty
of ``--weight-decays``; a cell is the best held-out accuracy over the penalties, for each source
(so both sides get the same search). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cpc_lightning.api import ImageFeatureExtractor, image_preprocess
from cpc_lightning.eval.linear_probe import fit_probe
from cpc_lightning.evaluate import random_init_model
from cpc_lightning.model.pooling import pool_grid
from cpc_lightning.runs import open_run

FEATURES = {"z": ("z",), "c": ("c",), "zc": ("z", "c")}


def split_files(root: Path, fit: int, held_out: int, seed: int) -> dict[str, list]:
    """``{"fit": [(path, label)], "held_out": [...]}`` from ``root/train/<class>/*``."""
    train = root / "train"
    if not train.is_dir():
        raise SystemExit(f"{train} is not a folder: give --root an ImageFolder dataset (train/)")
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"fit": [], "held_out": []}
    for label, folder in enumerate(sorted(d for d in train.iterdir() if d.is_dir())):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        order = rng.permutation(len(files))
        out["held_out"] += [(files[i], label) for i in order[:held_out]]
        out["fit"] += [(files[i], label) for i in order[held_out : held_out + fit]]
    return out


@torch.no_grad()
def grids(model: ImageFeatureExtractor, items: list, batch: int = 256) -> dict[str, torch.Tensor]:
    """``{"z": (N, G, G, D), "c": (N, G, G, C), "y": (N,)}`` of the images in ``items``."""
    zs, cs = [], []
    for i in range(0, len(items), batch):
        out = model.features([Image.open(p).convert("RGB") for p, _ in items[i : i + batch]])
        zs.append(out["z"])
        cs.append(out["c"])
    return {"z": torch.cat(zs), "c": torch.cat(cs), "y": torch.tensor([y for _, y in items])}


def rows(g: dict[str, torch.Tensor], feature: str, pool: str) -> torch.Tensor:
    """The probe's rows: each grid of ``feature`` pooled as ``pool``, concatenated."""
    return torch.cat([pool_grid(g[name], pool) for name in FEATURES[feature]], 1)


def best_accuracy(
    fit: dict, held: dict, feature: str, pool: str, args: argparse.Namespace
) -> float:
    """The best held-out accuracy over ``args.weight_decays``."""
    train, test = (rows(fit, feature, pool), fit["y"]), (rows(held, feature, pool), held["y"])
    return max(
        fit_probe(
            "classes", train, test, 10, epochs=args.epochs, lr=args.lr, weight_decay=wd
        ).accuracy
        for wd in args.weight_decays
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="an image run dir or a .ckpt of one")
    p.add_argument("--root", type=Path, required=True, help="the ImageFolder dataset (train/)")
    p.add_argument("--choices", default="z:grid4,c:grid4,zc:grid4,c:grid3,c:none,z:mean,c:mean")
    p.add_argument("--fit", type=int, default=2000, help="probe-fitting images per class")
    p.add_argument("--held-out", type=int, default=500, help="scored images per class")
    p.add_argument("--weight-decays", type=lambda s: [float(v) for v in s.split(",")],
                   default=[0.0, 1e-3, 1e-2, 1e-1])  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--random-init-seed", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="of the image split")
    args = p.parse_args(argv)
    files = split_files(args.root, args.fit, args.held_out, args.seed)
    run = open_run(checkpoint=args.run) if args.run.is_file() else open_run(run_dir=args.run)
    if run.model.modality != "image":
        raise SystemExit(f"{args.run} is not an image run")
    preprocess = image_preprocess(run.config.data)
    untrained = random_init_model(run.config, args.random_init_seed)
    sources = {
        "CPC": ImageFeatureExtractor(run.model, preprocess, {"run_dir": str(run.run_dir)}),
        "random init": ImageFeatureExtractor(untrained, preprocess, {}),
    }
    feats = {name: {s: grids(m, files[s]) for s in files} for name, m in sources.items()}
    print(f"{run.run_dir}: {len(files['fit'])} fitting, {len(files['held_out'])} held-out images")
    print("| feature, pool | CPC % | random init % | CPC minus random init |")
    print("|---|---|---|---|")
    for choice in args.choices.split(","):
        feature, pool = choice.split(":")
        acc = {n: 100 * best_accuracy(f["fit"], f["held_out"], feature, pool, args)
               for n, f in feats.items()}  # fmt: skip
        gap = acc["CPC"] - acc["random init"]
        print(f"| {feature}, {pool} | {acc['CPC']:.1f} | {acc['random init']:.1f} | {gap:+.1f} |")


if __name__ == "__main__":
    main()
