"""The paper's experiment grid, declared once, and the runner that makes its results.

Every run of experiments 1 to 5 is a :class:`Run` in :data:`RUNS`; :data:`EXPERIMENTS` says which
runs each experiment reads (a run shared by two experiments, e.g. the N = 64 KD student at
lambda = 0.025, is declared and trained once). ``kdlib experiment N``, ``kdlib reproduce`` and the
notebooks all read this module.

A KD run and its scratch twin differ only in the loss: same seed, hence same initial weights,
crops and their order, noise draws and validation crops (``kdlib.train`` builds the student
before the teachers), same budget and schedule.

:func:`run_experiment` evaluates each run on Kodak with real bitstreams into
``<results>/experiments/<run>.json``, training first what has neither a finished run folder
nor released weights (cached by config hash, resumable after a kill), and records each
finished run's log and manifest entry (config hash, weights sha256) under ``checkpoints/runs/``.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from kdlib import data
from kdlib.evaluate import evaluate, evaluation_code
from kdlib.io import copy, read_json, write_atomic, write_json
from kdlib.losses import KDWeights
from kdlib.models import CHECKPOINTS, load_model, read_checkpoint, repo_relative
from kdlib.registry import Manifest, record, release, release_recorded
from kdlib.scales import RESULTS, SCALES
from kdlib.scales import get as get_scale
from kdlib.teachers import stored
from kdlib.train import Config, branch_from, run_dir, stable_end, state_path, teacher_cache_key, train

LAMBDAS = (0.0018, 0.0035, 0.0067, 0.013, 0.025)  # CompressAI's qualities 1..5
SIZES = (16, 32, 64, 96, 112)
KODIM14 = "kodim14.png"  # the image the paper shows reconstructed

# The experiment runs' budgets (Config fields), read from kdlib.scales (the teachers have their recipes there too).
BUDGETS: dict[str, dict[str, Any]] = {name: scale.runs for name, scale in SCALES.items()}
# Seeds of the long tier per N: three, and up to five where the converged pairs leave the seeds' sd above
# 0.05 with an interval spanning zero (issue 26's rule, kdlib.analysis.seed_rule). N = 16 met it with two pairs
# (sd 0.054), three (0.068) and four (0.082): seeds 3, 4; at five (sd 0.073) it hit the cap, its interval
# still spanning zero. N = 32's three pairs did not (sd 0.046).
LONG_SEEDS = {16: (0, 1, 2, 3, 4), 32: (0, 1, 2)}
LONG = [f"e1-{arm}-N{N}-s{seed}" for seed in range(5) for N in (16, 32) if seed in LONG_SEEDS[N]
        for arm in ("kd", "scratch")]
# The long tier's seed-0 KD students, released once converged if their Kodak RD cost beats the paper
# grid's release of their size (S16, S32: 10k steps), under names of their own: S16 and S32 stay the
# students experiments 1 and 6, the GPU check and the committed .kdl test files are pinned to.
# The equal-step tier (scale "equal", issue 40): seeds declared before training, never extended on a running
# statistic. N = 16: 8 pairs (at the long tier's sd, 0.073, about 10 pairs give +-2 % of scratch's RD cost;
# 8 is what about 25 hours allow beside N = 64); N = 64, the paper's main student: 2 pairs. Each pair at the
# full length and at its branches (kdlib.scales, "equal"); then scratch N = 16 at CompressAI's neighbouring
# qualities' lambdas (one seed, full length), so KD's points are read against scratch's own RD curve.
# Order of training: the pilot pair (N = 16, seed 0) first.
EQUAL_SEEDS = {16: tuple(range(8)), 64: (0, 1)}
EQUAL_LAMBDAS = (0.013, 0.0483)  # CompressAI's qualities 4 and 6 around the grid's 0.025 (quality 5)
LONG_RELEASES = {"e1-kd-N16-s0": "S16-long", "e1-kd-N32-s0": "S32-long"}
# Steps/s at one thread per run, two runs at a time, bf16 + compile, for time estimates (docs/training.md):
# {(kd?, N): steps/s}, measured for N = 16, 64 and 112 (KD: teacher targets computed or cached, on
# average); other sizes are interpolated.
STEPS_PER_S = {(True, 16): 3.6, (True, 64): 2.0, (True, 112): 1.5, (False, 16): 18.9, (False, 64): 4.7, (False, 112): 2.0}
# A KD run whose x_hat targets are all stored runs at this times its scratch twin's rate. Measured
# (log.csv, one thread beside another run): e3-w0.3-0.3-0.4 (N = 64) ran 5.35 steps/s with x_hat
# stored, 3.1 with y_hat only (g_s recomputed), against 4.8 for scratch N = 64 in session 5 and 2.0
# for KD N = 64 computing its targets: as fast as scratch, within this machine's drift.
STORED_TARGETS = 1.0
# Steps/s of a run drawing from the crop bank (the long and equal tiers: KD costs what scratch does), two
# at a time, bf16 + compile: N = 16 and 32 from the long tier's logs (median of each size's runs: 11.8 and
# 6.1), N = 64 a scratch run's rate (no bank run of that size yet); other sizes interpolated.
BANK_STEPS_PER_S = {16: 11.8, 32: 6.1, 64: 4.7, 112: 2.0}


@dataclass(frozen=True)
class Run:
    """One training run of the grid. ``kd`` names a preset of :data:`kdlib.losses.KD_PRESETS`
    (ignored without a teacher), ``weights`` overrides it; ``release`` is the checkpoint name it is
    published under; ``experiments`` are those that read it, its own first; ``reference`` is the run
    that lacks only the term this one tests (experiment 4)."""

    name: str
    N: int
    lmbda: float = 0.025
    teacher: str | None = "T5"
    hyper_teacher: str | None = None
    Z: int | None = None
    kd: str = "authors"
    weights: KDWeights | None = None
    latent: str = "mse"
    seed: int = 0
    release: str | None = None
    experiments: tuple[int, ...] = ()
    reference: str | None = None
    fraction: float = 1.0  # a branch of a fixed schedule: this fraction of its budget's steps, decayed
    trunk: str | None = None  # a branch: the full-length run it continues from its constant phase

    @property
    def arm(self) -> str:
        return "scratch" if self.teacher is None else "kd"

    @property
    def experiment(self) -> int | None:
        """The experiment that declares this run (None: the long tier's extra seeds only)."""
        return self.experiments[0] if self.experiments else None

    @property
    def loss_weights(self) -> KDWeights | None:
        """The KD loss's weights of a KD run, None from scratch."""
        if self.teacher is None:
            return None
        return self.weights or KDWeights.preset(self.kd)

    def config(self, budget: str = "cpu") -> Config:
        fields: dict[str, Any] = dict(name=self.name, N=self.N, Z=self.Z, lmbda=self.lmbda, seed=self.seed,
                                      **BUDGETS[budget])
        if self.fraction != 1:
            fields["steps"] = round(fields["steps"] * self.fraction)
        if self.teacher is not None:
            fields.update(teacher=self.teacher, hyper_teacher=self.hyper_teacher, latent=self.latent,
                          **self.loss_weights.fields())
        return Config(**fields)


def _e1_experiments(N: int, seed: int, arm: str) -> tuple[int, ...]:
    """Experiment 1's runs, and the other experiments that compare against them: the N = 64 pair is
    experiments 2, 3 and 5's reference (KD N = 64 experiment 4's too), the N = 16 and 112 pairs
    experiment 5's (their KD runs experiment 4's)."""
    if seed > 2 or (seed != 0 and N not in (16, 64)):
        return ()  # the long tier's extra seeds
    if seed != 0:
        return (1,)
    also = {64: (2, 3, 4, 5), 16: (4, 5), 112: (4, 5)}.get(N, ())
    return (1, *(e for e in also if arm == "kd" or e not in (4,)))


def _grid() -> dict[str, Run]:
    runs: list[Run] = []
    for N in SIZES:  # experiment 1: size; 3 seeds at N = 16, 64 (long tier: N = 32 too, and seeds 3, 4 at N = 16)
        for seed in sorted({*((0, 1, 2) if N in (16, 32, 64) else (0,)), *LONG_SEEDS.get(N, ()), *EQUAL_SEEDS.get(N, ())}):
            runs.append(Run(f"e1-kd-N{N}-s{seed}", N, seed=seed, release=f"S{N}" if seed == 0 else None,
                            experiments=_e1_experiments(N, seed, "kd")))
            runs.append(Run(f"e1-scratch-N{N}-s{seed}", N, teacher=None, seed=seed,
                            experiments=_e1_experiments(N, seed, "scratch")))
    e2, e3, e4, e5 = (2,), (3,), (4,), (5,)
    for lmbda in LAMBDAS[:-1]:  # experiment 2: rate; lambda = 0.025 with T5 and scratch are experiment 1's
        runs += [Run(f"e2-kdT5-l{lmbda}", 64, lmbda, experiments=e2),
                 Run(f"e2-scratch-l{lmbda}", 64, lmbda, teacher=None, experiments=e2)]
    runs += [Run(f"e2-kdT1-l{lmbda}", 64, lmbda, teacher="T1", experiments=e2) for lmbda in LAMBDAS]
    for w in ((0.1, 0.1, 0.8), (0.2, 0.2, 0.4), (0.3, 0.3, 0.4), (0.4, 0.4, 0.2)):  # experiment 3: weights
        runs.append(Run("e3-w" + "-".join(map(str, w)), 64, weights=KDWeights(w[0], 0.0, w[1], w[2]), experiments=e3))
    for N in (16, 64, 112):  # experiment 4: entropy model shrunk to N, z kept at the teacher's 128
        runs += [Run(f"e4-l2-N{N}", N, Z=128, kd="authors-l2", experiments=e4, reference=f"e4-l1-N{N}"),
                 Run(f"e4-l1-N{N}", N, Z=128, weights=KDWeights(0.3, 0.0, 0.3, 0.4), experiments=e4),
                 Run(f"e4-scratch-N{N}", N, Z=128, teacher=None, experiments=e4)]
    for lmbda in (0.013, 0.025):  # hybrid KD: T5 for y_hat and x_hat, T1 for z_hat; against L2 from T5
        runs.append(Run(f"e4-hybrid-l{lmbda}", 64, lmbda, Z=128, hyper_teacher="T1", kd="authors-l2", experiments=e4,
                        reference="e4-l2-N64" if lmbda == 0.025 else None))  # the grid has no L2 run at 0.013
    runs.append(Run("e4-scratch-N64-l0.013", 64, 0.013, Z=128, teacher=None, experiments=e4))
    for N in (16, 64, 112):  # experiment 5: KLD latent term at the authors' scale; per-position KL as ablation
        runs.append(Run(f"e5-kld-N{N}", N, latent="kld-mean", experiments=e5))
    runs.append(Run("e5-kldsum-N64", 64, latent="kld", experiments=e5))
    runs += [Run(f"e1-scratch-N16-l{lmbda}-s0", 16, lmbda, teacher=None) for lmbda in EQUAL_LAMBDAS]
    by_name = {r.name: r for r in runs}
    for name in _equal_pairs():  # the equal-step tier's branches, decayed from the constant phase
        for fraction in SCALES["equal"].branches:
            by_name[branch_name(name, fraction)] = dataclasses.replace(
                by_name[name], name=branch_name(name, fraction), release=None, experiments=(), fraction=fraction,
                trunk=name)
    return by_name


def _equal_pairs() -> list[str]:
    """The equal-step tier's full-length pairs, the pilot (N = 16, seed 0) first, then N = 16, then N = 64."""
    return [f"e1-{arm}-N{N}-s{seed}" for N in (16, 64) for seed in EQUAL_SEEDS[N] for arm in ("kd", "scratch")]


def branch_name(name: str, fraction: float) -> str:
    """The branch of run ``name`` at ``fraction`` of its budget: ``e1-kd-N16-s0-b25``."""
    return f"{name}-b{round(fraction * 100)}"


def _equal() -> list[str]:
    """The equal-step tier in training order: each pair, then its branches (which start from the
    pair's constant phase), the pilot first; the scratch lambdas last."""
    pairs = _equal_pairs()
    out = []
    for kd, scratch in zip(pairs[::2], pairs[1::2]):
        out += [kd, scratch, *(branch_name(n, f) for f in sorted(SCALES["equal"].branches, reverse=True)
                               for n in (kd, scratch))]
    return out + [f"e1-scratch-N16-l{lmbda}-s0" for lmbda in EQUAL_LAMBDAS]


RUNS: dict[str, Run] = _grid()
# Each experiment's runs: its own, in declaration order, then those it borrows from experiment 1.
EXPERIMENTS: dict[int, list[str]] = {
    number: sorted((n for n in RUNS if number in RUNS[n].experiments), key=lambda n: RUNS[n].experiment != number)
    for number in sorted({e for run in RUNS.values() for e in run.experiments})}


def twin(name: str) -> str | None:
    """The scratch run a KD run is paired with: same N, Z, lambda and seed, no teacher."""
    run = RUNS[name]
    key = (run.N, run.Z, run.lmbda, run.seed, run.fraction)
    matches = [n for n, r in RUNS.items() if r.teacher is None and (r.N, r.Z, r.lmbda, r.seed, r.fraction) == key]
    return matches[0] if run.teacher is not None and matches else None


def main_run(name: str) -> str | None:
    """Experiment 1's KD run (seed 0) of the same N, when ``name`` is at its lambda (0.025)."""
    run = RUNS[name]
    mains = [n for n, r in RUNS.items() if r.experiment == 1 and r.arm == "kd" and r.N == run.N and r.seed == 0]
    return mains[0] if run.lmbda == 0.025 and mains else None


# Training order: experiment 1's seed-0 pairs first (N = 64, the paper's recommended student, then
# 16, the smallest), KD before its scratch twin, then the other experiments, then more seeds.
EQUAL = _equal()
TIERS = {"long": LONG, "equal": EQUAL}  # the budgets that train a declared subset of experiment 1, in order
ORDER = sorted(RUNS, key=lambda n: (RUNS[n].seed, not n.startswith("e1-"),
                                    (64, 16, 32, 112, 96).index(RUNS[n].N) if n.startswith("e1-") else 0,
                                    RUNS[n].teacher is None))


def members(number: int, budget: str) -> list[str]:
    """The runs experiment ``number`` trains at ``budget``: the long and equal-step tiers train a declared
    subset of experiment 1 (:data:`TIERS`), every other budget the whole experiment."""
    scale = get_scale(budget)
    if scale.experiments is not None and number not in scale.experiments:
        return []
    return TIERS.get(budget, EXPERIMENTS[number])


def folders(budget: str, root: Path | None = None) -> tuple[Path, Path]:
    """(results folder, records folder) of a budget, under ``root`` (default: the repository's
    ``results/``, whose ``cpu`` results are the published ones): :meth:`kdlib.scales.Scale.results`
    and :meth:`~kdlib.scales.Scale.records`."""
    scale, root = get_scale(budget), Path(root) if root is not None else RESULTS
    return scale.results(root) / "experiments", scale.records(root)


def parked_folder(name: str, budget: str) -> Path:
    """Where an unfinished run of ``budget`` is parked between sessions (:func:`park`)."""
    return folders(budget)[1] / "parked" / name


def _steps(folder: Path) -> int:
    """The steps trained by the resume state in ``folder`` (-1 where there is none)."""
    path = folder / "last.pth.tar"
    return int(read_checkpoint(path)["meta"]["steps"]) if path.exists() else -1


def park(budget: str, runs: str | Path, names: Iterable[str] | None = None) -> list[str]:
    """Copy the resume state of every unfinished run of ``budget`` (its ``last.pth.tar``, ``best.pth.tar``
    and ``log.csv``) into the repository, so that a later session, whose ``runs/`` may be gone, resumes
    it where it stopped (:func:`unpark`). A parked state further along than the run folder's is kept:
    parking never moves a run backwards. Returns the runs parked."""
    parked = []
    for name in names or [n for number in EXPERIMENTS for n in members(number, budget)]:
        folder = run_dir(RUNS[name].config(budget), runs)
        if (trunk := RUNS[name].trunk) and not (folder / "done.json").exists():  # not started: its trunk's state
            branch_from(RUNS[name].config(budget), folder, RUNS[trunk].config(budget), runs)
        if not (folder / "last.pth.tar").exists() or (folder / "done.json").exists():
            continue
        target = parked_folder(name, budget)
        if (kept := _steps(target)) > (steps := _steps(folder)):
            print(f"{name}: not parked: its parked state ({kept} steps) is further along than {folder}'s ({steps})")
            continue
        target.mkdir(parents=True, exist_ok=True)
        for file in ("last.pth.tar", "best.pth.tar", "config.json", *(p.name for p in folder.glob("state-*.pth.tar"))):
            if (folder / file).exists():
                copy(folder / file, target / file)
        write_atomic(target / "log.csv.gz", gzip.compress((folder / "log.csv").read_bytes(), mtime=0), overwrite=True)
        parked.append(name)
    for name in parked:  # a trunk's kept states once every branch holds its own: not parked twice
        for branch in _branches_of(name, budget):
            if branch in parked or (run_dir(RUNS[branch].config(budget), runs) / "done.json").exists():
                state_path(parked_folder(name, budget), stable_end(RUNS[branch].config(budget))).unlink(missing_ok=True)
    return parked


def unpark(name: str, budget: str, runs: str | Path) -> bool:
    """Put a parked run back into its run folder when that folder has no state of its own (a new
    session) or an older one (a stale ``runs/`` left by an earlier session); the parked copy stays until
    the run is recorded. True if restored."""
    config, source = RUNS[name].config(budget), parked_folder(name, budget)
    folder = run_dir(config, runs)
    if (folder / "done.json").exists() or (parked := _steps(source)) < 0 or _steps(folder) >= parked:
        return False
    if json.loads((source / "config.json").read_text()) != dataclasses.asdict(config):
        return False  # parked under another config: left for the record, not resumed
    folder.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.name == "log.csv.gz":
            write_atomic(folder / "log.csv", gzip.decompress(file.read_bytes()), overwrite=True)
        else:
            copy(file, folder / file.name)
    return True


def log_path(name: str, budget: str) -> tuple[Path | None, bool]:
    """(the committed training log of run ``name`` at ``budget``, whether the run finished): a released
    run's ``checkpoints/<release>.log.csv``, a recorded run's ``<records>/<name>.log.csv.gz``, else the
    log parked with an unfinished run; (None, False) where there is none."""
    run, records = RUNS[name], folders(budget)[1]
    if budget == "cpu" and run.release and Manifest().weights(run.release, run.config(budget).hash()):
        return CHECKPOINTS / f"{run.release}.log.csv", True
    if (records / f"{name}.log.csv.gz").exists():
        return records / f"{name}.log.csv.gz", True
    parked = parked_folder(name, budget) / "log.csv.gz"
    return (parked, False) if parked.exists() else (None, False)


def training_states(names: Iterable[str], budget: str) -> pd.DataFrame:
    """How far each run of ``budget`` is, from what is committed: ``state`` (converged by the stop
    rule, step cap, finished, training (parked) or not started), ``steps`` and the ``last_lr``."""
    ends = Manifest(folders(budget)[1]).entries()
    rows = []
    for name in names:
        path, finished = log_path(name, budget)
        end = ends.get(name, {}).get("end", {})
        state = ("converged (stop rule)" if end.get("converged") else "step cap" if end else "finished") if finished \
            else "training (parked)" if path else "not started"
        last = pd.read_csv(path).step.max() if path else 0
        rows.append({"name": name, "state": state, "steps": int(end.get("steps", last)),
                     "last_lr": end.get("lr", float("nan"))})
    return pd.DataFrame(rows, columns=["name", "state", "steps", "last_lr"])


def released_weights(run: Run, config: Config) -> Path | None:
    """The released checkpoint of ``run`` when its config hash is this config's."""
    return Manifest().weights(run.release, config.hash()) if run.release else None


def estimate_s(run: Run, config: Config, cache: Path | None = None) -> float:
    """Estimated training seconds (one thread, two runs at a time) from :data:`STEPS_PER_S`. A KD run
    (not hybrid) whose teacher targets, ``x_hat`` included, are all stored in ``cache`` (a
    :class:`kdlib.teachers.TargetCache` folder) runs at :data:`STORED_TARGETS` times its scratch twin's rate."""
    kd = run.teacher is not None
    if config.bank:  # targets read from the bank: a KD step costs a scratch step (at most the step cap)
        sizes = sorted(BANK_STEPS_PER_S)
        rate = float(np.interp(run.N, sizes, [BANK_STEPS_PER_S[n] for n in sizes]))
        return (config.steps - (stable_end(config) if run.trunk else 0)) / rate  # a branch: its decay only
    needed = {"y_hat", "x_hat"} | ({"z_hat"} if config.w_hyper else set())
    if kd and cache and run.hyper_teacher is None and needed <= stored(cache, teacher_cache_key(config), config.steps):
        return config.steps / (STORED_TARGETS * _rate(False, run.N))
    return config.steps / _rate(kd, run.N)


def _rate(kd: bool, n: int) -> float:
    """Steps/s of a KD (or scratch) student of size ``n``, interpolated in :data:`STEPS_PER_S`."""
    sizes = sorted(m for k, m in STEPS_PER_S if k == kd)
    low = max([m for m in sizes if m <= n], default=sizes[0])
    high = min([m for m in sizes if m >= n], default=sizes[-1])
    a, b = STEPS_PER_S[(kd, low)], STEPS_PER_S[(kd, high)]
    return a if low == high else a + (b - a) * (n - low) / (high - low)


def status(names: Iterable[str], budget: str, runs: Path, root: Path | None = None) -> dict[str, str]:
    """Per run: "cached" (result up to date under ``root``), "evaluate" (weights here), "train", or
    "as recorded": a result of this config evaluated by other evaluation code (or before the code was
    recorded, :func:`kdlib.evaluate.evaluation_code`) whose weights are not kept, so it cannot be
    made again without training; it stands as recorded."""
    out, _ = folders(budget, root)
    states, code = {}, evaluation_code()
    for name in names:
        config = RUNS[name].config(budget)
        result = out / f"{name}.json"
        model = json.loads(result.read_text())["model"] if result.exists() else {}
        if model.get("config_hash") == config.hash():
            states[name] = ("cached" if model.get("code") == code else
                            "evaluate" if _weights_here(name, budget, runs) else "as recorded")
        elif _weights_here(name, budget, runs):
            states[name] = "evaluate"
        else:
            states[name] = "train"
    return states


def _weights_here(name: str, budget: str, runs: Path) -> bool:
    """Whether run ``name`` can be evaluated here: a finished run folder, released or kept weights."""
    config = RUNS[name].config(budget)
    return ((run_dir(config, runs) / "done.json").exists() or released_weights(RUNS[name], config) is not None
            or kept_weights(name, budget) is not None)


def kept_weights(name: str, budget: str) -> Path | None:
    """The best weights of a recorded run kept beside its log (the long tier's), when their sha256 is
    the one its manifest entry records."""
    records = folders(budget)[1]
    path, entry = records / f"{name}.pth.tar", Manifest(records).get(name)
    return path if path.exists() and entry and data.sha256sum(path) == entry.get("sha256") else None


def _train_one(config: Config, runs: str, threads: int, compile: bool, cache: Path | None,
               keep_states: tuple[int, ...], longer: Config | None) -> None:
    torch.set_num_threads(threads)
    train(config, runs=runs, threads=threads, progress=False, compile=compile, teacher_cache=cache,
          keep_states=keep_states, longer=longer)


def _branches_of(name: str, budget: str) -> list[str]:
    """The branches of run ``name`` that ``budget`` trains (none outside a tier with branches)."""
    return [n for n, r in RUNS.items() if r.trunk == name] if get_scale(budget).branches else []


def branches(name: str, budget: str) -> tuple[tuple[int, ...], Config | None]:
    """(the steps at which run ``name`` keeps its full state for its branches to start from, the
    full-length run a branch starts from): both empty outside a fixed schedule's tier."""
    run = RUNS[name]
    if run.trunk:
        return (), RUNS[run.trunk].config(budget)
    return tuple(stable_end(RUNS[b].config(budget)) for b in _branches_of(name, budget)), None


def last_step(folder: Path) -> int:
    """The step a run folder's log has reached (0 if none)."""
    log = folder / "log.csv"
    if not log.exists():
        return 0
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 4096))
        lines = f.read().decode(errors="ignore").strip().splitlines()
    try:
        return int(lines[-1].split(",", 1)[0])
    except (ValueError, IndexError):
        return 0


