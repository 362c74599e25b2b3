import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdlib import analysis, experiments, grid
from kdlib.experiments import run_experiment, status
from kdlib.grid import EXPERIMENTS, RUNS, Run
from kdlib.models import read_checkpoint
from kdlib.scales import Layout
from kdlib import train as training
from kdlib.train import Config, run_dir, train

REPO = Path(__file__).resolve().parent.parent


def test_grid_is_declared_once_and_paired():
    for number, names in EXPERIMENTS.items():
        assert names and all(n in RUNS for n in names), number
    e1 = EXPERIMENTS[1]
    assert len(e1) == 18 and sum(RUNS[n].seed > 0 for n in e1) == 8
    for name in (n for n in e1 if RUNS[n].arm == "kd"):
        kd, twin = RUNS[name].config(), RUNS[name.replace("-kd-", "-scratch-")].config()
        differ = {k for k, v in vars(kd).items() if getattr(twin, k) != v}
        assert differ <= {"name", "teacher", "w_rd"}, differ  # only the loss (scratch: RD alone)
        assert kd.w_rd == 0.6 and kd.w_latent == kd.w_recon == 0.2  # the authors' weights
    assert {RUNS[n].release for n in e1 if RUNS[n].release} == {"S16", "S32", "S64", "S96", "S112"}


def test_the_long_tiers_extra_seeds_are_paired_and_only_in_the_long_tier():
    long = grid.members(1, "long")
    assert long == grid.LONG and len(long) == len(set(long)) == 16  # N = 16: seeds 0-4; N = 32: 0-2
    for name in (n for n in long if RUNS[n].arm == "kd"):
        kd, twin = RUNS[name].config("long"), RUNS[grid.twin(name)].config("long")
        assert {k for k, v in vars(kd).items() if getattr(twin, k) != v} <= {"name", "teacher", "w_rd"}
    extra = [n for n in long if RUNS[n].seed > 2]
    assert extra and all(RUNS[n].N == 16 and RUNS[n].experiments == () for n in extra)
    assert not set(extra) & set(grid.members(1, "cpu"))  # the 10k grid keeps its 18 runs


def fixed_schedule(config):
    """The learning rate of every step of a run, when it is fixed before training (None: it is not)."""
    return None if config.schedule is None else [training.lr_at(config, s) for s in range(config.steps)]


@pytest.mark.parametrize("budget", ["equal", pytest.param("long", marks=pytest.mark.xfail(
    strict=True, reason="the plateau tier: each arm's rate follows its own validation losses"))])
def test_every_pair_of_a_tier_trains_the_same_steps_at_the_same_rates(budget):
    tier = grid.members(1, budget)
    pairs = [(n, grid.twin(n)) for n in tier if RUNS[n].arm == "kd"]
    assert pairs and all(s in tier for _, s in pairs)
    for kd, scratch in pairs:
        a, b = RUNS[kd].config(budget), RUNS[scratch].config(budget)
        assert {k for k, v in vars(a).items() if getattr(b, k) != v} <= {"name", "teacher", "w_rd"}
        assert a.steps == b.steps and fixed_schedule(a) is not None and fixed_schedule(a) == fixed_schedule(b)
        assert a.converge_lr is None  # no stop rule: both arms run every step


