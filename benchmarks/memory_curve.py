"""Peak memory and time of compress and decompress against image size, tiled against the whole-image path.

    python benchmarks/memory_curve.py [MODEL ...] [--whole-up-to MPX]    (default: S16 T5, whole path to 16 Mpx)

Each measurement runs in a fresh process at one thread on one 4:3 image of 1, 4, 16 and 48 Mpx (a
Kodak photo resized, so the latents are a photo's): peak RSS (ru_maxrss) while coding, minus the
process's peak before it (imports, model, the input image or file), beside
kdlib.bitstream.working_memory's estimate, which the budgets (--max-memory) are checked against.
"tiled" is the codec as shipped (kdlib.entropy.TILE); "whole" the same code with one tile for the
whole image (the path before tiles), run up to --whole-up-to Mpx (its memory grows with the image:
about 10 GB for T5 at 48 Mpx). Also compares the two paths: whether they write the same file, and
how many pixels decode differently, by how much (oneDNN's transposed convolution may sum in another
order on a narrower tile: a last bit of a float, rarely a level of a pixel). Prints a Markdown table; time ratios are whole / tiled, measured in the same run.
"""
import json
import subprocess
import sys

import numpy as np

SIZES = ((1152, 864), (2304, 1728), (4608, 3456), (8000, 6000))  # 1, 4, 16, 48 Mpx

WORKER = r"""
import hashlib, json, resource, sys, time
import numpy as np, torch
from PIL import Image
from kdlib import bitstream, entropy
from kdlib.data import kodak_paths

torch.set_num_threads(1)
name, width, height, mode, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if path == "whole":
    entropy.TILE = 1 << 20
model = bitstream.released_model(name)
budget = dict(max_pixels=1 << 31, max_memory=1 << 40)
if mode == "compress":
    image = Image.open(kodak_paths()[0]).convert("RGB").resize((width, height), Image.BICUBIC)
    image.save(f"/tmp/kdlib-memory-{width}.png")  # the input of both paths' compress, and its size read back
    del image
    source = f"/tmp/kdlib-memory-{width}.png"
else:
    source = open(f"/tmp/kdlib-memory-{name}-{width}.kdl", "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "compress":
    out = bitstream.compress(source, model, **budget)
    open(f"/tmp/kdlib-memory-{name}-{width}.kdl", "wb").write(out)
    digest = hashlib.sha256(out).hexdigest()
else:
    pixels = np.asarray(bitstream.decompress(source, model, **budget))
    np.save(f"/tmp/kdlib-memory-{name}-{width}-{path}.npy", pixels)
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
seconds = time.perf_counter() - start
print(json.dumps({"MiB": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, "s": seconds,
                  "digest": digest, "estimate": bitstream.working_memory(model, height, width) / 2**20}))
"""


def run(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def main(models: list[str], whole_up_to: float) -> None:
    print("| model | image | Mpx | path | compress MiB | decompress MiB | estimate MiB | compress s/Mpx | decompress s/Mpx "
          "| time whole / tiled (compress, decompress) | same file | pixels differing (largest difference) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model in models:
        for width, height in SIZES:
            mpx, rows = width * height / 1e6, {}
            for path in ("tiled", "whole") if width * height / 1e6 <= whole_up_to else ("tiled",):
                enc = run(model, str(width), str(height), "compress", path)
                dec = run(model, str(width), str(height), "decompress", path)
                rows[path] = (enc, dec)
            for path, (enc, dec) in rows.items():
                ratio = same = differ = ""
                if path == "whole":
                    tiled = rows["tiled"]
                    ratio = f"{enc['s'] / tiled[0]['s']:.2f}, {dec['s'] / tiled[1]['s']:.2f}"
                    same = str(enc["digest"] == tiled[0]["digest"])
                    a, b = (np.load(f"/tmp/kdlib-memory-{model}-{width}-{p}.npy").astype(np.int16) for p in ("tiled", "whole"))
                    differ = f"{int((a != b).any(axis=-1).sum())} of {a.shape[0] * a.shape[1]} ({int(np.abs(a - b).max())})"
                print(f"| {model} | {width}x{height} | {mpx:.1f} | {path} | {enc['MiB']:.0f} | {dec['MiB']:.0f} | "
                      f"{enc['estimate']:.0f} | {enc['s'] / mpx:.2f} | {dec['s'] / mpx:.2f} | {ratio} | {same} | {differ} |",
                      flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    limit = 16.0
    if "--whole-up-to" in args:
        at = args.index("--whole-up-to")
        limit = float(args[at + 1])
        del args[at:at + 2]
    main(args or ["S16", "T5"], limit)
