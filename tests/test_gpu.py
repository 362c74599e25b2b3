"""The prepared GPU check (kdlib.gpu) on the CPU: its refusal without CUDA, its JSON and its budget,
and the committed version-1 files it decodes on other machines. No GPU is pretended: the parts run
on the CPU device, into a temporary folder."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlib import gpu
from kdlib.cli import main

V1 = Path(__file__).parent / "data" / "v1"


def assert_portable(result: dict) -> bool:
    """A portability result: every file decodes at every thread count to the same pixels, within 1 level
    of the reference machine's (another CPU's g_s rounds differently: docs/codec.md), and exactly its
    pixels on the reference's kind of CPU."""
    for row in result["files"].values():
        decoded = {k: v for k, v in row.items() if k.startswith("decoded_")}
        diffs = {k: v for k, v in row.items() if k.startswith("max_pixel_diff_")}
        assert len(decoded) == len(diffs) >= 1 and row["same_pixels_across_threads"] is True, row
        assert all(isinstance(v, bool) for v in decoded.values()), row  # no decoding error
        limit = 0 if result["reference_cpu"] else 1
        assert all(0 <= v <= limit for v in diffs.values()), row
        assert all(decoded.values()) or not result["reference_cpu"], row
    return True


def test_without_cuda_it_stops_at_once_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu-check", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("kdlib gpu-check: no CUDA GPU here") and "\n" not in err
    assert not list(tmp_path.iterdir())
    with pytest.raises(gpu.NoGPU, match="CUDA device"):
        gpu.require_cuda("cpu")


def test_committed_version_1_files_decode_here_and_the_crop_reencodes_to_their_bytes():
    """Files written before h_s was pinned to one thread decode to the same pixels at 1 and all
    threads (the reference's on its kind of CPU, within 1 level elsewhere), and the crop re-encodes to
    the same bytes (where the Kodak mirror is)."""
    from kdlib.data import kodak_paths

    try:
        source = next(p for p in kodak_paths(download_missing=False) if p.name == "kodim01.png")
    except Exception:
        source = None
    result = gpu.portability(V1, source)
    assert set(result["files"]) == {"kodim01-crop-S16.kdl", "kodim01-crop-T5.kdl"}
    assert_portable(result)
    for row in result["files"].values():
        assert source is None or row["reencoded_identical"] is True


def test_check_writes_one_json_and_skips_what_the_budget_leaves(monkeypatch, tmp_path, mirror):
    from kdlib.data import kodak_paths

    monkeypatch.setattr(gpu, "require_cuda", lambda device: torch.device("cpu"))
    monkeypatch.setattr(gpu, "cuda_tests", lambda timeout: {"returncode": 0, "summary": "not run on a CPU"})
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: type("P", (), {"name": "cpu stand-in", "total_memory": 0})())
    images, out = kodak_paths()[:1], tmp_path / "results" / "gpu"
    path = gpu.run_check(out, images, ["S16"], passes=1, budget_s=0.0)  # nothing starts
    check = json.loads(path.read_text())
    assert not check["codec"] and len(check["skipped"]) == 6 and all("budget" in s for s in check["skipped"])
    monkeypatch.setattr(gpu, "training", lambda *a, **k: 1 / 0)  # a failing part keeps the others
    check = json.loads(gpu.run_check(out, images, ["S16"], passes=1, budget_s=1e9).read_text())
    assert set(check) == gpu.SCHEMA
    assert check["codec"][0]["model"] == "S16" and check["codec"][0]["decode"]["fps"] > 0
    assert check["cross_device"][0]["identical_files"] == 1 and check["cross_device"][0]["max_pixel_diff"] == 0
    assert check["skipped"] == ["training scratch: ZeroDivisionError: division by zero",
                                "training kd: ZeroDivisionError: division by zero"]
    assert_portable(check["portability"])
    for row in check["portability"]["files"].values():
        assert row["reencoded_identical"] is True
    assert gpu.read_check(out.parent)["device"]["name"] == "cpu stand-in"
    path.write_text(json.dumps({"schema": 1}))
    with pytest.raises(ValueError, match="missing"):
        gpu.read_check(out.parent)


def test_forward_runs_read_every_committed_run_against_its_own_teacher(tmp_path):
    def check(teacher_mj, student_mj):
        row = lambda model, n, fps, mj: {"model": model, "N": n, "forward": {"fps": fps, "mj_per_frame": mj}}  # noqa: E731
        return {"started": "t", "device": {"name": "GPU"},
                "codec": [row("T5", 128, 200.0, teacher_mj), row("S64", 64, 250.0, student_mj)]}

    folder = tmp_path / "gpu"
    (folder / "earlier").mkdir(parents=True)
    (folder / "gpu_check.json").write_text(json.dumps(check(1000.0, 600.0)))
    (folder / "earlier" / "run1.json").write_text(json.dumps(check(800.0, None)))
    runs = gpu.forward_runs(tmp_path)
    assert set(runs.run) == {"t UTC, GPU"}  # a reader's label: start and card, not a file name
    runs = runs.set_index(["file", "model"])
    assert list(runs.index) == [("gpu_check", "T5"), ("gpu_check", "S64"), ("run1", "T5"), ("run1", "S64")]
    assert runs.loc[("gpu_check", "S64"), "mj_vs_teacher_pct"] == pytest.approx(-40.0)
    assert runs.loc[("run1", "S64"), "fps_vs_teacher_pct"] == pytest.approx(25.0)
    assert np.isnan(runs.loc[("run1", "S64"), "mj_vs_teacher_pct"])  # no meter in that run: no number
    assert gpu.forward_runs(tmp_path / "none").empty