def test_the_equal_tier_is_declared_in_advance():
    tier = grid.EQUAL
    assert tier[:6] == ["e1-kd-N16-s0", "e1-scratch-N16-s0", "e1-kd-N16-s0-b50", "e1-scratch-N16-s0-b50",
                        "e1-kd-N16-s0-b25", "e1-scratch-N16-s0-b25"]  # the pilot pair first
    full = [n for n in tier if RUNS[n].fraction == 1 and RUNS[n].teacher]
    assert sorted((RUNS[n].N, RUNS[n].seed) for n in full) == [(16, s) for s in range(8)] + [(64, 0), (64, 1)]
    for name in (n for n in tier if RUNS[n].trunk):
        branch, trunk = RUNS[name].config("equal"), RUNS[RUNS[name].trunk].config("equal")
        assert branch.steps == trunk.steps * RUNS[name].fraction and branch.steps in (16_000, 32_000)
        assert dataclasses.replace(trunk, name=branch.name, steps=branch.steps) == branch  # a branch, nothing else
        assert training.stable_end(branch) in experiments.branches(RUNS[name].trunk, "equal")[0]
    lambdas = [n for n in tier if RUNS[n].lmbda != 0.025]
    assert [(RUNS[n].lmbda, RUNS[n].fraction) for n in lambdas] == [(0.013, 1), (0.0483, 1), (0.013, 0.5), (0.0483, 0.5),
                                                                     (0.013, 0.25), (0.0483, 0.25)]
    assert all(RUNS[n].teacher is None and RUNS[n].N == 16 and RUNS[n].seed == 0 for n in lambdas)
    N = [RUNS[n].N for n in tier]  # the lambdas right after N = 16's pairs, before N = 64's
    assert tier.index(lambdas[0]) == N.index(64) - len(lambdas) and N[:N.index(64)].count(16) == N.index(64)
    assert not set(tier) & set(grid.members(1, "cpu")) - {n for n in tier if RUNS[n].fraction == 1}


def tiny_grid(monkeypatch, folder):
    runs = {"k": Run("k", 8, teacher="T5"), "s": Run("s", 8, teacher=None)}
    monkeypatch.setattr(grid, "RUNS", runs)
    monkeypatch.setattr(grid, "ORDER", list(runs))
    monkeypatch.setattr(grid, "EXPERIMENTS", {1: list(runs)})
    monkeypatch.setitem(grid.BUDGETS, "smoke", dict(scale="smoke", steps=2, val_every=2, data=str(folder)))
    return runs


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
def test_runner_trains_evaluates_then_does_nothing(mirror, photo_folder, tmp_path, monkeypatch, capsys):
    tiny_grid(monkeypatch, photo_folder)
    layout = Layout.of("smoke", tmp_path)
    assert set(run_experiment(1, layout, jobs=1).values()) == {"train"}
    out, records = layout.experiments, layout.records
    for name in ("k", "s"):
        result = json.loads((out / f"{name}.json").read_text())
        assert len(result["per_image"]) == 2 and result["model"]["config_hash"] == RUNS_hash(name)
        assert json.loads((records / "manifest.json").read_text())[name]["config_hash"] == RUNS_hash(name)
        assert list(pd.read_csv(records / f"{name}.log.csv.gz").step) == [1, 2]
    assert set(run_experiment(1, layout).values()) == {"cached"}
    (out / "k.json").unlink()  # results lost, run folder kept: evaluate again, train nothing
    assert status(["k", "s"], layout) == {"k": "evaluate", "s": "cached"}
    capsys.readouterr()
    run_experiment(1, layout, dry_run=True)
    assert "1 cached, 1 to evaluate, 0 to train" in capsys.readouterr().out
    # evaluated by other evaluation code: made again where its weights are here, else it stands as recorded
    result = json.loads((out / "s.json").read_text())
    (out / "s.json").write_text(json.dumps({**result, "model": {**result["model"], "code": "earlier"}}))
    assert status(["s"], layout) == {"s": "evaluate"}
    shutil.rmtree(run_dir(RUNS_config("s"), layout.runs))
    assert status(["s"], layout) == {"s": "as recorded"}
    run_experiment(1, layout, dry_run=True)
    assert "1 to evaluate, 0 to train, 1 as recorded (evaluated by earlier code" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs 2 cores to tell one thread from all")
def test_a_lone_run_trains_on_every_core(mirror, photo_folder, tmp_path, monkeypatch):
    tiny_grid(monkeypatch, photo_folder)
    experiments.train_all(["s"], Layout.of("smoke", tmp_path), jobs=2, compile=False)
    meta = read_checkpoint(run_dir(RUNS_config("s"), tmp_path / "runs") / "last.pth.tar")["meta"]
    assert meta["threads"] == torch.get_num_threads()


