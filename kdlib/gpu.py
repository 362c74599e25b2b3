"""The prepared GPU check (``kdlib gpu-check``, ``make gpu-check``): what only a CUDA GPU can measure,
in one command that fits a short loan of one GPU, written to one JSON (``results/gpu/gpu_check.json``)
that notebooks e6_resources and e7_codecs read when it is there.

It measures, in this order, each part skipped (and said so) once the time budget is spent:
the GPU's codec speed and energy per frame (NVML) for T5 and the released students, forward pass and
real ``.kdl`` files; whether files encoded with the transforms on the GPU decode on the CPU, and how far
their bytes and pixels are from the CPU's; the CUDA tests; and ``paper``-scale training steps/s of KD
N = 64 from T5 and its scratch twin (bf16, compiled). It runs from a slim tree: the code, the
checkpoints it names and a few Kodak images (``--images``); docs/codec.md, "GPU check".
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from kdlib import bitstream, data
from kdlib import resources as res
from kdlib.io import write_json
from kdlib.models import CHECKPOINTS, load_model, resolve

if TYPE_CHECKING:
    import pandas as pd

MODELS = ("T5", "S16", "S32", "S64", "S96", "S112")
CUDA_TESTS = ("tests/test_bitstream.py::test_gpu_transforms_files_decode_anywhere",
              "tests/test_cli.py::test_output_and_device_errors_are_one_line")
SCHEMA = {"schema", "device", "torch", "started", "wall_s", "images", "codec", "cross_device", "portability", "tests",
          "training", "skipped"}
VERSION = 1


class NoGPU(RuntimeError):
    """The check needs a CUDA GPU and torch sees none."""


def require_cuda(device: str = "cuda") -> torch.device:
    """``device`` as a torch device, or :class:`NoGPU` at once when it is not a usable CUDA GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        raise NoGPU(f"the GPU check runs on a CUDA device, not {device}")
    if not torch.cuda.is_available():
        raise NoGPU("no CUDA GPU here (torch.cuda.is_available() is False): the GPU check measures nothing "
                    "on a CPU; run it on a machine with one (docs/codec.md, \"GPU check\")")
    return device


def _measure(function, count: int, device: torch.device, meter: res.EnergyMeter) -> dict[str, float | None]:
    """Frames/s and NVML mJ per frame of ``function()``, which codes ``count`` frames (timed once, warm)."""
    res._sync(device)
    energy = meter.read() if meter.read else None
    start = time.perf_counter()
    function()
    res._sync(device)
    elapsed = time.perf_counter() - start
    joules = meter.read() - energy if energy is not None else None
    return {"fps": count / elapsed, "mj_per_frame": joules * 1e3 / count if joules is not None else None}


@torch.no_grad()
def codec(name: str, images: list[Path], passes: int, device: torch.device, repeats: int = 3) -> dict[str, Any]:
    """Forward pass, and ``.kdl`` encode and decode (transforms on ``device``, hyperprior and coder on
    the CPU, one image at a time), frames/s and mJ per frame of the GPU (NVML: the CPU's share is not
    metered), for one model over ``passes`` of ``images``; each the fastest of ``repeats`` timings."""
    meter = res.EnergyMeter(device)
    pils = [Image.open(p).convert("RGB") for p in images] * passes
    frames = [data.pad(data.to_tensor(p)[None])[0].to(device) for p in pils]
    on_device = load_model(resolve(name)).eval().to(device)
    on_device(frames[0])  # warm-up
    result: dict[str, Any] = {"model": name, "N": on_device.N, "frames": len(frames), "repeats": repeats,
                              "energy_source": getattr(meter, "source", None), "energy_note": meter.reason or None}
    model = bitstream.use_device(load_model(resolve(name)).eval(), device)
    files = bitstream.compress_batch(pils, model)
    bitstream.decompress_batch(files[:1], model)  # warm-up
    timed = {"forward": lambda: [on_device(x) for x in frames], "encode": lambda: bitstream.compress_batch(pils, model),
              "decode": lambda: bitstream.decompress_batch(files, model)}
    for phase, function in timed.items():  # the fastest of ``repeats`` timings (this host's load varies)
        result[phase] = max((_measure(function, len(frames), device, meter) for _ in range(repeats)),
                            key=lambda timing: timing["fps"])
    return result


