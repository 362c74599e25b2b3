"""16-bit PNG reading: kdlib's reader (libspng through pyspng, rounded to 8 bits) against Pillow's own
read of the same file (which drops the low byte), median of 5, on a 2048x2048 RGB16 file of Paeth rows.

    python benchmarks/png16_reader.py
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from test_data import png16  # noqa: E402  (the tests' hand-written 16-bit PNG writer)

from kdlib.data import open_image  # noqa: E402


def median_seconds(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:2048, 0:2048]
    smooth = (np.sin(xx / 50) + np.cos(yy / 30) + 2) * 16000
    samples = np.stack([smooth, smooth.T, smooth[::-1]], -1) + rng.normal(0, 300, (2048, 2048, 3))
    with tempfile.TemporaryDirectory() as folder:
        path = png16(Path(folder) / "paeth.png", samples.clip(0, 65535).astype(np.uint16), filters=(4,))
        ours = median_seconds(lambda: open_image(path))
        pillow = median_seconds(lambda: Image.open(path).load())
    print(f"2048x2048 RGB16, Paeth: kdlib {ours:.3f} s, Pillow (8-bit, low byte dropped) {pillow:.3f} s, "
          f"ratio {ours / pillow:.2f}x")


if __name__ == "__main__":
    main()
