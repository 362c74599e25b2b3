"""Check `kdlib eval` against CompressAI's own eval_model (compress()/decompress()) on Kodak.

    python benchmarks/compare_compressai.py [CHECKPOINT]

Without CHECKPOINT, a ScaleHyperprior(128, 192) with seeded random weights is written the
way the zoo's files are (a plain state dict). Both tools run on the same file (CompressAI's
eval_model updates the entropy coder's CDF tables, as kdlib's loader does when a file has
none); the mean PSNR, MS-SSIM and bpp must agree to 1e-6.
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from compressai.models import ScaleHyperprior

from kdlib.data import kodak_paths

BIN = Path(sys.executable).parent


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kdlib-compare-"))
    if len(sys.argv) > 1:  # a private copy: a training run may rewrite the file meanwhile
        checkpoint = work / Path(sys.argv[1]).name
        shutil.copyfile(sys.argv[1], checkpoint)
    else:
        torch.manual_seed(0)
        model = ScaleHyperprior(128, 192)
        model.update()
        checkpoint = work / "scale-hyperprior-128-192.pth.tar"
        torch.save(model.state_dict(), checkpoint)
    kodak = kodak_paths()[0].parent
    # CompressAI's eval_model runs at 1 thread (torch.set_num_threads(1)); so does kdlib here, as
    # oneDNN's results change with the thread count (see kdlib.entropy).
    subprocess.run([BIN / "kdlib", "--threads", "1", "eval", str(checkpoint), "--name", "kdlib", "--out", str(work)],
                   check=True)
    subprocess.run([BIN / "python", "-m", "compressai.utils.eval_model", "checkpoint", str(kodak),
                    "-a", "bmshj2018-hyperprior", "-p", str(checkpoint),
                    "-d", str(work), "-o", "compressai.json"], check=True, capture_output=True)
    ours = json.loads((work / "kdlib.json").read_text())["results"]
    theirs = json.loads((work / "compressai.json").read_text())["results"]
    worst = 0.0
    print(f"{'metric':<12} {'kdlib':>14} {'compressai':>14} {'|diff|':>10}")
    for key in ("psnr-rgb", "ms-ssim-rgb", "bpp"):
        diff = abs(ours[key][0] - theirs[key][0])
        worst = max(worst, diff)
        print(f"{key:<12} {ours[key][0]:>14.8f} {theirs[key][0]:>14.8f} {diff:>10.2e}")
    print("equal to 1e-6" if worst <= 1e-6 else "MISMATCH")
    return 0 if worst <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
