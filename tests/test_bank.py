"""The crop bank of the long tier: its order, its teacher targets, its pairing and the stop rule."""
import json

import numpy as np
import pytest
import torch

from kdlib import bank as banks
from kdlib import train as training
from kdlib.models import load_model
from kdlib.train import Config, converged, run_dir, train

from test_train import config, first_passes


def test_order_visits_every_crop_once_per_pass_and_resumes_stateless():
    size, batch = 20, 8
    seen = np.concatenate([banks.order(3, step, batch, size) for step in range(5)])  # 40 draws: two passes
    assert sorted(seen[:20]) == list(range(20)) and sorted(seen[20:40]) == list(range(20))
    assert not np.array_equal(seen[:20], seen[20:40])  # each pass its own permutation
    assert np.array_equal(banks.order(3, 2, batch, size), seen[16:24])  # straddles two passes
    assert not np.array_equal(banks.order(4, 0, batch, size), seen[:8])  # another seed, another order
    assert not np.array_equal(banks.order(3, 0, batch, size, rank=1), seen[:8])


def test_bank_targets_are_the_teachers_float32_outputs_and_a_damaged_bank_is_rebuilt(photo_folder, tmp_path):
    teacher_path = train(config(photo_folder, name="teacher", N=16), runs=tmp_path, progress=False)
    bank = banks.open_bank(6, 64, photo_folder, teacher_path, cache=tmp_path / "cache", progress=False)
    x, targets = bank.batch(np.array([4, 1]))
    teacher = load_model(teacher_path).eval()
    with torch.no_grad():
        y_hat = torch.round(teacher.g_a(x))
        x_hat = teacher.g_s(y_hat)
    assert targets["y_hat"].dtype == targets["x_hat"].dtype == torch.float32
    assert torch.equal(targets["y_hat"], y_hat) and torch.allclose(targets["x_hat"], x_hat, atol=1e-5)
    assert x.shape == (2, 3, 64, 64) and len({tuple(c.flatten()[:50].tolist()) for c in x}) == 2
    digest = bank.digest
    folder = banks.bank_folder(6, 64, photo_folder, tmp_path / "cache")
    crops = folder / "crops.u8"
    raw = bytearray(crops.read_bytes())
    raw[0] ^= 1
    crops.write_bytes(bytes(raw))
    with pytest.raises(banks.BankError, match="no valid bank"):
        banks.Bank(folder)
    rebuilt = banks.open_bank(6, 64, photo_folder, teacher_path, cache=tmp_path / "cache", progress=False)
    assert rebuilt.digest == digest  # the same crops and targets, built again


def test_kd_run_and_its_scratch_twin_are_paired_on_a_bank(photo_folder, tmp_path, monkeypatch):
    """On a bank too, the arms differ only in the loss: same weights, crops, order and noise."""
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path / "cache"))
    teacher = train(config(photo_folder, name="teacher", N=16), runs=tmp_path, progress=False)
    kd = first_passes(photo_folder, tmp_path, monkeypatch, name="kd", teacher=str(teacher), bank=6)
    scratch = first_passes(photo_folder, tmp_path, monkeypatch, name="scratch", bank=6)
    assert len(kd["x"]) == len(scratch["x"]) == 4
    for key, value in kd["weights"].items():
        assert torch.equal(value, scratch["weights"][key]), key
    for a, b in zip(kd["x"] + kd["rng"], scratch["x"] + scratch["rng"]):
        assert torch.equal(a, b)
    bank = banks.Bank(banks.bank_folder(6, 64, photo_folder))
    assert torch.equal(kd["x"][0], bank.batch(banks.order(0, 0, 2, 6))[0])  # the bank's crops, in the seed's order


def test_kd_on_a_bank_never_runs_the_teacher(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path / "cache"))
    teacher = train(config(photo_folder, name="teacher", N=16), runs=tmp_path, progress=False)
    banks.open_bank(6, 64, photo_folder, teacher, progress=False)
    monkeypatch.setattr(training.TeacherTargets, "forward", lambda *a, **k: pytest.fail("teacher ran"))
    train(config(photo_folder, name="kd", teacher=str(teacher), bank=6), runs=tmp_path, progress=False)


def history(*values, every=500):
    return [(every * (i + 1), v) for i, v in enumerate(values)]


def test_stop_rule_needs_both_the_decayed_rate_and_a_flat_loss():
    cfg = Config(name="x", lr=5e-4, converge_lr=0.125, converge_flat=0.005)
    flat = history(*([3.0] * 10 + [2.0] * 10))  # no gain over the last 10 % of steps
    assert converged(flat, 5e-4 / 8, cfg)
    assert not converged(flat, 5e-4 / 4, cfg)  # the rate not yet cut to 1/8
    falling = history(*np.linspace(3.0, 2.0, 20))  # 1 % better over the last two validations
    assert not converged(falling, 5e-4 / 8, cfg)
    slow = history(*np.linspace(3.0, 2.99, 20))  # 0.05 % over the last 10 %
    assert converged(slow, 5e-4 / 16, cfg)
    assert not converged(flat, 5e-4 / 8, Config(name="x"))  # no rule: runs to its step cap


def test_a_run_that_meets_the_rule_stops_and_says_so(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "converged", lambda history, lr, cfg: history[-1][0] >= 4)
    cfg = config(photo_folder, steps=10, converge_lr=0.125, converge_flat=0.005)
    train(cfg, runs=tmp_path, progress=False)
    done = json.loads((run_dir(cfg, tmp_path) / "done.json").read_text())
    assert done["steps"] == 4 and done["converged"] is True


def test_a_bank_refuses_what_it_cannot_hold():
    with pytest.raises(training.TrainingError, match="crop bank"):
        Config(name="x", bank=8, w_hyper=0.2, teacher="T5")
