"""The scales, declared once: what ``smoke``, ``cpu``, ``long`` and ``paper`` mean for training, for the
experiment grid, for the evaluation and timing products and for the notebooks, and where each writes.

The trainer, the runner, ``kdlib reproduce``, the CLI and the notebooks read :data:`SCALES`; nothing
else asks which scale it is. Kept light (no torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "results"  # the results tree, whatever the working folder
CHECKPOINTS = REPO_ROOT / "checkpoints"


@dataclass(frozen=True)
class Scale:
    """One scale. ``recipe``: the training recipe of ``kdlib train --scale`` (Config fields; None where
    the scale is only a budget of the grid); ``runs``: the experiment runs' Config fields (their
    budget, ``scale`` naming the recipe they start from); ``experiments``: those the grid trains at
    this scale (None: every one); ``quick``: a run of the pipeline, not a result (two Kodak crops, the grid trained for
    a few steps, one timing pass, three codec settings, no compile, no stored teacher targets, the
    notebooks' full-scale checks skipped)."""

    name: str
    recipe: dict[str, Any] | None
    runs: dict[str, Any]
    experiments: tuple[int, ...] | None = None
    quick: bool = False
    about: str = ""
    branches: tuple[float, ...] = ()  # shorter budgets, as fractions of the runs' steps, each decayed ("wsd")
    keep_weights: bool = False  # hours per run: each recorded run's weights are kept beside its log
    published: bool = False  # the repository's own results: results/ and checkpoints/runs/ themselves, the
    # grid's runs released under their names (checkpoints/<release>.pth.tar) and checked against their configs
    release_converged: bool = False  # runs named in kdlib.grid.LONG_RELEASES are released once converged
    gpu: bool = False  # needs a CUDA GPU and Vimeo90K

    def results(self, root: str | Path | None = None) -> Path:
        """Its results folder under ``root`` (default: the repository's ``results/``, whose ``cpu``
        results are the published ones): ``root`` itself at ``cpu``, else ``root/<scale>``."""
        root = Path(root) if root is not None else RESULTS
        return root if self.published else root / self.name

    def records(self, root: str | Path | None = None) -> Path:
        """Where its finished runs are recorded (log, manifest entry): ``checkpoints/runs[/<scale>]``,
        or beside a quick run's results, which are never committed."""
        if self.quick:
            return self.results(root) / "records"
        return CHECKPOINTS / "runs" if self.published else CHECKPOINTS / "runs" / self.name

    def images(self, root: str | Path | None = None) -> list[Path]:
        """The images it evaluates on: Kodak's 24, or two centre crops written under its results."""
        from kdlib import data  # torch, and only when asked: the Makefile reads this module

        return data.smoke_images(self.results(root) / "images") if self.quick else data.kodak_paths()

    @property
    def repeats(self) -> int:
        """Passes of each speed measurement (the best is kept)."""
        return 1 if self.quick else 3

    @property
    def codec_settings(self) -> int | None:
        """Settings of each classical codec's sweep (None: its full sweep)."""
        return 3 if self.quick else None


# "cpu"'s recipe was chosen from measurements on a 2-core machine (docs/training.md); its runs' budget, 10k steps
# of 128x128 x 8 crops in bf16, so that experiment 1 (18 runs) takes about 8 hours two at a time.
# "long": experiment 1's N = 16 and 32 pairs trained to convergence (kdlib.train.converged: the learning
# rate cut to 1/8 and the best validation RD loss flat within 0.5 % over the last 10 % of steps), capped
# at 150k steps, batches from a fixed bank of 32,768 crops whose teacher targets are computed once
# (kdlib.bank), so a KD step costs what a scratch step does (docs/training.md, "Long runs").
# "equal": experiment 1's pairs on one fixed schedule, the same for both arms (issue 40): 64k steps of
# the long tier's bank, lr 5e-4 constant then linear to 0 over the last 20 % ("wsd"), with branches decayed
# from the constant phase at 1/4 and 1/2 of the length, so that every point of the budget curve is a
# decayed model. Why 64k: the long tier's plateau schedule first halved the rate at 19k-63k steps (median
# 32k) and its N = 16 runs stopped at 49k-128k (median 74k); 64k puts the 1/2 branch where the plateau
# runs first decayed, and the whole tier (about 25 hours two at a time) within the budget.
# Declared in advance, seeds included (kdlib.grid.EQUAL_SEEDS); docs/training.md "Equal steps".
# "paper": the published protocol (Vimeo90K, 256x256, batch 16, lr 1e-4, millions of steps).
CPU_RECIPE = dict(crop=128, batch=8, steps=40_000, lr=5e-4, val_every=500, val_images=62, patience=4)
SCALES: dict[str, Scale] = {s.name: s for s in (
    Scale("smoke", dict(crop=64, batch=2, steps=6, lr=1e-4, val_every=3, val_images=4, patience=2),
          dict(scale="smoke", steps=2, val_every=2), quick=True,
          about="two Kodak crops and the grid trained for 2 steps: the pipeline end to end in minutes, not a result"),
    Scale("cpu", CPU_RECIPE, dict(scale="cpu", steps=10_000, precision="bf16"), published=True,
          about="the published results of this machine: the teachers (their steps: checkpoints/manifest.json) and the grid's runs, 10k steps each"),
    Scale("long", None, dict(scale="cpu", steps=150_000, precision="bf16", bank=32_768, converge_lr=0.125,
                             converge_flat=0.005), experiments=(1,), keep_weights=True, release_converged=True,
          about="experiment 1's N = 16 and 32 pairs trained until a stop rule held (hours per run)"),
    Scale("equal", None, dict(scale="cpu", steps=64_000, precision="bf16", bank=32_768, schedule="wsd", decay=0.2),
          experiments=(1,), branches=(0.25, 0.5), keep_weights=True,
          about="experiment 1's pairs, N = 16 and 64, on one fixed 64k-step schedule with decayed branches at 1/4 and 1/2"),
    Scale("paper", dict(crop=256, batch=16, steps=5_000_000, lr=1e-4, val_every=5_000, val_images=0, patience=10),
          dict(scale="paper"), gpu=True, about="the published protocol: a CUDA GPU and Vimeo90K"),
)}
RECIPES: dict[str, dict[str, Any]] = {name: s.recipe for name, s in SCALES.items() if s.recipe is not None}


def get(name: str) -> Scale:
    """The scale called ``name``, or a one-line error naming the scales."""
    if name not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {name!r}")
    return SCALES[name]
