"""One photo through the CLI against importing torch, whole processes, paired (issue 44).

Each round runs, in turn, ``python -c "import torch"``, ``kdlib compress kodim05.png`` and ``kdlib
decompress`` of its file (S16-long by default), as separate processes; the medians and each command's
ratio to torch's import are printed. The target: at most 1.25x.

    python benchmarks/startup.py [--rounds 7] [--model S16-long] [--image kodim05.png]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdlib import data


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--model", default="S16-long")
    parser.add_argument("--image", default="kodim05.png", help="a Kodak image")
    args = parser.parse_args()
    image = next(p for p in data.kodak_paths() if p.name == args.image)
    kdlib = [sys.executable, "-m", "kdlib.cli"]
    with tempfile.TemporaryDirectory() as folder:
        kdl, png = Path(folder) / "photo.kdl", Path(folder) / "photo.png"
        commands = {"python -c 'import torch'": [sys.executable, "-c", "import torch"],
                    "kdlib compress": [*kdlib, "compress", str(image), str(kdl), "--model", args.model, "--force"],
                    "kdlib decompress": [*kdlib, "decompress", str(kdl), str(png), "--force"]}
        subprocess.run(commands["kdlib compress"], check=True, capture_output=True)  # warm: the decoder's build, caches
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                times[name].append(seconds(command))
    base = statistics.median(times["python -c 'import torch'"])
    print(f"{args.image} with {args.model}, {args.rounds} rounds, median (min) seconds:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:28s} {median:6.2f} ({min(values):.2f})  {median / base:5.2f}x torch's import")


if __name__ == "__main__":
    main()
