"""Time kdlib's GDN (``kdlib.entropy._gdn_``) at several block sizes, one thread, against 32768 rows
in the same run, and check that every block size gives the same numbers.

    python benchmarks/gdn_blocks.py [MODEL]     (default T5; its GDN layers at Kodak size, 768x512)
"""
import sys
import time

import torch
from compressai.layers import GDN

from kdlib import entropy
from kdlib.models import from_spec

BASELINE, SIZES = 32768, (32768, 8192, 4096, 2048, 1024, 512, 256)


def best_seconds(layer: GDN, x: torch.Tensor, repeats: int = 7) -> float:
    copies, best = [x.clone() for _ in range(repeats)], float("inf")
    for copy in copies:  # GDN works in place: a fresh copy per call, made outside the timing
        start = time.perf_counter()
        entropy._gdn_(layer, copy)
        best = min(best, time.perf_counter() - start)
    return best


def main(spec: str = "T5") -> None:
    torch.set_num_threads(1)
    model = from_spec(spec).eval()
    layers = [(f"g_a[{i}]", m, 4 ** (i // 2 + 1)) for i, m in enumerate(model.g_a) if isinstance(m, GDN)]
    layers += [(f"g_s[{i}]", m, 4 ** (3 - i // 2)) for i, m in enumerate(model.g_s) if isinstance(m, GDN)]
    torch.manual_seed(0)
    print(f"{spec}, one thread, best of 7; ms per call, ratio against {BASELINE} rows")
    print("layer    rows:" + "".join(f"{s:>9}" for s in SIZES))
    with torch.no_grad():
        for name, layer, down in layers:
            h, w = 512 // int(down ** 0.5), 768 // int(down ** 0.5)
            x = torch.rand(1, layer.beta.numel(), h, w).contiguous(memory_format=torch.channels_last)
            outputs, times = [], []
            for rows in SIZES:
                entropy._GDN_FLOATS = rows * layer.beta.numel()
                outputs.append(entropy._gdn_(layer, x.clone()))
                times.append(best_seconds(layer, x))
            same = all(torch.equal(outputs[0], o) for o in outputs[1:])
            print(f"{name:8s} {h}x{w:<4}" + "".join(f"{t * 1e3:9.1f}" for t in times) + ("" if same else "  DIFFERENT NUMBERS"))
            print(f"{'':8s} ratio    " + "".join(f"{times[0] / t:9.2f}" for t in times))


if __name__ == "__main__":
    main(*sys.argv[1:])
