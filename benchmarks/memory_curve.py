"""Peak memory of compress and decompress against image size (issue 28: memory grows with the image).

    python benchmarks/memory_curve.py [MODEL ...]      (default: S16 T5)

Each measurement runs in a fresh process at one thread: peak RSS (ru_maxrss) after coding one
smooth random square image, minus the process's peak before it (imports, model, input), beside
kdlib.bitstream.working_memory's estimate, which the budgets (--max-memory) are checked against.
Prints a Markdown table.
"""
import json
import subprocess
import sys

SIDES = (512, 1024, 2048, 3072)

WORKER = r"""
import json, resource, sys
import numpy as np, torch
from PIL import Image
from kdlib.bitstream import compress, decompress, working_memory
from kdlib.models import load_model

torch.set_num_threads(1)
name, side, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
model = load_model(name)
small = np.random.default_rng(0).integers(0, 255, (side // 32, side // 32, 3), dtype=np.uint8)
image = Image.fromarray(small).resize((side, side), Image.BILINEAR)
budget = dict(max_pixels=1 << 31, max_memory=1 << 40)
blob = compress(image, model, **budget) if mode == "decompress" else None
if mode == "decompress":
    print(json.dumps({"blob": blob.hex()}))
    sys.exit()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
compress(image, model, **budget)
print(json.dumps({"MiB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                  "estimate": working_memory(model, side, side) / 2**20}))
"""

DECODER = r"""
import json, resource, sys
import torch
from kdlib.bitstream import decompress, working_memory
from kdlib.models import load_model

torch.set_num_threads(1)
model = load_model(sys.argv[1])
blob = bytes.fromhex(sys.stdin.read())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = decompress(blob, model, max_pixels=1 << 31, max_memory=1 << 40)
print(json.dumps({"MiB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
                  "estimate": working_memory(model, image.height, image.width) / 2**20}))
"""


def run(code: str, *args: str, stdin: str | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main(models: list[str]) -> None:
    print("| model | side | pixels | compress MiB | decompress MiB | estimate MiB | B/px measured (max) |")
    print("|---|---|---|---|---|---|---|")
    for model in models:
        for side in SIDES:
            enc = run(WORKER, model, str(side), "compress")
            blob = run(WORKER, model, str(side), "decompress")["blob"]
            dec = run(DECODER, model, stdin=blob)
            most = max(enc["MiB"], dec["MiB"])
            print(f"| {model} | {side} | {side * side / 1e6:.2f} M | {enc['MiB']:.0f} | {dec['MiB']:.0f} | "
                  f"{enc['estimate']:.0f} | {most * 2**20 / side**2:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["S16", "T5"])
