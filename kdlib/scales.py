"""The scales, declared once: what ``smoke``, ``cpu``, ``long`` and ``paper`` mean for training, for the
experiment grid, for the evaluation and timing products and for the notebooks, and where each writes.

The trainer, the runner, ``kdlib reproduce``, the CLI and the notebooks read :data:`SCALES`; nothing
else asks which scale it is. Kept light (no torch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent  # the repository: its paper/, checkpoints/, results/, figures/
PAPER = REPO_ROOT / "paper"  # the paper's numbers, claims and deviations (read), and REPRODUCTION.md (Layout.report)
CHECKPOINTS = REPO_ROOT / "checkpoints"  # the released models, which a model name resolves to (kdlib.models.resolve)
RUNS = REPO_ROOT / "runs"  # training run folders, a cache by config hash (kdlib.train.run_dir), unless given


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
    release_students: bool = False  # runs named in kdlib.grid.TIER_RELEASES[name] are released once they end by
    # their tier's rule (the stop rule; a fixed schedule's every step) and beat the grid's release of their size
    gpu: bool = False  # needs a CUDA GPU and Vimeo90K

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
# "long": experiment 1's N = 16 and 32 pairs trained until a plateau rule stopped them (kdlib.train.converged:
# the learning rate cut to 1/8 and the best validation RD loss flat within 0.5 % over the last 10 % of steps;
# not convergence: the validation loss was still falling, issue 40), capped
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
                             converge_flat=0.005), experiments=(1,), keep_weights=True, release_students=True,
          about="experiment 1's N = 16 and 32 pairs trained until a stop rule held (hours per run)"),
    Scale("equal", None, dict(scale="cpu", steps=64_000, precision="bf16", bank=32_768, schedule="wsd", decay=0.2),
          experiments=(1,), branches=(0.25, 0.5), keep_weights=True, release_students=True,
          about="experiment 1's pairs, N = 16 and 64, on one fixed 64k-step schedule with decayed branches at 1/4 and 1/2"),
    Scale("paper", dict(crop=256, batch=16, steps=5_000_000, lr=1e-4, val_every=5_000, val_images=0, patience=10),
          dict(scale="paper"), gpu=True, about="the published protocol: a CUDA GPU and Vimeo90K"),
)}
RECIPES: dict[str, dict[str, Any]] = {name: s.recipe for name, s in SCALES.items() if s.recipe is not None}


@dataclass(frozen=True)
class Layout:
    """Where one scale reads and writes, every folder resolved once from a root (default: the repository;
    tests pass a temporary one). The CLI, ``kdlib reproduce`` and the notebooks' prelude build it and pass
    it down: no module keeps a folder of its own. Build it with :meth:`of`."""

    scale: Scale
    root: Path  # the repository-like folder the others are under, unless overridden
    results: Path  # result files; the experiments' under ``experiments/``
    records: Path  # finished runs of the grid (logs, manifest, kept weights); unfinished ones under ``parked/``
    runs: Path  # training run folders, a cache by config hash
    checkpoints: Path  # the released models and their manifest, where the grid's runs are released
    figures: Path
    tables: Path
    report: Path  # the folder of REPRODUCTION.md

    @classmethod
    def of(cls, scale: str | Scale, root: str | Path | None = None, *, results_root: str | Path | None = None,
           results: str | Path | None = None, runs: str | Path | None = None,
           outputs: str | Path | None = None) -> Layout:
        """The layout of ``scale`` under ``root``. ``results_root``: the results tree (default
        ``<root>/results``), whose ``cpu`` results are the published ones and every other scale's are in
        ``<scale>/``; ``results``: the results folder itself; ``runs``: the run folders (default
        ``<root>/runs``); ``outputs``: figures, tables and the report go there (strict nbval re-executes the
        published notebooks without rewriting their products). A quick scale's records, figures and
        tables go under its results, so that a run of the pipeline never rewrites what is committed."""
        scale = get(scale) if isinstance(scale, str) else scale
        root = Path(root) if root is not None else REPO_ROOT
        tree = Path(results_root) if results_root is not None else root / "results"
        folder = Path(results) if results is not None else tree if scale.published else tree / scale.name
        checkpoints = root / "checkpoints"
        records = (folder / "records" if scale.quick else checkpoints / "runs" if scale.published
                   else checkpoints / "runs" / scale.name)
        if outputs is not None:
            figures, tables, report = Path(outputs) / "figures", Path(outputs) / "tables", Path(outputs) / "tables"
        elif scale.quick:
            figures, tables, report = folder / "smoke-figures", folder / "smoke-tables", folder / "smoke-tables"
        else:
            figures, tables, report = root / "figures", root / "paper" / "tables", root / "paper"
        runs = Path(runs) if runs is not None else root / "runs"
        return cls(scale, root, folder, records, runs, checkpoints, figures, tables, report)

    def at(self, scale: str) -> Layout:
        """The layout of another scale under the same root (a notebook reading the long tier beside cpu);
        this one for its own scale."""
        return self if scale == self.scale.name else Layout.of(scale, self.root, runs=self.runs)

    @property
    def experiments(self) -> Path:
        """The grid's result files."""
        return self.results / "experiments"

    @property
    def parked(self) -> Path:
        """Where unfinished runs are parked between sessions (:func:`kdlib.experiments.park`)."""
        return self.records / "parked"

    def images(self) -> list[Path]:
        """The images the scale evaluates on: Kodak's 24, or two centre crops written under its results."""
        from kdlib import data  # torch, and only when asked: the Makefile reads this module

        return data.smoke_images(self.results / "images") if self.scale.quick else data.kodak_paths()


def get(name: str) -> Scale:
    """The scale called ``name``, or a one-line error naming the scales."""
    if name not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {name!r}")
    return SCALES[name]