def _pixels(blob: bytes, model, device: torch.device | None = None) -> np.ndarray:
    return np.asarray(bitstream.decompress(blob, model, device), np.int16)


def cross_device(name: str, images: list[Path], device: torch.device) -> dict[str, Any]:
    """Files encoded with the transforms on ``device`` against files encoded on the CPU (one image per
    thread), every file decoded on the CPU at all threads: identical files, decoding errors, and the
    largest pixel difference between the two; then the CPU's files decoded on ``device``, with and
    without TF32 convolutions, against their CPU decoding."""
    on_gpu = bitstream.compress_batch(images, bitstream.use_device(load_model(resolve(name)).eval(), device))
    cpu_model = load_model(resolve(name)).eval()
    on_cpu = bitstream.compress_batch(images, cpu_model)
    result: dict[str, Any] = {"model": name, "files": len(images), "identical_files": sum(map(bytes.__eq__, on_gpu, on_cpu)),
                              "bytes_gpu": sum(map(len, on_gpu)), "bytes_cpu": sum(map(len, on_cpu))}
    cpu_pixels, diffs, errors = {}, [], []
    for path, gpu_file, cpu_file in zip(images, on_gpu, on_cpu):
        try:  # the point of the check: say which file fails and why, and go on
            cpu_pixels[path] = _pixels(cpu_file, cpu_model)
            diffs.append(int(np.abs(_pixels(gpu_file, cpu_model) - cpu_pixels[path]).max()))
        except Exception as err:
            errors.append(f"{path.name}: {type(err).__name__}: {err}")
    result.update(decode_errors=errors, max_pixel_diff=max(diffs, default=None))
    gpu_model = bitstream.use_device(load_model(resolve(name)).eval(), device)
    tf32 = torch.backends.cudnn.allow_tf32
    for allow in (True, False):
        torch.backends.cudnn.allow_tf32 = allow
        try:
            diffs = [int(np.abs(_pixels(f, gpu_model) - cpu_pixels[p]).max()) for p, f in zip(images, on_cpu)
                     if p in cpu_pixels]
        finally:
            torch.backends.cudnn.allow_tf32 = tf32
        result[f"gpu_decode_max_pixel_diff_tf32_{'on' if allow else 'off'}"] = max(diffs, default=None)
    return result


V1 = Path(__file__).resolve().parents[1] / "tests" / "data" / "v1"


def reference_kind(folder: Path = V1) -> bool:
    """Whether this host's CPU is the kind the version-1 files were written on (``expected.json``: its
    model name and ATen's vector capability, AVX512 there): the kind on which decoded pixels are exact.
    Another kind, an AMD EPYC without AVX-512 included, rounds a few pixels of g_s one level apart."""
    from kdlib.train import cpu_model

    expected = json.loads((folder / "expected.json").read_text())
    return expected["reference_cpu"] in cpu_model() and \
        torch.backends.cpu.get_cpu_capability() == expected["reference_capability"]


def portability(folder: Path = V1, source: Path | None = None) -> dict[str, Any]:
    """The committed version-1 files (written on the 2-core reference machine) decoded on this host's
    CPU at all its threads and at one: pixels equal to the reference's (sha256), how far from them, the
    same at every thread count? ``reference_cpu``: :func:`reference_kind`. With ``source`` (that
    machine's kodim01.png), the crop re-encoded here at all threads, one image: the same bytes?"""
    import hashlib

    from kdlib.bitstream import released_model
    from kdlib.train import cpu_model

    expected = json.loads((folder / "expected.json").read_text())
    cpu_name = cpu_model()
    result: dict[str, Any] = {"cpu": cpu_name, "capability": torch.backends.cpu.get_cpu_capability(),
                              "threads": torch.get_num_threads(), "reference_cpu": reference_kind(folder), "files": {}}
    threads = torch.get_num_threads()
    for name, want in expected["files"].items():
        blob, model = (folder / name).read_bytes(), released_model(want["model"])
        row: dict[str, Any] = {}
        digests = set()
        for count in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(count)
            try:
                pixels = np.asarray(bitstream.decompress(blob, model))
                digest = hashlib.sha256(pixels.tobytes()).hexdigest()
                digests.add(digest)
                row[f"decoded_{count}t"] = digest == want["pixels_sha256"]
                reference = np.asarray(Image.open((folder / name).with_suffix(".png")), np.int16)
                row[f"max_pixel_diff_{count}t"] = int(np.abs(pixels.astype(np.int16) - reference).max())
            except Exception as err:
                row[f"decoded_{count}t"] = f"{type(err).__name__}: {err}"
            finally:
                torch.set_num_threads(threads)
        row["same_pixels_across_threads"] = len(digests) == 1 and all(
            isinstance(row[f"decoded_{count}t"], bool) for count in {threads, 1})
        if source is not None and source.exists():
            crop = Image.open(source).convert("RGB").crop((256, 128, 512, 384))
            row["reencoded_identical"] = bitstream.compress(crop, model) == blob
        result["files"][name] = row
    return result


