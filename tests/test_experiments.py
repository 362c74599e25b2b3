import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from kdlib import analysis, experiments
from kdlib.experiments import EXPERIMENTS, RUNS, Run, run_experiment, status
from kdlib.models import read_checkpoint
from kdlib.train import Config, run_dir, train


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


def tiny_grid(monkeypatch, folder):
    runs = {"k": Run("k", 8, teacher="T5"), "s": Run("s", 8, teacher=None)}
    monkeypatch.setattr(experiments, "RUNS", runs)
    monkeypatch.setattr(experiments, "ORDER", list(runs))
    monkeypatch.setattr(experiments, "EXPERIMENTS", {1: list(runs)})
    monkeypatch.setitem(experiments.BUDGETS, "smoke", dict(scale="smoke", steps=2, val_every=2, data=str(folder)))
    return runs


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
def test_runner_trains_evaluates_then_does_nothing(mirror, photo_folder, tmp_path, monkeypatch, capsys):
    tiny_grid(monkeypatch, photo_folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "RESULTS", tmp_path / "results")
    assert set(run_experiment(1, "smoke", tmp_path / "runs", jobs=1).values()) == {"train"}
    out, records = experiments.folders("smoke")
    for name in ("k", "s"):
        result = json.loads((out / f"{name}.json").read_text())
        assert len(result["per_image"]) == 2 and result["model"]["config_hash"] == RUNS_hash(name)
        assert json.loads((records / "manifest.json").read_text())[name]["config_hash"] == RUNS_hash(name)
        assert list(pd.read_csv(records / f"{name}.log.csv.gz").step) == [1, 2]
    assert set(run_experiment(1, "smoke", tmp_path / "runs").values()) == {"cached"}
    (out / "k.json").unlink()  # results lost, run folder kept: evaluate again, train nothing
    assert status(["k", "s"], "smoke", tmp_path / "runs") == {"k": "evaluate", "s": "cached"}
    capsys.readouterr()
    run_experiment(1, "smoke", tmp_path / "runs", dry_run=True)
    assert "1 cached, 1 to evaluate, 0 to train" in capsys.readouterr().out


def RUNS_hash(name):
    return experiments.RUNS[name].config("smoke").hash()


def test_dry_run_names_what_it_would_train_and_the_time(monkeypatch, photo_folder, tmp_path, capsys):
    tiny_grid(monkeypatch, photo_folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "RESULTS", tmp_path / "results")
    run_experiment(1, "smoke", tmp_path / "runs", dry_run=True)
    out = capsys.readouterr().out
    assert "2 to train" in out and " h at 1 runs" not in out and "k: " in out and "s: " in out
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