def train_all(names: list[str], budget: str, runs: Path, jobs: int, compile: bool,
              on_done=lambda name: None, teacher_cache: Path | None = None) -> None:
    """Train ``names`` ``jobs`` at a time (one process each, cores split between them: a lone run
    gets them all), with one progress bar over every run's steps; ``on_done(name)`` as each finishes.
    ``teacher_cache``: see :func:`kdlib.train.train`."""
    if not names:
        return
    jobs = min(jobs, len(names))
    threads = max(1, torch.get_num_threads() // jobs)
    configs = {n: RUNS[n].config(budget) for n in names}
    dirs = {n: run_dir(c, runs) for n, c in configs.items()}
    total = sum(c.steps for c in configs.values())
    steps = {n: last_step(dirs[n]) for n in names}
    steps = {n: s - s % configs[n].val_every for n, s in steps.items()}  # a resumed run restarts at its checkpoint
    capped = any(c.converge_lr for c in configs.values())  # runs that stop when converged: the total is their cap
    bar = tqdm(total=total, initial=sum(steps.values()), desc=f"{len(names)} runs" + (" (total: the step cap)" if capped else ""),
               unit="step", dynamic_ncols=True)
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
        pending = {pool.submit(_train_one, c, str(runs), threads, compile, teacher_cache, *branches(n, budget)): n
                   for n, c in configs.items()}
        while pending:
            time.sleep(2)
            # never backwards: a resuming run rewrites its log back to its checkpoint, and a log read
            # mid-write can end in a cut line
            now = {n: max(steps[n], last_step(dirs[n])) for n in names}
            bar.n = sum(now.values())
            bar.set_postfix_str(", ".join(n for n in names if now[n] > steps[n]))  # the runs moving
            bar.refresh()
            steps = now
            for future in [f for f in pending if f.done()]:
                name = pending.pop(future)
                future.result()  # a failed run stops the experiment with its error
                on_done(name)
    bar.close()


def finish(name: str, budget: str, runs: Path, images: list[Path], root: Path | None = None) -> Path:
    """Release or record a trained run, then evaluate it with real bitstreams into its result JSON
    (under ``root``, see :func:`folders`)."""
    run, config = RUNS[name], RUNS[name].config(budget)
    out, records = folders(budget, root)
    weights = released_weights(run, config) or kept_weights(name, budget)
    folder = run_dir(config, runs)
    if weights is None:
        if run.release and budget == "cpu":
            release(folder, run.release, recipe=recipe(config))
            weights = released_weights(run, config)
        else:
            record(folder, name, records)
            weights = folder / "best.pth.tar"
            if (folder / "done.json").exists():
                record_end(name, folder, records)
            if get_scale(budget).keep_weights:  # hours of training each: the weights are kept beside the log
                copy(weights, records / f"{name}.pth.tar")
            shutil.rmtree(parked_folder(name, budget), ignore_errors=True)
    model = load_model(weights)
    result = evaluate(model, images, name, progress=False, keep={KODIM14: out / "kodim14" / f"{name}.png"})
    result["model"].update(config_hash=config.hash(), sha256=data.sha256sum(weights), run=name,
                           arm=run.arm, budget=budget, code=evaluation_code())
    path = write_json(out / f"{name}.json", result)
    if run.release and budget == "cpu":
        note_kodak(run.release, path)
    if budget == "long" and name in LONG_RELEASES:
        release_converged(name, path, records)
    return path


def release_converged(name: str, result: Path, records: Path) -> str | None:
    """Release long-tier run ``name`` as :data:`LONG_RELEASES` names it when it converged (its record's
    ``end``) and its Kodak RD cost (``result``) is below the paper grid's release of its size
    (``results/<release>.json``); returns the name released, or None."""
    from kdlib.analysis import per_image

    run, entry = RUNS[name], Manifest(records).get(name) or {}
    end = entry.get("end") or {}
    grid = RESULTS / f"{run.release}.json"
    if not end.get("converged") or not grid.exists():
        return None
    config = run.config("long")
    cost, grid_cost = (per_image(path, config.lmbda).rd_cost.mean() for path in (result, grid))
    if cost >= grid_cost:
        return None
    as_name = LONG_RELEASES[name]
    if Manifest().weights(as_name, entry["config_hash"]) is None:  # not yet released (a re-evaluation only notes Kodak)
        release_recorded(name, records, as_name, recipe=(
            f"{recipe(config)}; long budget: batches from a bank of {config.bank} crops, trained until the learning "
            f"rate fell to {config.converge_lr:g} of its start and the best validation RD loss moved by under "
            f"{config.converge_flat * 100:g} % over the last 10 % of steps (cap {config.steps} steps): stopped at "
            f"{end['steps']}; Kodak RD cost {cost:.4f} against {grid_cost:.4f} for {run.release} (10k steps)"))
    note_kodak(as_name, result)
    return as_name


def note_kodak(release: str, result: Path) -> None:
    """Put a released student's Kodak means (real bitstreams) into its manifest entry."""
    evaluation = read_json(result)
    means = {k: round(v[0], 6) for k, v in evaluation["results"].items()
             if k in ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-estimated")}
    Manifest().update(release, kodak={**means, "images": len(evaluation["per_image"]),
                                      "result": repo_relative(result).as_posix()})


def record_end(name: str, folder: Path, records: Path) -> None:
    """Add how a run ended (``done.json``: stop rule met or step cap, final learning rate, bank) to its
    manifest entry."""
    Manifest(records).update(name, end=read_json(folder / "done.json"))


def recipe(config: Config) -> str:
    return (f"experiment budget: {config.steps} steps of {config.crop}x{config.crop} x {config.batch} crops of "
            f"train/, Adam lr {config.lr} halved after {config.patience} validations without improvement, "
            f"aux Adam {config.aux_lr}, clip {config.clip}, {config.precision} autocast for the student "
            f"(teacher fp32), seed {config.seed}")


def teacher_cache() -> Path:
    """The folder of the teacher targets shared by the runs of a seed (:class:`kdlib.teachers.TargetCache`)."""
    return data.cache_root() / "teacher-targets"


def run_experiment(number: int, budget: str = "cpu", runs: str | Path = "runs", jobs: int = 2,
                   compile: bool = True, dry_run: bool = False, only: list[str] | None = None,
                   train: bool = True, root: Path | None = None) -> dict[str, str]:
    """Make every result of experiment ``number``: evaluate what has weights, train what has not
    (saying which runs and the estimated time first; ``train=False`` only says it). ``dry_run``
    does nothing but say. Results go under ``root`` (:func:`folders`). Returns each run's state before the call."""
    if number not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {sorted(EXPERIMENTS)}, not {number}")
    unknown = sorted(set(only or ()) - set(members(number, budget)))
    if unknown:
        from kdlib.models import SpecError

        raise SpecError(f"not runs of experiment {number} at scale {budget}: {', '.join(unknown)} "
                        f"(`kdlib experiment {number} --scale {budget} --dry-run` lists them)")
    names = [n for n in TIERS.get(budget, ORDER) if n in members(number, budget) and (not only or n in only)]
    runs = Path(runs)
    states = status(names, budget, runs, root)
    out = folders(budget, root)[0]
    scale = get_scale(budget)
    images = scale.images(root)
    restored = [n for n in names if states[n] == "train" and not dry_run and unpark(n, budget, runs)]
    if restored:
        print(f"resumed from the parked state in {folders(budget)[1] / 'parked'}: {', '.join(restored)}")
    to_train = [n for n in names if states[n] == "train"]
    to_evaluate = [n for n in names if states[n] == "evaluate"]
    recorded = [n for n in names if states[n] == "as recorded"]
    print(f"experiment {number} ({budget}): {len(names) - len(to_train) - len(to_evaluate) - len(recorded)} cached, "
          f"{len(to_evaluate)} to evaluate, {len(to_train)} to train"
          + (f", {len(recorded)} as recorded (evaluated by earlier code; their weights are not kept)" if recorded else ""))
    if to_train and (train or dry_run):
        at_once = min(jobs, len(to_train))  # as train_all runs them
        hours = sum(estimate_s(RUNS[n], RUNS[n].config(budget), teacher_cache()) for n in to_train) / 3600 / at_once
        print(f"to train (about {hours:.1f} h, {at_once} at a time, on this machine's estimate):")
        for n in to_train:
            print(f"  {n}: {run_dir(RUNS[n].config(budget), runs)}")
    if dry_run:
        return states
    save_teacher_reconstructions(names, images, out)
    for n in to_evaluate:
        print(f"{n}: evaluated -> {finish(n, budget, runs, images, root)}")
    if not train:
        if to_train:
            print(f"not trained here: run `kdlib experiment {number} --scale {budget}` to train them")
        return states
    train_all(to_train, budget, runs, jobs, compile and not scale.quick,
              on_done=lambda n: print(f"{n}: trained, evaluated -> {finish(n, budget, runs, images, root)}"),
              teacher_cache=None if scale.quick else teacher_cache())
    return states


def save_teacher_reconstructions(names: Iterable[str], images: list[Path], out: Path) -> None:
    """``<out>/kodim14/<teacher>.png``: each teacher's decoded kodim14 (real bitstream), for the
    figures that show students beside their teacher."""
    image = next((p for p in images if p.name == KODIM14), None)
    for teacher in {RUNS[n].teacher for n in names} - {None}:
        target = out / "kodim14" / f"{teacher}.png"
        if image is not None and not target.exists():
            evaluate(load_model(teacher), [image], teacher, progress=False, keep={KODIM14: target})


