"""A training step in bf16 autocast against fp32 on this CPU: forward, backward and Adam of a student
(N = 16 by default) on 8 crops of 128x128, one thread, no compile, each precision timed twice in turn
after 3 steps of warm-up; prints steps/s and the ratio. Run it with the trainers stopped.

    python benchmarks/bf16_step.py [N]
"""
import sys
import time

import torch

from kdlib.models import Hyperprior
from kdlib.train import native_bf16


def steps_per_s(n: int, bf16: bool, x: torch.Tensor, steps: int = 10) -> float:
    model = Hyperprior(n, 192).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
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


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.rand(8, 3, 128, 128).to(memory_format=torch.channels_last)
    rates = {"fp32": [], "bf16": []}
    for _ in range(2):
        for name in rates:
            rates[name].append(steps_per_s(n, name == "bf16", x))
    print(f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {native_bf16()}; N = {n}, steps/s: "
          + ", ".join(f"{k} {' / '.join(f'{v:.2f}' for v in vs)}" for k, vs in rates.items())
          + f"; fp32 / bf16 = {max(rates['fp32']) / max(rates['bf16']):.2f}x")
