"""Resource metrics of a codec: size, FLOPs, peak memory, throughput, energy.

Size follows the paper: parameter count, and memory as the bytes of parameters plus
buffers (MiB). FLOPs come from torch's own flop counter on one 768x512 frame, reported
as multiply-adds (fvcore's and the paper's convention) and as FLOPs (2 per multiply-add).
Energy is read from hardware counters only (NVML / zeus on a GPU, RAPL on a CPU); where
none exists, the result says so and holds no number.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from kdlib.data import load_image, pad
from kdlib.entropy import decode, encode, pack, unpack
from kdlib.models import Hyperprior

PARTS = {"g_a": "encoder", "h_a": "hyperprior", "h_s": "hyperprior", "entropy_bottleneck": "hyperprior",
         "gaussian_conditional": "hyperprior", "g_s": "decoder"}
RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def size(model: Hyperprior) -> dict[str, float]:
    """Parameters (millions), and memory of parameters / parameters plus buffers (MiB)."""
    params = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    return {"params_M": params / 1e6, "params_MiB": param_bytes / 2**20,
            "params_buffers_MiB": (param_bytes + buffer_bytes) / 2**20}


@torch.no_grad()
def flops(model: Hyperprior, height: int = 512, width: int = 768) -> dict[str, float]:
    """Forward-pass GMACs and GFLOPs on one frame, in total and per part."""
    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(torch.zeros(1, 3, height, width))
    per_part = {"encoder": 0, "hyperprior": 0, "decoder": 0}
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) == 2 and parts[1] in PARTS:
            per_part[PARTS[parts[1]]] += sum(ops.values())
    total = counter.get_total_flops()
    return {"gmacs": total / 2e9, "gflops": total / 1e9, **{f"gmacs_{k}": v / 2e9 for k, v in per_part.items()}}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EnergyMeter:
    """Cumulative energy in joules from NVML (GPU) or RAPL (CPU); ``reason`` says why not, if neither."""

    def __init__(self, device: torch.device):
        self.read: Callable[[], float] | None = None
        self.reason = ""
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
                pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                self.read, self.source = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3, "nvml"
            except Exception as err:  # no pynvml, or a GPU without the energy counter
                self.reason = f"NVML energy counter unavailable ({err})"
        elif RAPL.exists():
            try:
                RAPL.read_text()
                self.read, self.source = lambda: int(RAPL.read_text()) / 1e6, "rapl (package)"
            except OSError as err:
                self.reason = f"RAPL counter unreadable ({err})"
        else:
            self.reason = f"no RAPL counter at {RAPL.parent} on this machine"


def time_frames(run: Callable[[torch.Tensor], Any], frames: list[torch.Tensor], passes: int,
                device: torch.device, meter: EnergyMeter | None = None) -> dict[str, float | None]:
    """Frames per second (and mJ per frame, if metered) of ``run`` over ``passes`` of ``frames``."""
    run(frames[0])  # warm-up
    _sync(device)
    energy_start = meter.read() if meter and meter.read else None
    start = time.perf_counter()
    for _ in range(passes):
        for frame in frames:
            run(frame)
    _sync(device)
    elapsed = time.perf_counter() - start
    n = passes * len(frames)
    energy = (meter.read() - energy_start) * 1e3 / n if energy_start is not None else None
    return {"fps": n / elapsed, "mj_per_frame": energy}


@torch.no_grad()
def throughput(model: Hyperprior, images: list[Path], passes: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Forward, encode (to bytes) and decode (from bytes) frames/s on ``images``, with energy if metered."""
    device = torch.device(device)
    model = model.to(device).eval()
    frames = [pad(load_image(p).unsqueeze(0))[0].to(device) for p in images]
    blobs = {}

    def encode_to_bytes(x: torch.Tensor) -> bytes:
        enc = encode(model, x)
        blobs[id(x)] = blob = pack(enc["strings"][0][0], enc["strings"][1][0], enc["shape"])
        return blob

    def decode_from_bytes(x: torch.Tensor) -> torch.Tensor:
        y, z, shape = unpack(blobs[id(x)])
        return decode(model, [[y], [z]], shape)["x_hat"]

    meter = EnergyMeter(device)
    result: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(),
                              "frames": len(frames), "passes": passes,
                              "energy_source": getattr(meter, "source", None), "energy_note": meter.reason or None}
    for phase, run in [("forward", model), ("encode", encode_to_bytes), ("decode", decode_from_bytes)]:
        timing = time_frames(run, frames, passes, device, meter)
        result[f"{phase}_fps"] = timing["fps"]
        result[f"{phase}_mj_per_frame"] = timing["mj_per_frame"]
    return result


def peak_memory(model: Hyperprior, image: Path) -> dict[str, float]:
    """Peak resident memory (MiB) of encoding, and of decoding, one image, each in a fresh process.

    ``*_peak_MiB`` is the process's peak resident size during the call (torch runtime
    included); ``*_extra_MiB`` how far it rose above the resident size just before it
    (the kernel's high-water mark is reset then, through /proc/self/clear_refs).

    The two processes run side by side: the stream the decoding one reads is made here first, from the
    same weights and image, so neither waits for the other.
    """
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pth"
        torch.save(model.state_dict(), weights)
        coder = _coder(str(weights))
        with torch.no_grad():
            enc = encode(coder, pad(load_image(image).unsqueeze(0))[0])
        (Path(tmp) / "stream.bin").write_bytes(pack(enc["strings"][0][0], enc["strings"][1][0], enc["shape"]))
        children = {phase: subprocess.Popen([sys.executable, "-m", "kdlib.resources", str(weights), str(image), phase, tmp],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for phase in ("encode", "decode")}
        out = {}
        for phase, child in children.items():
            stdout, stderr = child.communicate()
            if child.returncode:
                raise subprocess.CalledProcessError(child.returncode, child.args, stdout, stderr)
            report = json.loads(stdout)
            out[f"{phase}_peak_MiB"], out[f"{phase}_extra_MiB"] = report["peak"], report["extra"]
    return out


def _coder(weights: str) -> Hyperprior:
    """The model of a state dict saved by :func:`peak_memory`, ready to code (CDF tables updated)."""
    model = Hyperprior.from_state_dict(torch.load(weights, weights_only=True))
    model.update()
    return model


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def _measure_peak(weights: str, image: str, phase: str, tmp: str) -> None:
    """Child process of :func:`peak_memory`: run one phase, print its peak memory as JSON."""
    torch.set_num_threads(1)
    model = _coder(weights)
    x = pad(load_image(image).unsqueeze(0))[0]
    if phase == "decode":
        y, z, shape = unpack((Path(tmp) / "stream.bin").read_bytes())
        del x
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
    before = _status_mib("VmRSS")
    with torch.no_grad():
        if phase == "encode":
            enc = encode(model, x)
            pack(enc["strings"][0][0], enc["strings"][1][0], enc["shape"])  # the container too, as kdlib compress
        else:
            decode(model, [[y], [z]], shape)
    peak = _status_mib("VmHWM")
    print(json.dumps({"peak": peak, "extra": peak - before}))


if __name__ == "__main__":
    _measure_peak(*sys.argv[1:5])
