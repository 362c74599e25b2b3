"""Decode time of ONE .kdl file (the latency ``kdlib decompress file.kdl`` sees, torch at its
default threads) and the part of it spent in the entropy decoder, which runs on one core: the
most that splitting y into substreams decoded on both cores could save (issue 29, item 1).

    python benchmarks/single_image.py [MODEL ...]     (default T5 S64 S16; Kodak's first image)
"""
import sys
import time

import torch
from PIL import Image

from kdlib import bench, bitstream
from kdlib.data import kodak_paths
from kdlib.models import from_spec


def best_seconds(function, repeats: int = 7) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def coder_seconds(blob: bytes, model, repeats: int = 7) -> float:
    """Time inside the entropy decoder (z and y streams) during one decode, best of ``repeats``."""
    return min(bench._coder_seconds(bitstream, [blob], model) for _ in range(repeats))


def main(specs: list[str]) -> None:
    image = Image.open(kodak_paths()[0]).convert("RGB")
    print(f"{image.width}x{image.height}, {torch.get_num_threads()} threads, best of 7")
    print("model  decode ms  coder ms  coder share  at most saved by 2 substreams")
    for spec in specs:
        model = from_spec(spec).eval()
        blob = bitstream.compress(image, model)
        total, coder = best_seconds(lambda: bitstream.decompress(blob, model)), coder_seconds(blob, model)
        print(f"{spec:6s} {total * 1e3:9.1f} {coder * 1e3:9.1f} {coder / total:12.1%} {coder / 2 / total:16.1%}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["T5", "S64", "S16"])