def test_paired_bootstrap_and_kd_gain(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.uniform(28, 34, 24)

    def result(path, shift, bpp):
        per_image = [{"image": f"kodim{i:02d}.png", "psnr-rgb": p + shift, "ms-ssim-rgb": 0.98, "bpp": bpp,
                      "bpp-estimated": bpp} for i, p in enumerate(base)]
        path.write_text(json.dumps({"per_image": per_image}))
        return path

    kd = [result(tmp_path / f"kd{s}.json", 0.3 + 0.01 * s, 0.5) for s in range(3)]
    scratch = [result(tmp_path / f"sc{s}.json", 0.0, 0.5) for s in range(3)]
    gain = analysis.kd_gain(kd, scratch, 0.025)
    assert gain["d_psnr-rgb"] == pytest.approx(0.31) and gain["d_bpp"] == 0
    assert gain["d_psnr-rgb_low"] == pytest.approx(0.31) and gain["d_psnr-rgb_seed_sd"] == pytest.approx(0.01)
    assert gain["d_rd_cost"] < 0  # better PSNR at the same rate: lower RD cost
    noisy = analysis.paired_bootstrap(rng.normal(0, 1, 24), np.zeros(24))
    assert noisy["low"] < noisy["mean"] < noisy["high"] and noisy["high"] - noisy["low"] > 0.3
    with pytest.raises(ValueError, match="same seeds"):
        analysis.kd_gain(kd, scratch[:2], 0.025)


def _result(path, psnr_shift, bpp):
    per_image = [{"image": f"kodim{i:02d}.png", "psnr-rgb": 30 + 0.1 * i + psnr_shift, "ms-ssim-rgb": 0.98,
                  "bpp": bpp, "bpp-estimated": bpp} for i in range(24)]
    path.write_text(json.dumps({"per_image": per_image}))
    return path


def test_seeds_that_disagree_are_no_gain_however_tight_the_images_interval(tmp_path):
    scratch = [_result(tmp_path / f"sc{s}.json", 0.0, 0.5) for s in range(3)]
    agree = [_result(tmp_path / f"kd{s}.json", 0.3 + 0.01 * s, 0.5) for s in range(3)]
    disagree = [_result(tmp_path / f"kx{s}.json", shift, 0.5) for s, shift in enumerate((0.6, -0.4, 0.2))]
    a, d = analysis.kd_gain(agree, scratch, 0.025), analysis.kd_gain(disagree, scratch, 0.025)
    assert a["d_rd_cost_seeds_low"] < a["d_rd_cost"] < a["d_rd_cost_seeds_high"] < 0
    assert analysis.verdict(a) == "KD better"
    assert analysis.verdict(a, better="T5 better", worse="T1 better") == "T5 better"
    # every image moves alike, so the images' interval excludes zero; the seeds' interval does not
    assert d["d_rd_cost_high"] < 0 and d["d_rd_cost_seeds_low"] < 0 < d["d_rd_cost_seeds_high"]
    assert analysis.verdict(d).startswith("not established (") and "seeds' interval" in analysis.verdict(d)
    worse = analysis.kd_gain(scratch, agree, 0.025)  # the arms swapped: the anchor is better
    assert analysis.verdict(worse) == "scratch better"


def test_one_seed_is_never_enough_whatever_its_images_interval(tmp_path):
    one = analysis.kd_gain([_result(tmp_path / "kd.json", -0.3, 0.5)], [_result(tmp_path / "sc.json", 0.0, 0.5)], 0.025)
    assert np.isnan(one["d_rd_cost_seeds_low"]) and one["d_rd_cost"] > 0 and one["d_rd_cost_low"] > 0
    said = analysis.verdict(one)
    assert said.startswith("one seed: not established (+") and "over the images" in said
    single = {k: v for k, v in one.items() if k != "seeds"}  # kdlib.analysis.compare's columns: one seed
    assert analysis.verdict(single) == said
    assert analysis.verdict({"d_rd_cost": float("nan"), "d_rd_cost_low": 0, "d_rd_cost_high": 0}) == "not measured"


def test_run_spread_is_the_sd_of_the_seeds_mean_rd_cost(tmp_path):
    def result(name, psnr):
        per_image = [{"image": f"kodim{i:02d}.png", "psnr-rgb": psnr + 0.01 * i, "ms-ssim-rgb": 0.98, "bpp": 0.5,
                      "bpp-estimated": 0.5} for i in range(24)]
        (tmp_path / f"{name}.json").write_text(json.dumps({"per_image": per_image}))
        return tmp_path / f"{name}.json"

    paths = [result(f"s{s}", 30.0 + 0.1 * s) for s in range(3)]
    costs = [analysis.per_image(p, 0.025)["rd_cost"].mean() for p in paths]
    spread = analysis.run_spread(paths, 0.025)
    assert spread > 0 and spread == pytest.approx(np.std(costs, ddof=1))
    assert np.isnan(analysis.run_spread(paths[:1], 0.025))


def test_seed_noise_reads_the_seeded_pairs_of_one_size(tmp_path):
    rows = [{"name": f"{arm}{s}", "N": N, "arm": arm, "seed": s, "done": True,
             "path": _result(tmp_path / f"{arm}{N}-{s}.json", shift, 0.5)}
            for N in (16, 64) for s in range(3)
            for arm, shift in (("kd", 0.1 * s * (N == 64)), ("scratch", 0.0))]
    runs = pd.DataFrame(rows + [{"name": "kd3", "N": 64, "arm": "kd", "seed": 3, "done": True, "path": rows[0]["path"]}])
    noise = analysis.seed_noise(runs, 64)
    gain = analysis.kd_gain([r["path"] for r in rows[6::2]], [r["path"] for r in rows[7::2]], 0.025)
    assert noise["seeds"] == [0, 1, 2] and noise["paired_sd"] > 0
    assert noise["paired_sd"] == pytest.approx(gain["d_rd_cost_seed_sd"])
    scratch_cost = np.mean([analysis.per_image(r["path"], 0.025)["rd_cost"].mean() for r in rows[7::2]])
    assert noise["paired_rel"] == pytest.approx(noise["paired_sd"] / scratch_cost)
    assert noise["run_sd"] > 0 and analysis.seed_noise(runs, 16)["paired_sd"] == 0
    assert np.isnan(analysis.seed_noise(runs, 32)["paired_sd"])


def test_compare_is_test_minus_anchor_and_refuses_mixed_lambdas(tmp_path):
    def result(name, psnr):
        per_image = [{"image": f"kodim{i:02d}.png", "psnr-rgb": psnr + 0.01 * i, "ms-ssim-rgb": 0.98, "bpp": 0.5,
                      "bpp-estimated": 0.5} for i in range(24)]
        (tmp_path / f"{name}.json").write_text(json.dumps({"per_image": per_image}))
        return {"name": name, "path": str(tmp_path / f"{name}.json")}

    done = pd.DataFrame([{**result("a", 30.2), "lmbda": 0.025}, {**result("b", 30.0), "lmbda": 0.025},
                         {**result("c", 30.0), "lmbda": 0.013}])
    d = analysis.compare(done, "a", "b")
    assert d["d_psnr-rgb"] == pytest.approx(0.2) and d["d_rd_cost"] < 0 and d["d_rd_cost_high"] < 0
    assert np.isnan(analysis.compare(done, "a", "missing")["d_rd_cost"])
    with pytest.raises(ValueError, match="different lambdas"):
        analysis.compare(done, "a", "c")


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


def test_an_unfinished_run_parked_in_the_repository_resumes_in_a_new_session(photo_folder, tmp_path, monkeypatch):
    tiny_grid(monkeypatch, photo_folder)
    monkeypatch.setitem(experiments.BUDGETS, "smoke", dict(scale="smoke", steps=4, val_every=2, data=str(photo_folder)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiments, "RESULTS", tmp_path / "results")
    config = experiments.RUNS["s"].config("smoke")
    whole = train(config, runs=tmp_path / "whole", progress=False)
    train(config, runs=tmp_path / "old", progress=False, stop_after=2)
    assert experiments.park("smoke", tmp_path / "old") == ["s"]  # "k" never started: nothing to park
    assert experiments.unpark("s", "smoke", tmp_path / "new")  # a new session: runs/ is gone
    assert not experiments.unpark("s", "smoke", tmp_path / "new")  # its own state now wins
    assert read_checkpoint(run_dir(config, tmp_path / "new") / "last.pth.tar")["meta"]["steps"] == 2
    resumed = train(config, runs=tmp_path / "new", progress=False)
    for key, value in read_checkpoint(whole)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(resumed)["state_dict"][key]), key