def RUNS_hash(name):
    return RUNS_config(name).hash()


def RUNS_config(name):
    return grid.RUNS[name].config("smoke")


def test_dry_run_names_what_it_would_train_and_the_time(monkeypatch, photo_folder, tmp_path, capsys):
    tiny_grid(monkeypatch, photo_folder)
    run_experiment(1, Layout.of("smoke", tmp_path), dry_run=True)
    out = capsys.readouterr().out
    assert "2 to train" in out and "h left, 2 at a time" in out and "k: " in out and "s: " in out
    assert not (tmp_path / "runs").exists()


KILLED = """
import sys
from kdlib.train import Config, train
train(Config(name="kill", N=8, M=16, scale="smoke", data=sys.argv[1], crop=64, steps=40, val_every=5),
      runs=sys.argv[2], progress=False)
"""


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
def test_a_run_killed_anywhere_loses_at_most_one_checkpoint_interval(photo_folder, tmp_path):
    config = Config(name="kill", N=8, M=16, scale="smoke", data=str(photo_folder), crop=64, steps=40, val_every=5)
    folder = run_dir(config, tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(photo_folder), str(tmp_path / "killed")])
    deadline = time.time() + 120
    while experiments.last_step(folder) < 17 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reached = experiments.last_step(folder)
    assert 17 <= reached < 40
    saved = read_checkpoint(folder / "last.pth.tar")["meta"]["steps"]
    assert reached - saved < config.val_every
    resumed = train(config, runs=tmp_path / "killed", progress=False)
    whole = train(config, runs=tmp_path / "whole", progress=False)
    for key, value in read_checkpoint(whole)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(resumed)["state_dict"][key]), key


def test_a_kd_run_with_every_target_stored_is_estimated_at_its_scratch_twins_rate(tmp_path):
    from kdlib import teachers
    from kdlib.train import teacher_cache_key

    run = RUNS["e1-kd-N64-s0"]
    config = run.config("cpu")
    scratch = experiments.estimate_s(RUNS["e1-scratch-N64-s0"], config)
    computing = experiments.estimate_s(run, config, tmp_path)
    folder = teachers.key_folder(tmp_path, teacher_cache_key(config))
    folder.mkdir(parents=True)
    for chunk in range(config.steps // teachers.CHUNK):
        for suffix in (".pt", ".x.pt"):
            (folder / f"{chunk}{suffix}").touch()
    assert teachers.stored(tmp_path, teacher_cache_key(config), config.steps) == {"y_hat"}
    assert experiments.estimate_s(run, config, tmp_path) == computing > scratch
    (folder / "19.x.f32").touch()
    assert teachers.stored(tmp_path, teacher_cache_key(config), config.steps) == {"y_hat"}  # 0..18 missing
    for chunk in range(19):
        (folder / f"{chunk}.x.f32").touch()
    assert teachers.stored(tmp_path, teacher_cache_key(config), config.steps) == {"y_hat", "x_hat"}
    assert experiments.estimate_s(run, config, tmp_path) == pytest.approx(scratch / experiments.STORED_TARGETS)


def test_the_dry_runs_estimate_counts_only_the_steps_left():
    """`kdlib experiment --dry-run` estimates a resumed run from the step its state holds; a branch parked at its
    trunk's stable end has its decay left."""
    run, branch = RUNS["e1-kd-N64-s0"], RUNS["e1-kd-N64-s0-b25"]
    config, decay_config = run.config("equal"), branch.config("equal")
    whole, decay = experiments.estimate_s(run, config), experiments.estimate_s(branch, decay_config)
    assert experiments.estimate_s(run, config, start=16_000) == pytest.approx(0.75 * whole)
    assert decay == pytest.approx(0.2 * whole / 4)  # a quarter of the length, its last 20 % decayed
    assert experiments.estimate_s(branch, decay_config, start=training.stable_end(decay_config)) == pytest.approx(decay)
    assert experiments.estimate_s(branch, decay_config, start=14_400) == pytest.approx(decay / 2)


def test_an_unfinished_run_parked_in_the_repository_resumes_in_a_new_session(photo_folder, tmp_path, monkeypatch):
    tiny_grid(monkeypatch, photo_folder)
    monkeypatch.setitem(grid.BUDGETS, "smoke", dict(scale="smoke", steps=4, val_every=2, data=str(photo_folder)))
    config = grid.RUNS["s"].config("smoke")
    session = {f: Layout.of("smoke", tmp_path, runs=tmp_path / f) for f in ("old", "new", "stale")}
    whole = train(config, runs=tmp_path / "whole", progress=False)
    train(config, runs=tmp_path / "old", progress=False, stop_after=2)
    assert experiments.park(session["old"]) == ["s"]  # "k" never started: nothing to park
    assert experiments.trained_steps("s", session["new"]) == 2 and experiments.trained_steps("k", session["new"]) == 0
    assert experiments.unpark("s", session["new"])  # a new session: runs/ is gone
    assert not experiments.unpark("s", session["new"])  # its own state now wins
    assert read_checkpoint(run_dir(config, tmp_path / "new") / "last.pth.tar")["meta"]["steps"] == 2
    train(config, runs=tmp_path / "stale", progress=False, stop_after=1)  # an earlier session's runs/, left behind
    assert experiments.park(session["stale"]) == []  # never moves the parked state backwards
    assert experiments.unpark("s", session["stale"])  # the parked state, further along, wins
    assert read_checkpoint(run_dir(config, tmp_path / "stale") / "last.pth.tar")["meta"]["steps"] == 2
    resumed = train(config, runs=tmp_path / "new", progress=False)
    for key, value in read_checkpoint(whole)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(resumed)["state_dict"][key]), key