def cuda_tests(timeout: float) -> dict[str, Any]:
    """The tests that need a GPU (skipped on a CPU), run with pytest in a subprocess."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CUDA_TESTS]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(command[2:]), "returncode": None, "summary": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"command": " ".join(command[2:]), "returncode": done.returncode, "summary": lines[-1] if lines else "",
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))]}


def training(arm: str, images: Path, steps: int, warmup: int, compile: bool = True) -> dict[str, Any]:
    """``paper``-scale training steps/s (256x256 x 16 crops, bf16 autocast, ``compile``) of experiment 1's
    N = 64 run of ``arm`` (``kd``: from T5 with the authors' weights; ``scratch``: its twin), from our
    trainer's own log, warm-up (and compilation) excluded; crops of the images in ``images``."""
    from kdlib.bench import _trainer_steps_per_s
    from kdlib import grid
    from kdlib.train import Config

    run = grid.RUNS[grid.one(experiment=1, arm=arm, N=64, seed=0)]
    base = run.config("paper")
    config = Config(**{**base.__dict__, "name": f"gpu-{arm}", "precision": "bf16", "steps": warmup + steps,
                       "val_every": 10**9, "val_images": 1, "data": str(images)})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        speed = _trainer_steps_per_s(config, Path(tmp), warmup, compile)
    return {"arm": arm, "N": config.N, "teacher": config.teacher, "crop": config.crop, "batch": config.batch,
            "precision": config.precision, "compiled": compile, "steps": steps, "warmup": warmup,
            "steps_per_s": speed, "wall_s": time.perf_counter() - started}


def run_check(out: Path, images: list[Path], models: list[str], passes: int = 10, steps: int = 300,
              warmup: int = 30, budget_s: float = 420, device: str = "cuda") -> Path:
    """Every part of the check on ``device`` (:class:`NoGPU` at once without one), each skipped once
    ``budget_s`` seconds have gone; writes and returns ``out/gpu_check.json``."""
    device = require_cuda(device)
    start = time.perf_counter()
    left = lambda: budget_s - (time.perf_counter() - start)  # noqa: E731
    props = torch.cuda.get_device_properties(device)
    result: dict[str, Any] = {
        "schema": VERSION, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "images": [p.name for p in images],
        "device": {"name": props.name, "memory_GiB": props.total_memory / 2**30, "host": platform.node(),
                   "cpu_threads": torch.get_num_threads()},
        "torch": torch.__version__, "codec": [], "cross_device": [], "portability": None, "tests": None, "training": [], "skipped": []}
    path = out / "gpu_check.json"

    def save() -> None:
        result["wall_s"] = time.perf_counter() - start
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, result)

    steps_todo = [(f"codec {m}", lambda m=m: result["codec"].append(codec(m, images, passes, device))) for m in models]
    steps_todo += [(f"cross-device {m}", lambda m=m: result["cross_device"].append(cross_device(m, images, device)))
                   for m in models]
    steps_todo.append(("portability", lambda: result.__setitem__(
        "portability", portability(source=next((p for p in images if p.name == "kodim01.png"), None)))))
    steps_todo.append(("CUDA tests", lambda: result.__setitem__("tests", cuda_tests(max(30.0, left())))))
    folder = images[0].parent
    steps_todo += [(f"training {arm}", lambda arm=arm: result["training"].append(training(arm, folder, steps, warmup)))
                   for arm in ("scratch", "kd")]
    for label, step in steps_todo:
        if left() <= 0:
            result["skipped"].append(f"{label}: the {budget_s:.0f} s budget was spent")
            continue
        print(f"[{time.perf_counter() - start:6.1f} s] {label}", flush=True)
        try:
            step()
        except Exception as err:  # one failing part must not lose the others' numbers
            result["skipped"].append(f"{label}: {type(err).__name__}: {err}")
        save()
    save()
    return path


