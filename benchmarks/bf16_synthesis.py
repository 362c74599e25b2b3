"""Would bfloat16 synthesis make decoding faster here? (issue 29, item 3: an opt-in only if it is)

    python benchmarks/bf16_synthesis.py [MODEL]     (default T5; Kodak's first image, one thread)

Times kdlib's float32 synthesis (``kdlib.entropy.synthesize``) against ``g_s`` under CPU bfloat16
autocast in the same run, and prints how far the bf16 pixels move (max levels, PSNR of one against the other).
"""
import sys

import torch
from PIL import Image
from single_image import best_seconds  # benchmarks/, next to this script

from kdlib import data, entropy
from kdlib.data import kodak_paths
from kdlib.models import from_spec


def main(spec: str = "T5") -> None:
    torch.set_num_threads(1)
    model = from_spec(spec).eval()
    x = data.pad(data.to_tensor(Image.open(kodak_paths()[0]).convert("RGB"))[None])[0]

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.g_s(entropy._layout(y)).float().clamp_(0, 1)

    with torch.no_grad():
        y = torch.round(entropy.analyze(model, x))
        fp32, low = entropy.synthesize(model, y), bf16()
        t32, t16 = best_seconds(lambda: entropy.synthesize(model, y)), best_seconds(bf16)
    levels = ((fp32 * 255).round() - (low * 255).round()).abs()
    psnr = 10 * torch.log10(1 / ((fp32 - low) ** 2).mean())
    print(f"{spec}, {x.shape[-1]}x{x.shape[-2]}, one thread, best of 7")
    print(f"float32 synthesis {t32 * 1e3:.1f} ms, bf16 autocast {t16 * 1e3:.1f} ms: bf16 at {t32 / t16:.2f}x the speed")
    print(f"bf16 pixels against float32: max {levels.max():.0f} levels, {(levels > 0).float().mean():.1%} differ, "
          f"PSNR {psnr:.1f} dB")


if __name__ == "__main__":
    main(*sys.argv[1:])