def test_a_long_student_is_released_only_once_converged_and_better_than_the_grids(photo_folder, tmp_path, monkeypatch):
    from kdlib.registry import Manifest, record

    layout, published = Layout.of("long", tmp_path), (REPO / "checkpoints" / "manifest.json").read_bytes()
    layout.checkpoints.mkdir()
    (tmp_path / "results").mkdir()
    config = Config(name="t", N=8, M=16, scale="smoke", data=str(photo_folder), crop=64, steps=2, val_every=2)
    folder = run_dir(config, tmp_path / "runs")
    train(config, runs=tmp_path / "runs", progress=False)
    name, records = "e1-kd-N16-s0", layout.records
    record(folder, name, records)
    shutil.copyfile(folder / "best.pth.tar", records / f"{name}.pth.tar")

    def result(path, psnr, bpp):
        images = [{"image": f"kodim{i:02d}", "psnr-rgb": psnr + i / 10, "ms-ssim-rgb": 0.9, "bpp": bpp,
                   "bpp-estimated": bpp} for i in range(3)]
        path.write_text(json.dumps({"per_image": images, "results": {k: [images[0][k]] for k in images[0] if k != "image"}}))
        return path

    result(tmp_path / "results" / "S16.json", 27.0, 0.54)  # the paper grid's S16
    better, worse = result(tmp_path / "better.json", 29.6, 0.50), result(tmp_path / "worse.json", 26.0, 0.60)
    Manifest(records).update(name, end={"converged": False, "steps": 2})
    assert experiments.release_student(name, better, layout) is None  # not converged: hit the cap
    Manifest(records).update(name, end={"converged": True, "steps": 2})
    assert experiments.release_student(name, worse, layout) is None  # converged but not better
    assert not (layout.checkpoints / "S16-long.pth.tar").exists()
    assert experiments.release_student(name, better, layout) == "S16-long"
    entry = Manifest(layout.checkpoints).get("S16-long")
    assert entry["run"] == name and entry["end"]["converged"] and entry["kodak"]["psnr-rgb"] == 29.6
    assert entry["config_hash"] == Manifest(records).get(name)["config_hash"] and "long budget" in entry["recipe"]
    assert list(pd.read_csv(layout.checkpoints / "S16-long.log.csv").step) == list(pd.read_csv(folder / "log.csv").step)
    assert Manifest(layout.checkpoints).weights("S16-long") == layout.checkpoints / "S16-long.pth.tar"
    released = (layout.checkpoints / "S16-long.pth.tar").stat().st_mtime_ns
    assert experiments.release_student(name, better, layout) == "S16-long"  # a re-evaluation: Kodak noted again,
    assert (layout.checkpoints / "S16-long.pth.tar").stat().st_mtime_ns == released  # the weights not re-released
    assert (REPO / "checkpoints" / "manifest.json").read_bytes() == published  # the repository's own: untouched


