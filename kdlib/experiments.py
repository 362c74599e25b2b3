"""The runner that makes the grid's results (:mod:`kdlib.grid` declares the runs).

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
import signal
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from kdlib import data, grid
from kdlib.evaluate import evaluate, evaluation_code
from kdlib.io import copy, read_json, write_atomic, write_json
from kdlib.models import load_model, read_checkpoint, repo_relative
from kdlib.registry import Manifest, record, release, release_recorded
from kdlib.scales import Layout
from kdlib.scales import get as get_scale
from kdlib.teachers import stored
from kdlib.train import (EMULATED_BF16, Config, branch_from, native_bf16, run_dir, stable_end, state_path,
                         teacher_cache_key, train)

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
# 6.1), N = 64 from the equal tier's seed-0 pair (2.5 and 2.4 side by side, log.csv, 2026-12-07, on the
# AVX2 EPYC with kdlib.precision's bf16 emulation, where N = 16 ran 13.5-14.3); other sizes interpolated.
BANK_STEPS_PER_S = {16: 11.8, 32: 6.1, 64: 2.45, 112: 2.0}


def _steps(folder: Path) -> int:
    """The steps trained by the resume state in ``folder`` (-1 where there is none)."""
    path = folder / "last.pth.tar"
    return int(read_checkpoint(path)["meta"]["steps"]) if path.exists() else -1


def park(layout: Layout, names: Iterable[str] | None = None) -> list[str]:
    """Copy the resume state of every unfinished run of ``layout``'s scale (its ``last.pth.tar``, ``best.pth.tar``
    and ``log.csv``) into ``layout.parked`` (in the repository), so that a later session, whose ``runs/`` may be gone, resumes
    it where it stopped (:func:`unpark`). A parked state further along than the run folder's is kept:
    parking never moves a run backwards. Returns the runs parked."""
    budget, runs, parked = layout.scale.name, layout.runs, []
    for name in names or [n for number in grid.EXPERIMENTS for n in grid.members(number, budget)]:
        folder = run_dir(grid.RUNS[name].config(budget), runs)
        if (trunk := grid.RUNS[name].trunk) and not (folder / "done.json").exists():  # not started: its trunk's state
            branch_from(grid.RUNS[name].config(budget), folder, grid.RUNS[trunk].config(budget), runs)
        if not (folder / "last.pth.tar").exists() or (folder / "done.json").exists():
            continue
        target = layout.parked / name
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
            if branch in parked or (run_dir(grid.RUNS[branch].config(budget), runs) / "done.json").exists():
                state_path(layout.parked / name, stable_end(grid.RUNS[branch].config(budget))).unlink(missing_ok=True)
    return parked


def unpark(name: str, layout: Layout) -> bool:
    """Put a parked run back into its run folder when that folder has no state of its own (a new
    session) or an older one (a stale ``runs/`` left by an earlier session); the parked copy stays until
    the run is recorded. True if restored."""
    config, source = grid.RUNS[name].config(layout.scale.name), layout.parked / name
    folder = run_dir(config, layout.runs)
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


def log_path(name: str, layout: Layout) -> tuple[Path | None, bool]:
    """(the committed training log of run ``name`` at ``layout``'s scale, whether the run finished): a released
    run's ``<checkpoints>/<release>.log.csv``, a recorded run's ``<records>/<name>.log.csv.gz``, else the
    log parked with an unfinished run; (None, False) where there is none."""
    run, records = grid.RUNS[name], layout.records
    if layout.scale.published and run.release and _released_as(run.release, run.config(layout.scale.name), layout):
        return layout.checkpoints / f"{run.release}.log.csv", True
    if (records / f"{name}.log.csv.gz").exists():
        return records / f"{name}.log.csv.gz", True
    parked = layout.parked / name / "log.csv.gz"
    return (parked, False) if parked.exists() else (None, False)


def _released_as(release: str, config: Config, layout: Layout) -> bool:
    """Whether the manifest's ``release`` was trained with ``config``: its fields compared, teachers
    by name, so that reading a table hashes no checkpoint (training and evaluation compare hashes)."""
    entry = Manifest(layout.checkpoints).get(release)
    if entry is None or "file" not in entry:
        return False
    return _given(entry.get("config", {})) == _given(dataclasses.asdict(config))


def _given(fields: dict) -> dict:
    """A config's fields that are set (None ones are left out, as :meth:`Config.hash` does)."""
    return {k: v for k, v in fields.items() if v is not None}


def training_states(names: Iterable[str], layout: Layout) -> pd.DataFrame:
    """How far each run at ``layout``'s scale is, from what is committed: ``state`` (stopped by the
    plateau rule, step cap, finished, training (parked) or not started), ``steps`` and the ``last_lr``."""
    ends = Manifest(layout.records).entries()
    rows = []
    for name in names:
        path, finished = log_path(name, layout)
        end = ends.get(name, {}).get("end", {})
        state = ("stopped (plateau rule)" if end.get("converged") else "step cap" if end else "finished") if finished \
            else "training (parked)" if path else "not started"
        last = pd.read_csv(path).step.max() if path else 0
        rows.append({"name": name, "state": state, "steps": int(end.get("steps", last)),
                     "last_lr": end.get("lr", float("nan"))})
    return pd.DataFrame(rows, columns=["name", "state", "steps", "last_lr"])


def released_weights(run: grid.Run, config: Config, checkpoints: Path) -> Path | None:
    """The checkpoint of ``run`` released in ``checkpoints`` when its config hash is this config's."""
    return Manifest(checkpoints).weights(run.release, config.hash()) if run.release else None


def estimate_s(run: grid.Run, config: Config, cache: Path | None = None, start: int = 0) -> float:
    """Estimated training seconds (one thread, two runs at a time) from :data:`STEPS_PER_S` for the steps
    left after ``start`` (those its resume state holds). A KD run (not hybrid) whose teacher targets,
    ``x_hat`` included, are all stored in ``cache`` (a :class:`kdlib.teachers.TargetCache` folder) runs at
    :data:`STORED_TARGETS` times its scratch twin's rate."""
    kd, left = run.teacher is not None, config.steps - start
    if config.bank:  # targets read from the bank: a KD step costs a scratch step (at most the step cap)
        sizes = sorted(BANK_STEPS_PER_S)
        rate = float(np.interp(run.N, sizes, [BANK_STEPS_PER_S[n] for n in sizes]))
        return min(left, config.steps - (stable_end(config) if run.trunk else 0)) / rate  # a branch: its decay only
    needed = {"y_hat", "x_hat"} | ({"z_hat"} if config.w_hyper else set())
    if kd and cache and run.hyper_teacher is None and needed <= stored(cache, teacher_cache_key(config), config.steps):
        return left / (STORED_TARGETS * _rate(False, run.N))
    return left / _rate(kd, run.N)


def trained_steps(name: str, layout: Layout) -> int:
    """The steps a run's resume state holds, in its run folder or parked (0 where it has none)."""
    folder = run_dir(grid.RUNS[name].config(layout.scale.name), layout.runs)
    return max(_steps(folder), _steps(layout.parked / name), 0)


def _rate(kd: bool, n: int) -> float:
    """Steps/s of a KD (or scratch) student of size ``n``, interpolated in :data:`STEPS_PER_S`."""
    sizes = sorted(m for k, m in STEPS_PER_S if k == kd)
    low = max([m for m in sizes if m <= n], default=sizes[0])
    high = min([m for m in sizes if m >= n], default=sizes[-1])
    a, b = STEPS_PER_S[(kd, low)], STEPS_PER_S[(kd, high)]
    return a if low == high else a + (b - a) * (n - low) / (high - low)


def status(names: Iterable[str], layout: Layout) -> dict[str, str]:
    """Per run: "cached" (result up to date in ``layout.experiments``), "evaluate" (weights here), "train", or
    "as recorded": a result of this config evaluated by other evaluation code (or before the code was
    recorded, :func:`kdlib.evaluate.evaluation_code`) whose weights are not kept, so it cannot be
    made again without training; it stands as recorded."""
    states, code = {}, evaluation_code()
    for name in names:
        config = grid.RUNS[name].config(layout.scale.name)
        result = layout.experiments / f"{name}.json"
        model = json.loads(result.read_text())["model"] if result.exists() else {}
        if model.get("config_hash") == config.hash():
            states[name] = ("cached" if model.get("code") == code else
                            "evaluate" if _weights_here(name, layout) else "as recorded")
        elif _weights_here(name, layout):
            states[name] = "evaluate"
        else:
            states[name] = "train"
    return states


def _weights_here(name: str, layout: Layout) -> bool:
    """Whether run ``name`` can be evaluated here: a finished run folder, released or kept weights."""
    config = grid.RUNS[name].config(layout.scale.name)
    return ((run_dir(config, layout.runs) / "done.json").exists()
            or released_weights(grid.RUNS[name], config, layout.checkpoints) is not None
            or kept_weights(name, layout) is not None)


def kept_weights(name: str, layout: Layout) -> Path | None:
    """The best weights of a recorded run kept beside its log (the long tier's), when their sha256 is
    the one its manifest entry records."""
    records = layout.records
    path, entry = records / f"{name}.pth.tar", Manifest(records).get(name)
    return path if path.exists() and entry and data.sha256sum(path) == entry.get("sha256") else None


def _train_one(config: Config, runs: str, threads: int, compile: bool, cache: Path | None,
               keep_states: tuple[int, ...], longer: Config | None) -> None:
    torch.set_num_threads(threads)
    train(config, runs=runs, threads=threads, progress=False, compile=compile, teacher_cache=cache,
          keep_states=keep_states, longer=longer)


def _branches_of(name: str, budget: str) -> list[str]:
    """The branches of run ``name`` that ``budget`` trains (none outside a tier with branches)."""
    return [n for n, r in grid.RUNS.items() if r.trunk == name] if get_scale(budget).branches else []


def branches(name: str, budget: str) -> tuple[tuple[int, ...], Config | None]:
    """(the steps at which run ``name`` keeps its full state for its branches to start from, the
    full-length run a branch starts from): both empty outside a fixed schedule's tier."""
    run = grid.RUNS[name]
    if run.trunk:
        return (), grid.RUNS[run.trunk].config(budget)
    return tuple(stable_end(grid.RUNS[b].config(budget)) for b in _branches_of(name, budget)), None


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


def train_all(names: list[str], layout: Layout, jobs: int, compile: bool,
              on_done=lambda name: None, teacher_cache: Path | None = None) -> None:
    """Train ``names`` ``jobs`` at a time (one process each, cores split between them: a lone run
    gets them all), with one progress bar over every run's steps; ``on_done(name)`` as each finishes.
    ``teacher_cache``: see :func:`kdlib.train.train`."""
    if not names:
        return
    jobs = min(jobs, len(names))
    threads = max(1, torch.get_num_threads() // jobs)
    budget, runs = layout.scale.name, layout.runs
    configs = {n: grid.RUNS[n].config(budget) for n in names}
    dirs = {n: run_dir(c, runs) for n, c in configs.items()}
    total = sum(c.steps for c in configs.values())
    steps = {n: last_step(dirs[n]) for n in names}
    steps = {n: s - s % configs[n].val_every for n, s in steps.items()}  # a resumed run restarts at its checkpoint
    capped = any(c.converge_lr for c in configs.values())  # runs that stop when converged: the total is their cap
    bar = tqdm(total=total, initial=sum(steps.values()), desc=f"{len(names)} runs" + (" (total: the step cap)" if capped else ""),
               unit="step", dynamic_ncols=True)
    with workers(jobs) as pool:
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


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def workers(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of ``jobs`` spawned processes that ignore Ctrl-C. Leaving the block on an error
    (Ctrl-C, a failed run) starts no queued call and terminates the running ones (a run resumes
    from its last checkpoint); a worker that took SIGINT itself would drop its call and start the
    next queued one, and the pool's exit would wait for it."""
    pool = ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_ignore_ctrl_c)
    try:
        yield pool
    except BaseException:
        running = list((pool._processes or {}).values())  # noqa: SLF001 (no public handle on the workers)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in running:
            process.terminate()
        for process in running:
            process.join()
        raise
    pool.shutdown()


def finish(name: str, layout: Layout, images: list[Path]) -> Path:
    """Release or record a trained run, then evaluate it with real bitstreams into its result JSON
    in ``layout.experiments``."""
    budget, scale, records = layout.scale.name, layout.scale, layout.records
    run, config = grid.RUNS[name], grid.RUNS[name].config(budget)
    weights = released_weights(run, config, layout.checkpoints) or kept_weights(name, layout)
    folder = run_dir(config, layout.runs)
    if weights is None:
        if run.release and scale.published:
            release(folder, run.release, layout.checkpoints, recipe=recipe(config))
            weights = released_weights(run, config, layout.checkpoints)
        else:
            record(folder, name, records)
            weights = folder / "best.pth.tar"
            if (folder / "done.json").exists():
                record_end(name, folder, records)
            if scale.keep_weights:  # hours of training each: the weights are kept beside the log
                copy(weights, records / f"{name}.pth.tar")
            shutil.rmtree(layout.parked / name, ignore_errors=True)
    model = load_model(weights)
    result = evaluate(model, images, name, progress=False, keep={grid.KODIM14: layout.experiments / "kodim14" / f"{name}.png"})
    result["model"].update(config_hash=config.hash(), sha256=data.sha256sum(weights), run=name,
                           arm=run.arm, budget=budget, code=evaluation_code())
    path = write_json(layout.experiments / f"{name}.json", result)
    if run.release and scale.published:
        note_kodak(run.release, path, layout.checkpoints)
    if scale.release_students and name in grid.TIER_RELEASES.get(budget, {}):
        release_student(name, path, layout)
    return path


def ended_by_rule(config: Config, end: dict) -> bool:
    """Whether a run ended by its tier's own rule (its record's ``end``): the stop rule met (not the step cap)
    under the plateau schedule's stop rule, every step under a fixed schedule."""
    return bool(end.get("converged")) if config.converge_lr else end.get("steps") == config.steps


def release_student(name: str, result: Path, layout: Layout) -> str | None:
    """Release tier run ``name`` under the name :data:`kdlib.grid.TIER_RELEASES` declares for ``layout``'s tier,
    when it ended by the tier's rule (:func:`ended_by_rule`, its record's ``end`` in ``layout.records``) and its
    Kodak RD cost (``result``) is below the paper grid's release of its size (``<cpu results>/<release>.json``);
    returns the name released, or None."""
    from kdlib.metrics import per_image

    budget = layout.scale.name
    run, entry = grid.RUNS[name], Manifest(layout.records).get(name) or {}
    end, config = entry.get("end") or {}, run.config(budget)
    paper_grid = layout.at("cpu").results / f"{run.release}.json"
    if not ended_by_rule(config, end) or not paper_grid.exists():
        return None
    cost, grid_cost = (per_image(path, config.lmbda).rd_cost.mean() for path in (result, paper_grid))
    if cost >= grid_cost:
        return None
    as_name = grid.TIER_RELEASES[budget][name]
    how = (f"trained until the learning rate fell to {config.converge_lr:g} of its start and the best validation RD "
           f"loss moved by under {config.converge_flat * 100:g} % over the last 10 % of steps (cap {config.steps} "
           f"steps): stopped at {end['steps']}" if config.converge_lr else
           f"{config.steps} steps on a fixed schedule, no stop rule")
    if Manifest(layout.checkpoints).weights(as_name, entry["config_hash"]) is None:  # not yet released (a re-evaluation only notes Kodak)
        release_recorded(name, layout.records, as_name, layout.checkpoints, recipe=(
            f"{recipe(config)}; {budget} budget: batches from a bank of {config.bank} crops, {how}; Kodak RD cost "
            f"{cost:.4f} against {grid_cost:.4f} for {run.release} (10k steps)"))
    note_kodak(as_name, result, layout.checkpoints)
    return as_name


def note_kodak(release: str, result: Path, checkpoints: Path) -> None:
    """Put a released student's Kodak means (real bitstreams) into its manifest entry."""
    evaluation = read_json(result)
    means = {k: round(v[0], 6) for k, v in evaluation["results"].items()
             if k in ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-estimated")}
    Manifest(checkpoints).update(release, kodak={**means, "images": len(evaluation["per_image"]),
                                      "result": repo_relative(result).as_posix()})


def record_end(name: str, folder: Path, records: Path) -> None:
    """Add how a run ended (``done.json``: stop rule met or step cap, final learning rate, bank) to its
    manifest entry."""
    Manifest(records).update(name, end=read_json(folder / "done.json"))


def recipe(config: Config) -> str:
    schedule = (f"constant, then linear to 0 over the last {config.decay:.0%} of the steps" if config.schedule == "wsd"
                else f"halved after {config.patience} validations without improvement")
    return (f"experiment budget: {config.steps} steps of {config.crop}x{config.crop} x {config.batch} crops of "
            f"train/, Adam lr {config.lr} {schedule}, "
            f"aux Adam {config.aux_lr}, clip {config.clip}, {config.precision} autocast for the student "
            f"(teacher fp32), seed {config.seed}")


def teacher_cache() -> Path:
    """The folder of the teacher targets shared by the runs of a seed (:class:`kdlib.teachers.TargetCache`)."""
    return data.cache_root() / "teacher-targets"


def run_experiment(number: int, layout: Layout, jobs: int = 2, compile: bool = True, dry_run: bool = False,
                   only: list[str] | None = None, train: bool = True) -> dict[str, str]:
    """Make every result of experiment ``number`` at ``layout``'s scale: evaluate what has weights, train
    what has not (saying which runs and the estimated time first; ``train=False`` only says it). ``dry_run``
    does nothing but say. Returns each run's state before the call."""
    budget, scale, runs = layout.scale.name, layout.scale, layout.runs
    if number not in grid.EXPERIMENTS:
        raise ValueError(f"experiment must be one of {sorted(grid.EXPERIMENTS)}, not {number}")
    unknown = sorted(set(only or ()) - set(grid.members(number, budget)))
    if unknown:
        from kdlib.models import SpecError

        raise SpecError(f"not runs of experiment {number} at scale {budget}: {', '.join(unknown)} "
                        f"(`kdlib experiment {number} --scale {budget} --dry-run` lists them)")
    names = [n for n in grid.TIERS.get(budget, grid.ORDER) if n in grid.members(number, budget) and (not only or n in only)]
    states = status(names, layout)
    images = layout.images()
    restored = [n for n in names if states[n] == "train" and not dry_run and unpark(n, layout)]
    if restored:
        print(f"resumed from the parked state in {repo_relative(layout.parked).as_posix()}: {', '.join(restored)}")
    to_train = [n for n in names if states[n] == "train"]
    to_evaluate = [n for n in names if states[n] == "evaluate"]
    recorded = [n for n in names if states[n] == "as recorded"]
    print(f"experiment {number} ({budget}): {len(names) - len(to_train) - len(to_evaluate) - len(recorded)} cached, "
          f"{len(to_evaluate)} to evaluate, {len(to_train)} to train"
          + (f", {len(recorded)} as recorded (evaluated by earlier code; their weights are not kept)" if recorded else ""))
    if to_train and (train or dry_run):
        at_once = min(jobs, len(to_train))  # as train_all runs them
        done = {n: trained_steps(n, layout) for n in to_train}
        hours = sum(estimate_s(grid.RUNS[n], grid.RUNS[n].config(budget), teacher_cache(), done[n])
                    for n in to_train) / 3600 / at_once
        print(f"to train (about {hours:.1f} h left, {at_once} at a time, on this machine's estimate):")
        if any(grid.RUNS[n].config(budget).precision == "bf16" for n in to_train) and not native_bf16():
            print(f"  (its rates were measured on CPUs with and without native bfloat16, docs/training.md, "
                  f"\"Cost\"; here, {EMULATED_BF16})")
        for n in to_train:
            print(f"  {n}: {run_dir(grid.RUNS[n].config(budget), runs)}"
                  + (f" (resumes at step {done[n]:,} of {grid.RUNS[n].config(budget).steps:,})" if done[n] else ""))
    if dry_run:
        return states
    save_teacher_reconstructions(names, images, layout.experiments)
    for n in to_evaluate:
        print(f"{n}: evaluated -> {finish(n, layout, images)}")
    if not train:
        if to_train:
            print(f"not trained here: run `kdlib experiment {number} --scale {budget}` to train them")
        return states
    train_all(to_train, layout, jobs, compile and not scale.quick,
              on_done=lambda n: print(f"{n}: trained, evaluated -> {finish(n, layout, images)}"),
              teacher_cache=None if scale.quick else teacher_cache())
    return states


def save_teacher_reconstructions(names: Iterable[str], images: list[Path], out: Path) -> None:
    """``<out>/kodim14/<teacher>.png``: each teacher's decoded kodim14 (real bitstream), for the
    figures that show students beside their teacher."""
    image = next((p for p in images if p.name == grid.KODIM14), None)
    for teacher in {grid.RUNS[n].teacher for n in names} - {None}:
        target = out / "kodim14" / f"{teacher}.png"
        if image is not None and not target.exists():
            evaluate(load_model(teacher), [image], teacher, progress=False, keep={grid.KODIM14: target})


