"""Time two other ways of computing ``g_a`` (the bulk of an encode) against kdlib's, in the same run,
through ``kdlib.bitstream.compress_batch`` (one image per core, as ``kdlib bench codec`` times it):

- strips: each convolution + GDN pair in strips of output rows, GDN on the strip while it is in
  cache. Exact (GDN kept on kdlib's blocks of the whole layer), so the same files.
- space-to-depth: the 3-channel stride-2 first layer as a stride-1 3x3 convolution over the image's
  2x2 phases. Other sums (floats within 7e-7), so some files differ.

    python benchmarks/encode_paths.py [MODEL ...] [--images N]   (default T5 S16, 8 Kodak images)
"""
import argparse
import time

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from PIL import Image

from kdlib import bitstream, entropy
from kdlib.data import kodak_paths
from kdlib.models import from_spec


def conv_gdn_strips(conv: torch.nn.Conv2d, gdn: GDN, x: torch.Tensor, strip: int) -> torch.Tensor:
    (k, _), (s, _), (p, q) = conv.kernel_size, conv.stride, conv.padding
    h, w = x.shape[-2:]
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * q - k) // s + 1
    out = torch.empty(1, conv.out_channels, ho, wo, memory_format=torch.channels_last)
    rows = out.permute(0, 2, 3, 1).view(-1, conv.out_channels)
    blocks = entropy._gdn_blocks(len(rows), conv.out_channels)  # kdlib's blocks of the whole layer, each once its rows are in
    gamma_t, beta = gdn.gamma_reparam(gdn.gamma).t(), gdn.beta_reparam(gdn.beta)
    for r0 in range(0, ho, strip):
        r1 = min(ho, r0 + strip)
        top, bottom = s * r0 - p, s * (r1 - 1) - p + k  # input rows of outputs r0 .. r1 - 1
        if top >= 0 and bottom <= h:
            part = F.conv2d(x[:, :, top:bottom], conv.weight, conv.bias, stride=s, padding=(0, q))
        else:  # a border strip: the layer's zero padding, outputs beyond the strip dropped
            first = max(0, s * (r0 - -(-p // s)))
            part = F.conv2d(x[:, :, first:min(h, bottom)], conv.weight, conv.bias, stride=s, padding=(p, q))
            part = part[:, :, r0 - first // s:r0 - first // s + r1 - r0]
        out[:, :, r0:r1] = part
        while blocks and blocks[0][1] <= r1 * wo:
            block = rows[slice(*blocks.pop(0))]  # kdlib's GDN arithmetic (entropy._gdn_), block by block
            block.mul_(torch.addmm(beta, block * block, gamma_t).rsqrt_())
    return out


def analyze_in_strips(model, x: torch.Tensor, deterministic: bool = True, strip: int = 32) -> torch.Tensor:
    layers, x = list(model.g_a), entropy._layout(x)
    for conv, gdn in zip(layers[0:-1:2], layers[1::2]):
        x = conv_gdn_strips(conv, gdn, x, strip)
    return layers[-1](x)


def space_to_depth_layer(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not (isinstance(layer, torch.nn.Conv2d) and layer.in_channels == 3):
        return entropy_layer(layer, x)
    o, h, w = layer.out_channels, *x.shape[-2:]
    weight = F.pad(layer.weight, (0, 1, 0, 1)).reshape(o, 3, 3, 2, 3, 2).permute(0, 1, 3, 5, 2, 4)
    phases = F.pixel_unshuffle(F.pad(x, (2, 2 * ((w - 1) // 2 + 1) + 2 - w, 2, 2 * ((h - 1) // 2 + 1) + 2 - h)), 2)
    return F.conv2d(entropy._layout(phases), weight.reshape(o, 12, 3, 3), layer.bias)


entropy_layer, entropy_analyze = entropy._layer, entropy.analyze
PATHS = {"kdlib": (entropy_layer, entropy_analyze), "strips": (entropy_layer, analyze_in_strips),
         "space-to-depth": (space_to_depth_layer, entropy_analyze)}


def main(specs: list[str], count: int, repeats: int = 4) -> None:
    images = [Image.open(p).convert("RGB") for p in kodak_paths()[:count]]
    print(f"{count} Kodak images, {torch.get_num_threads()} threads, best of {repeats}; ms per image")
    for spec in specs:
        model = from_spec(spec).eval()
        best, files = dict.fromkeys(PATHS, float("inf")), {}
        for _ in range(repeats):
            for path, (layer, analyze) in PATHS.items():
                entropy._layer, entropy.analyze = layer, analyze
                start = time.perf_counter()
                files[path] = bitstream.compress_batch(images, model)
                best[path] = min(best[path], time.perf_counter() - start)
        entropy._layer, entropy.analyze = entropy_layer, entropy_analyze
        for path, seconds in best.items():
            same = sum(a == b for a, b in zip(files[path], files["kdlib"]))
            print(f"{spec:4s} {path:15s} {seconds / count * 1e3:7.1f} ms  ratio {best['kdlib'] / seconds:5.2f}"
                  f"  files identical to kdlib's: {same}/{count}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["T5", "S16"])
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    with torch.no_grad():
        main(args.models, args.images)