def test_an_equal_tier_student_is_released_only_after_every_step_and_better_than_the_grids():
    """Issue 40 item 6: S64-long, declared before N = 64 trained, is the equal tier's N = 64 seed-0 KD run, released
    once it ran its whole fixed schedule (no stop rule) and beat S64; the tiers' releases table lists it."""
    assert grid.TIER_RELEASES["equal"] == {"e1-kd-N64-s0": "S64-long"} and Layout.of("equal").scale.release_students
    config = RUNS["e1-kd-N64-s0"].config("equal")
    assert experiments.ended_by_rule(config, {"steps": 64_000}) and not experiments.ended_by_rule(config, {"steps": 63_500})
    assert not experiments.ended_by_rule(RUNS["e1-kd-N16-s0"].config("long"), {"steps": 150_000, "converged": False})
    assert "linear to 0 over the last 20% of the steps" in experiments.recipe(config)
    table = analysis.tier_releases(Layout.of("cpu"))
    assert list(table.name) == ["S16", "S16-long", "S32", "S32-long", "S64", "S64-long"]
    assert list(table.budget) == ["cpu", "long", "cpu", "long", "cpu", "equal"]


def test_a_branch_not_yet_started_is_parked_from_its_trunks_kept_state_and_resumes(photo_folder, tmp_path, monkeypatch):
    """make park at a session's end: a branch whose trunk has passed the branch's constant phase is parked
    as that state (with its own config), and a new session (no runs/) resumes it there."""
    short = Config(name="t-b50", N=8, M=16, scale="smoke", data=str(photo_folder), crop=64, steps=4, val_every=1,
                   schedule="wsd", decay=0.5)
    long = dataclasses.replace(short, name="t", steps=8)
    runs = {"t": Run("t", 8, teacher=None, fraction=1.0), "t-b50": Run("t-b50", 8, teacher=None, fraction=0.5, trunk="t")}
    monkeypatch.setattr(grid, "RUNS", runs)
    monkeypatch.setattr(Run, "config", lambda self, budget="cpu": short if self.fraction != 1 else long)
    layout = Layout.of("equal", tmp_path)
    train(long, runs=layout.runs, progress=False, keep_states=(training.stable_end(short),), stop_after=3)
    assert experiments.park(layout, ["t-b50"]) == ["t-b50"]
    assert (tmp_path / "checkpoints" / "runs" / "equal" / "parked" / "t-b50" / "last.pth.tar").exists()
    shutil.rmtree(layout.runs)  # a new session
    assert experiments.unpark("t-b50", layout)
    folder = run_dir(short, tmp_path / "runs")
    assert read_checkpoint(folder / "last.pth.tar")["meta"]["steps"] == training.stable_end(short) == 2


