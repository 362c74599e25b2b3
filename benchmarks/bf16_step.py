"""A training step of a student (N = 16 by default) on 8 crops of 128x128, one thread, in three precisions on
this CPU: fp32, bf16 autocast through PyTorch's kernels, and bf16 autocast through kdlib's emulation
(kdlib.precision.EmulatedBf16, what training uses on a CPU without native bfloat16), each through the
trainer's own context (kdlib.precision.student_precision). Forward, backward and Adam;
each timed twice in turn after 3 steps of warm-up, with and without torch.compile; prints steps/s and the ratios,
then how far each bf16 path's convolutions are from bfloat16's definition (operands and result rounded to bf16,
exact sums). Run it with the trainers stopped.

    python benchmarks/bf16_step.py [N]
"""
import sys
import time

import torch
import torch.nn.functional as F

from kdlib.models import Hyperprior
from kdlib.precision import student_precision
from kdlib.train import native_bf16

PATHS = ("fp32", "bf16 PyTorch", "bf16 emulated")


def _precision(path: str):
    """The trainer's context for the student's forward pass (kdlib.precision.student_precision) on one of PATHS:
    "bf16 PyTorch" is what it does on a CPU with native bfloat16, "bf16 emulated" on one without."""
    return student_precision(torch.device("cpu"), "fp32" if path == "fp32" else "bf16", path == "bf16 PyTorch")


def steps_per_s(n: int, path: str, x: torch.Tensor, compile: bool, steps: int = 10) -> float:
    torch.manual_seed(0)
    model = Hyperprior(n, 192).to(memory_format=torch.channels_last).train()
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)

    def step() -> None:
        with _precision(path):
            out = forward(x)
        rate = sum(-likelihoods.float().log().mean() for likelihoods in out["likelihoods"].values())
        loss = ((out["x_hat"].float() - x) ** 2).mean() + 0.01 * rate
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def exactness(path: str, n: int) -> str:
    """How close g_s's last layer's outputs and gradients (N to 3 channels) come to bfloat16's definition: the
    shares equal to it and within one bfloat16 step of it, and the relative L2 error (one rounding: about 1.7e-3)."""
    torch.manual_seed(0)
    x = torch.randn(4, n, 64, 64).to(memory_format=torch.channels_last).requires_grad_()
    w, b = (torch.randn(n, 3, 5, 5) * 0.1).requires_grad_(), torch.randn(3).requires_grad_()
    kw = dict(stride=2, padding=2, output_padding=1)
    grad = torch.randn(4, 3, 128, 128).to(torch.bfloat16)
    with _precision(path):
        y = F.conv_transpose2d(x, w, b, **kw)
    y.backward(grad)
    exact = [t.detach().to(torch.bfloat16).double().requires_grad_() for t in (x, w, b)]
    ideal = F.conv_transpose2d(*exact, **kw)
    ideal.backward(grad.double())
    bits = lambda t: t.detach().to(torch.bfloat16).view(torch.int16).int()  # noqa: E731
    parts = []
    for name, got, want in zip(("y", "dx", "dw", "db"), (y, x.grad, w.grad, b.grad), (ideal, *(t.grad for t in exact))):
        steps = (bits(got) - bits(want)).abs()
        error = ((got.detach().double() - want.detach()).norm() / want.detach().norm()).item()
        parts.append(f"{name} {100 * (steps == 0).float().mean():.2f} % exact, {100 * (steps <= 1).float().mean():.2f}"
                     f" % within a step, relative error {error:.1e}")
    return ", ".join(parts)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    torch.set_num_threads(1)
    x = torch.rand(8, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
    print(f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16()}; N = {n}, one thread")
    for compile in (False, True):
        rates = {path: [] for path in PATHS}
        for _ in range(2):
            for path in PATHS:
                rates[path].append(steps_per_s(n, path, x, compile))
        best = {path: max(r) for path, r in rates.items()}
        print(f"compile={compile}: steps/s " + ", ".join(f"{p} {' / '.join(f'{v:.2f}' for v in r)}"
                                                        for p, r in rates.items())
              + f"; fp32 / bf16 PyTorch = {best['fp32'] / best['bf16 PyTorch']:.2f}x, bf16 emulated / bf16 PyTorch = "
              f"{best['bf16 emulated'] / best['bf16 PyTorch']:.2f}x, bf16 emulated / fp32 = "
              f"{best['bf16 emulated'] / best['fp32']:.2f}x", flush=True)
    for path in PATHS[1:]:
        print(f"{path}, g_s's last layer against bfloat16's definition: {exactness(path, n)}")
