import dataclasses
import json
import math
import sys
import types

import pytest
import torch

from kdlib import registry
from kdlib import train as training
from kdlib.models import load_model, read_checkpoint
from kdlib.train import Config, TrainingError, run_dir, train


def config(folder, **kw):
    return Config(**{"name": "t", "N": 8, "M": 16, "scale": "smoke", "data": str(folder), "crop": 64,
                     "steps": 4, "val_every": 2, **kw})


def test_resume_continues_the_same_run(photo_folder, tmp_path):
    whole = train(config(photo_folder), runs=tmp_path / "a", progress=False)
    train(config(photo_folder), runs=tmp_path / "b", progress=False, stop_after=2)
    b = run_dir(config(photo_folder), tmp_path / "b")
    assert read_checkpoint(b / "last.pth.tar")["meta"]["steps"] == 2 and not (b / "done.json").exists()
    resumed = train(config(photo_folder), runs=tmp_path / "b", progress=False)
    for key, value in read_checkpoint(whole)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(resumed)["state_dict"][key]), key
    assert len((b / "log.csv").read_text().splitlines()) == 5  # header + 4 steps, none twice


def test_a_run_resumed_on_another_machine_records_each_part(photo_folder, tmp_path, monkeypatch, capsys):
    """Where a run trained (machine, crop bank) is in its checkpoint; a resume elsewhere adds a segment,
    says so, and done.json keeps every segment."""
    monkeypatch.setattr(training, "machine_kind", lambda: "CPU A")
    train(config(photo_folder), runs=tmp_path, progress=False, stop_after=2)
    folder = run_dir(config(photo_folder), tmp_path)
    assert read_checkpoint(folder / "last.pth.tar")["meta"]["segments"] == [
        {"from_step": 0, "machine": "CPU A", "bank": None}]
    monkeypatch.setattr(training, "machine_kind", lambda: "CPU B")
    train(config(photo_folder), runs=tmp_path, progress=False)
    assert "resuming at step 2 on CPU B" in capsys.readouterr().out
    assert json.loads((folder / "done.json").read_text())["segments"] == [
        {"from_step": 0, "machine": "CPU A", "bank": None}, {"from_step": 2, "machine": "CPU B", "bank": None}]
    same = training.with_segment([{"from_step": 0, "machine": "CPU B", "bank": "b1"}], 5, "b1")
    assert same == [{"from_step": 0, "machine": "CPU B", "bank": "b1"}]  # same machine and bank: one part
    older = training.with_segment([{"from_step": 0, "machine": None, "bank": None}], 7, "b2", say=False)
    assert older[-1] == {"from_step": 7, "machine": "CPU B", "bank": "b2"}  # a state saved before segments