def available_models(names: tuple[str, ...] = MODELS) -> list[str]:
    """The released models among ``names`` whose weights are in ``checkpoints/`` (a slim tree has a few)."""
    return [n for n in names if (CHECKPOINTS / f"{n}.pth.tar").exists()]


def read_check(results: Path) -> dict[str, Any] | None:
    """The GPU check's JSON under ``results/gpu/``, or None where no GPU run has been committed."""
    path = Path(results) / "gpu" / "gpu_check.json"
    if not path.exists():
        return None
    check = json.loads(path.read_text())
    missing = SCHEMA - set(check)
    if missing or check["schema"] != VERSION:
        raise ValueError(f"{path}: not a GPU check of schema {VERSION} (missing {sorted(missing)})")
    return check


def forward_runs(results: Path) -> "pd.DataFrame":
    """The forward passes (the paper's throughput and energy measure) of every committed GPU check: the
    latest (``results/gpu/gpu_check.json``) and the earlier ones kept in ``results/gpu/earlier/`` (their
    codec timings measured older code; the forward pass is the model alone). One row per run and model,
    with frames/s, NVML mJ per frame and each one's change against the same run's teacher (T5), %."""
    import pandas as pd

    folder = Path(results) / "gpu"
    rows = []
    for path in [folder / "gpu_check.json", *sorted((folder / "earlier").glob("*.json"))]:
        if not path.exists():
            continue
        check = json.loads(path.read_text())
        forward = {r["model"]: (r["N"], r["forward"]["fps"], r["forward"]["mj_per_frame"] or float("nan"))
                   for r in check["codec"]}
        _, teacher_fps, teacher_mj = forward.get("T5", (0, float("nan"), float("nan")))
        for model, (n, fps, mj) in forward.items():
            label = f"{check['started'][:16].replace('T', ' ')} UTC, {check['device']['name'].removeprefix('NVIDIA ')}"  # a reader's name for it
            rows.append({"run": label, "file": path.stem, "started": check["started"], "device": check["device"]["name"],
                         "model": model, "channels_N": n, "fps": fps, "mj_per_frame": mj,
                         "fps_vs_teacher_pct": 100 * (fps / teacher_fps - 1),
                         "mj_vs_teacher_pct": 100 * (mj / teacher_mj - 1)})
    return pd.DataFrame(rows)


def table(check: dict[str, Any], published: Path) -> "pd.DataFrame":
    """One row per model of the GPU check: forward pass (the paper's measure), ``.kdl`` encode and
    decode, frames/s and NVML mJ per frame; beside them the paper's RTX 3090 throughput and energy
    at the same N (``published``: ``paper/published``; NaN where it has none)."""
    import pandas as pd

    compute = pd.read_csv(published / "compute.csv").set_index("channels_N")
    energy = pd.read_csv(published / "energy.csv").set_index("channels_N")
    rows = []
    for r in check["codec"]:
        row = {"model": r["model"], "channels_N": r["N"], "device": check["device"]["name"]}
        for phase in ("forward", "encode", "decode"):
            row[f"{phase}_fps"] = r[phase]["fps"]
            row[f"{phase}_mj_per_frame"] = r[phase]["mj_per_frame"]
        row["paper_fps_rtx3090"] = compute.throughput_fps.get(r["N"], float("nan"))
        row["paper_mj_per_frame_rtx3090"] = energy.energy_mj_per_frame.get(r["N"], float("nan"))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("channels_N", ascending=False, ignore_index=True)