def test_the_grid_loads_no_trainer_and_the_runner_no_analysis():
    """The grid (declarations) and the runner are separate floors: reading the grid loads neither the
    trainer nor the runner, and the runner does not import the analysis that reads its results (the
    import cycle of issue 43)."""
    import subprocess
    import sys

    script = ("import sys; import kdlib.grid; grid = {m for m in sys.modules if m.startswith('kdlib.')}; "
              "import kdlib.experiments; runner = {m for m in sys.modules if m.startswith('kdlib.')}; "
              "print(sorted(grid), sorted(runner))")
    grid_modules, runner_modules = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                                  check=True).stdout.split("] [")
    assert "kdlib.train" not in grid_modules and "kdlib.experiments" not in grid_modules, grid_modules
    assert "kdlib.analysis" not in runner_modules and "kdlib.train" in runner_modules, runner_modules


def test_runs_are_found_by_family_and_fields_and_no_name_is_built_outside_the_grid():
    """kdlib.grid.select / one / rows are the one way to pick runs: every run has a family, a family's
    runs differ in N, lambda, seed or budget only, and no module or notebook parses or builds a run name."""
    import json
    import re

    assert all(run.family for run in grid.RUNS.values())
    assert grid.select(family="e4-l2") == ["e4-l2-N16", "e4-l2-N64", "e4-l2-N112"]
    assert grid.one(experiment=1, arm="scratch", N=64, seed=0) == "e1-scratch-N64-s0"
    assert set(grid.select(experiment=2)) == {n for n in grid.EXPERIMENTS[2] if grid.RUNS[n].experiment == 2}
    with pytest.raises(KeyError, match="runs have"):
        grid.one(family="e4-l2")
    frame = pd.DataFrame({"name": ["e4-l2-N64", "e1-kd-N64-s0", "T5"]})
    assert list(grid.rows(frame, family="e4-l2").name) == ["e4-l2-N64"]
    built = re.compile(r"""(f["']e[1-5]-|startswith\(["']e[1-5]|\.loc\[["']e[1-5]-|(?<!family )== ["']e[1-5]-|RUNS\[["']e[1-5]-)""")
    sources = {p: p.read_text() for p in (REPO / "kdlib").glob("*.py") if p.name != "grid.py"}
    for notebook in (REPO / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text())["cells"]
        sources[notebook] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    offenders = {str(p.name): built.findall(text) for p, text in sources.items() if built.search(text)}
    assert not offenders, offenders


CTRL_C = """
import sys, time
from pathlib import Path
from kdlib.experiments import workers

def work(folder, i):
    (Path(folder) / f"started-{i}").touch()
    time.sleep(600)
    (Path(folder) / f"ended-{i}").touch()

if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a background job inherits SIGINT ignored)
    with workers(2) as pool:
        futures = [pool.submit(work, sys.argv[1], i) for i in range(4)]
        while True:
            time.sleep(0.2)
"""


def test_ctrl_c_stops_the_running_calls_and_starts_no_queued_one(tmp_path):
    # Ctrl-C signals the terminal's whole process group: the workers too. Before, each worker dropped
    # its call and took the next queued one, and the pool's exit waited for them.
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], start_new_session=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(p.name for p in tmp_path.glob("started-*")) == ["started-0", "started-1"]
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) != 0  # KeyboardInterrupt, not 600 s of queued work (a loaded machine is slow)
        time.sleep(1)
        assert sorted(p.name for p in tmp_path.glob("*ed-*")) == ["started-0", "started-1"]
        group = subprocess.run(["ps", "-o", "stat=,pid=,args=", "-g", str(proc.pid)], capture_output=True, text=True).stdout
        assert [line for line in group.splitlines() if not line.lstrip().startswith("Z")] == []  # no worker left running
    finally:
        subprocess.run(["pkill", "-KILL", "-g", str(proc.pid)])


@pytest.mark.parametrize("budget", ["cpu", "long", "equal"])
def test_reading_a_training_table_hashes_no_checkpoint(monkeypatch, budget):
    from kdlib import analysis

    def hashed(path):
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(training, "file_digest", hashed)
    table = analysis.training_status(1, Layout.of(budget))
    assert len(table) and set(table.state) - {"not started"}