def test_machine_kind_tells_two_kinds_of_one_cpu_name_apart(monkeypatch):
    monkeypatch.setattr(training, "cpu_model", lambda: "AMD EPYC")
    monkeypatch.setattr(training, "native_bf16", lambda: False)
    monkeypatch.setattr(training.torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert training.machine_kind() == "AMD EPYC (AVX2, emulated bf16)"
    monkeypatch.setattr(training, "native_bf16", lambda: True)
    monkeypatch.setattr(training.torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert training.machine_kind() == "AMD EPYC (AVX512, native bf16)"


def test_finished_run_is_cached(photo_folder, tmp_path, monkeypatch):
    train(config(photo_folder), runs=tmp_path, progress=False)
    monkeypatch.setattr(training, "Hyperprior", None)  # would fail if anything were rebuilt
    assert train(config(photo_folder), runs=tmp_path, progress=False).exists()


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
def test_student_from_teacher(photo_folder, tmp_path):
    teacher = train(config(photo_folder, N=16), runs=tmp_path, progress=False)
    student = train(config(photo_folder, name="s", teacher=str(teacher)), runs=tmp_path, progress=False)
    meta = load_model(student).meta
    assert meta["config"]["teacher"] == str(teacher) and meta["steps"] == 4
    header = (run_dir(config(photo_folder, name="s", teacher=str(teacher)), tmp_path) / "log.csv").read_text()
    assert "latent_loss" in header and "recon_loss" in header


def test_nan_stops_and_keeps_last_good(photo_folder, tmp_path, monkeypatch):
    real = training.KDLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kw):
        terms = real(self, *args, **kw)
        calls["n"] += 1
        if self.training and calls["n"] > 3:
            terms["loss"] = terms["loss"] * math.nan
        return terms

    monkeypatch.setattr(training.KDLoss, "forward", poisoned)
    cfg = config(photo_folder, steps=6, val_every=2)
    with pytest.raises(TrainingError, match="loss is nan at step"):
        train(cfg, runs=tmp_path, progress=False)
    state = read_checkpoint(run_dir(cfg, tmp_path) / "last.pth.tar")
    assert state["meta"]["steps"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_bad_scale():
    with pytest.raises(TrainingError, match="scale must be"):
        Config(name="x", scale="huge")
    with pytest.raises(TrainingError, match="multiple of 64"):
        Config(name="x", crop=100)


def test_continuing_a_checkpoint(photo_folder, tmp_path):
    first = train(config(photo_folder), runs=tmp_path, progress=False)
    again = Config.continuing(first, steps=2)
    assert again.init.startswith("sha256:") and again.hash() != config(photo_folder).hash()
    second = train(again, runs=tmp_path, progress=False)
    assert load_model(second).meta["init_path"] == str(first)
    with pytest.raises(TrainingError, match="continuing"):
        train(dataclasses.replace(again, init="sha256:00"), runs=tmp_path / "x", progress=False)


def test_vimeo90k_layout(tmp_path):
    """The paper's data path: CompressAI's Vimeo90K triplet loader."""
    import numpy as np
    from PIL import Image

    for seq in ("00001/0001", "00001/0002"):
        folder = tmp_path / "vimeo" / "sequences" / seq
        folder.mkdir(parents=True)
        for i in (1, 2, 3):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    (tmp_path / "vimeo" / "tri_trainlist.txt").write_text("00001/0001\n")
    (tmp_path / "vimeo" / "tri_testlist.txt").write_text("00001/0002\n")
    cfg = config(tmp_path / "vimeo", dataset="vimeo90k", steps=2, val_every=2)
    assert train(cfg, runs=tmp_path / "runs", progress=False).exists()
    with pytest.raises(Exception, match="No Vimeo90K"):
        train(config(tmp_path / "missing", dataset="vimeo90k"), runs=tmp_path / "runs", progress=False)


def test_teacher_counts_by_content(photo_folder, tmp_path):
    import shutil

    teacher = train(config(photo_folder, N=16), runs=tmp_path, progress=False)
    copy = tmp_path / "same-teacher.pth.tar"
    shutil.copyfile(teacher, copy)
    assert config(photo_folder, teacher=str(teacher)).hash() == config(photo_folder, teacher=str(copy)).hash()
    other = train(config(photo_folder, N=16, seed=1), runs=tmp_path, progress=False)
    assert config(photo_folder, teacher=str(other)).hash() != config(photo_folder, teacher=str(teacher)).hash()


def test_release_of_continued_runs_counts_every_run(photo_folder, tmp_path, monkeypatch):
    released = tmp_path / "released"
    released.mkdir()
    first = config(photo_folder)
    train(first, runs=tmp_path, progress=False)
    earlier = run_dir(first, tmp_path)
    second = Config.continuing(earlier / "last.pth.tar", lr=1e-5)
    train(second, runs=tmp_path, progress=False)
    entry = registry.release(run_dir(second, tmp_path), "X", released, "test", after=earlier)
    assert entry["steps_run"] == 8 and entry["init"].startswith("sha256:")
    log = (tmp_path / "released" / "X.log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, 9))
    third = Config.continuing(run_dir(second, tmp_path) / "last.pth.tar", lr=2e-5)
    train(third, runs=tmp_path, progress=False)
    entry = registry.release(run_dir(third, tmp_path), "X", released, "test", after=[earlier, run_dir(second, tmp_path)])
    assert entry["steps_run"] == 12 and entry["steps"] in (10, 12)
    log = (tmp_path / "released" / "X.log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, 13))
    assert json.loads((tmp_path / "released" / "manifest.json").read_text())["X"]["sha256"] == entry["sha256"]
    best_step = entry["steps"]
    fourth = Config.continuing(released / "X.pth.tar", lr=1e-5)  # a later session: the released weights go on
    train(fourth, runs=tmp_path, progress=False)
    entry = registry.release(run_dir(fourth, tmp_path), "X", released, "test", after="X")
    assert entry["steps_run"] == best_step + 4
    log = (tmp_path / "released" / "X.log.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in log[1:]] == list(range(1, best_step + 5))
    with pytest.raises(TrainingError, match="neither a run directory"):
        registry.release(run_dir(fourth, tmp_path), "X", released, "test", after="no-such-run")


def test_tensorboard_scalars_when_installed(photo_folder, tmp_path, monkeypatch):
    events = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is optional)
        def __init__(self, log_dir, purge_step=None):
            events.append(("open", log_dir, purge_step))

        def add_scalar(self, tag, value, step):
            events.append((tag, value, step))

        def close(self):
            events.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    train(config(photo_folder), runs=tmp_path, progress=False, stop_after=2)
    train(config(photo_folder), runs=tmp_path, progress=False)
    folder = str(run_dir(config(photo_folder), tmp_path))
    assert [e for e in events if e[0] == "open"] == [("open", folder, 1), ("open", folder, 3)]  # resume purges later events
    assert [e[2] for e in events if e[0] == "bpp_loss"] == [1, 2, 3, 4]
    assert {e[0] for e in events} >= {"loss", "val_psnr", "lr", "close"}


def first_passes(folder, tmp_path, monkeypatch, **kw):
    """The student's training forward passes of a run: (weights at the first, inputs, RNG states)."""
    seen = {"weights": None, "x": [], "rng": []}
    real = training.Hyperprior.forward

    def spy(self, x):
        if self.training:
            if seen["weights"] is None:
                seen["weights"] = {k: v.clone() for k, v in self.state_dict().items()}
            seen["x"].append(x.clone())
            seen["rng"].append(torch.get_rng_state())  # decides the quantisation noise drawn next
        return real(self, x)

    monkeypatch.setattr(training.Hyperprior, "forward", spy)
    train(config(folder, **kw), runs=tmp_path, progress=False)
    monkeypatch.setattr(training.Hyperprior, "forward", real)
    return seen


def test_kd_run_and_its_scratch_twin_are_paired(photo_folder, tmp_path, monkeypatch):
    """Same step-0 weights, same crops in the same order, same noise draws: only the loss differs."""
    teacher = train(config(photo_folder, name="teacher", N=16), runs=tmp_path, progress=False)
    kd = first_passes(photo_folder, tmp_path, monkeypatch, name="kd", teacher=str(teacher))
    scratch = first_passes(photo_folder, tmp_path, monkeypatch, name="scratch")
    assert len(kd["x"]) == len(scratch["x"]) == 4
    for key, value in kd["weights"].items():
        assert torch.equal(value, scratch["weights"][key]), key
    for a, b in zip(kd["x"] + kd["rng"], scratch["x"] + scratch["rng"]):
        assert torch.equal(a, b)


def test_teacher_targets_are_float32_under_bf16(photo_folder, tmp_path, monkeypatch):
    teacher = train(config(photo_folder, name="teacher", N=16), runs=tmp_path, progress=False)
    seen = []
    real = training.TeacherTargets.forward

    def spy(self, x):
        out = real(self, x)
        seen.append((torch.is_autocast_enabled("cpu"), out["y_hat"].dtype, out["x_hat"].dtype))
        return out

    monkeypatch.setattr(training.TeacherTargets, "forward", spy)
    train(config(photo_folder, name="kd", teacher=str(teacher), precision="bf16"), runs=tmp_path, progress=False)
    assert seen and all(s == (False, torch.float32, torch.float32) for s in seen)


def test_teacher_targets_equal_the_full_forward(small_model):
    x = torch.rand(2, 3, 64, 64)
    full, short = small_model(x), training.TeacherTargets(small_model)(x)
    assert torch.equal(full["y_hat"], short["y_hat"]) and torch.allclose(full["x_hat"], short["x_hat"], atol=1e-6)
    hyper = training.TeacherTargets(small_model, ("y_hat", "x_hat", "z_hat"))(x)
    assert torch.equal(hyper["z_hat"], full["z_hat"]) and torch.equal(hyper["y_hat"], full["y_hat"])
    assert list(training.TeacherTargets(small_model, ("z_hat",))(x)) == ["z_hat"]


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
def test_more_steps_extend_a_finished_run(photo_folder, tmp_path, capsys):
    """--steps 6 after a 4-step run continues from step 4 (the 4-step folder untouched) and ends where
    a 6-step run from scratch ends."""
    whole = train(config(photo_folder, steps=6), runs=tmp_path / "a", progress=False)
    short = train(config(photo_folder), runs=tmp_path / "b", progress=False)
    before = short.read_bytes()
    longer = train(config(photo_folder, steps=6), runs=tmp_path / "b", progress=False)
    assert "extending" in capsys.readouterr().out and short.read_bytes() == before
    for key, value in read_checkpoint(whole)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(longer)["state_dict"][key]), key
    assert len((longer.parent / "log.csv").read_text().splitlines()) == 7  # header + 6 steps
    other = train(config(photo_folder, steps=6, lmbda=0.01), runs=tmp_path / "b", progress=False)
    assert read_checkpoint(other.parent / "last.pth.tar")["meta"]["steps"] == 6 and "extending" not in capsys.readouterr().out


def test_a_corrupted_checkpoint_says_how_to_recover(photo_folder, tmp_path):
    train(config(photo_folder), runs=tmp_path, progress=False, stop_after=2)
    last = run_dir(config(photo_folder), tmp_path) / "last.pth.tar"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(TrainingError, match="move .*last.pth.tar aside and run again"):
        train(config(photo_folder), runs=tmp_path, progress=False)


def test_a_fixed_schedule_is_the_same_for_any_run_of_its_length():
    """"wsd": lr constant until 1 - decay of the steps, then linear to 0; no rate read from validation."""
    c = Config(name="a", steps=100, lr=1e-3, schedule="wsd", decay=0.2)
    assert training.stable_end(c) == 80
    assert [training.lr_at(c, s) for s in (0, 79, 80, 90, 99)] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4, 5e-5])
    assert training.lr_at(Config(name="p", steps=100), 0) is None  # the plateau schedule: not fixed in advance
    with pytest.raises(TrainingError, match="decay"):
        Config(name="x", schedule="wsd")
    with pytest.raises(TrainingError, match="stop rule"):
        Config(name="x", schedule="wsd", decay=0.2, converge_lr=0.125, converge_flat=0.005)


def test_a_branch_decayed_from_a_longer_runs_constant_phase_is_that_run_trained_short(photo_folder, tmp_path):
    """A shorter budget starts from the state the longer run kept at the shorter one's stable_end: the
    same weights, log and learning rates as the short run trained from step 0."""
    short = config(photo_folder, steps=4, schedule="wsd", decay=0.5, val_every=1)
    long = dataclasses.replace(short, steps=8)
    train(long, runs=tmp_path / "b", progress=False, keep_states=(training.stable_end(short),))
    assert training.state_path(run_dir(long, tmp_path / "b"), 2).exists()
    branched = train(short, runs=tmp_path / "b", progress=False, longer=long)
    whole = train(short, runs=tmp_path / "a", progress=False)
    for key, value in read_checkpoint(whole)["state_dict"].items():
        assert torch.equal(value, read_checkpoint(branched)["state_dict"][key]), key
    logs = [(run_dir(short, tmp_path / f) / "log.csv").read_text().splitlines() for f in ("a", "b")]
    strip = lambda lines: [line.split(",", 3)[::2] for line in lines]  # step and lr (wall time differs)
    assert strip(logs[0]) == strip(logs[1]) and len(logs[0]) == 5
    lrs = [float(line.split(",")[2]) for line in logs[0][1:]]
    assert lrs == pytest.approx([1e-4, 1e-4, 1e-4 * 2 / 2, 1e-4 / 2])  # the last weights are kept, decayed
    assert read_checkpoint(branched)["meta"]["steps"] == 4
    with pytest.raises(TrainingError, match="more steps"):
        train(dataclasses.replace(short, name="other", lr=1e-3), runs=tmp_path / "c", progress=False, longer=long)


def test_a_bf16_run_on_a_cpu_without_native_bf16_emulates_its_convolutions_and_says_so(photo_folder, tmp_path,
                                                                                        monkeypatch, capsys):
    from kdlib import precision
    from kdlib import train as training

    seen = []
    real = precision.EmulatedBf16.__torch_function__

    def spy(self, func, types, args=(), kwargs=None):
        out = real(self, func, types, args, kwargs)
        if func in precision.CONVOLUTIONS:
            seen.append((args[0].dtype, out.dtype))
        return out

    monkeypatch.setattr(precision.EmulatedBf16, "__torch_function__", spy)
    monkeypatch.setattr(training, "_cpuinfo", lambda field: "fpu avx2 avx512f" if field == "flags" else None)
    assert not training.native_bf16()
    train(config(photo_folder, precision="bf16", steps=2), runs=tmp_path, progress=False)
    assert "without native bfloat16" in capsys.readouterr().out
    # every convolution of the student's transforms: g_a's first takes the float32 crops, all give bfloat16
    assert len(seen) > 20 and seen[0] == (torch.float32, torch.bfloat16) and {o for _, o in seen} == {torch.bfloat16}
    monkeypatch.setattr(training, "_cpuinfo", lambda field: "fpu avx512f avx512_bf16" if field == "flags" else None)
    assert training.native_bf16()
    seen.clear()
    train(config(photo_folder, precision="bf16", steps=3), runs=tmp_path, progress=False)
    assert "without native bfloat16" not in capsys.readouterr().out and not seen
