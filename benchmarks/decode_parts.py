"""Where a model's decode time goes: each part of kdlib's decode path timed on its own over the 24
Kodak images, one thread, after 4 images of warm-up (run it on a quiet machine). Then what exact
changes could still save (issue 44, item 3), in the same run: the largest computations whose sums no
pixel depends on, each timed against today's code on the same inputs, with the share of the decode's
bound (synthesis GMACs at this machine's float32 matrix-product rate, one thread, plus the coder) that
today's time and today's minus every saving would reach.

    python benchmarks/decode_parts.py [MODEL]     (default S16)
"""
import collections
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from kdlib import bitstream
from kdlib import entropy as E
from kdlib.bench import peak_gflops
from kdlib.data import kodak_paths
from kdlib.models import from_spec
from kdlib.resources import flops


def decode_in_parts(model, blob: bytes, seconds: dict, kept: list | None = None) -> None:
    """kdlib's decode of one file (:func:`kdlib.entropy.decode` and the pixel conversion of
    :mod:`kdlib.bitstream`), each part's time added to ``seconds``; with ``kept``, the hyper-latent and
    the last layer's input are appended to it."""
    header, payload = bitstream.read_header(blob)
    y_string, z_string = payload[header.z_length:], payload[:header.z_length]
    start = time.perf_counter()

    def part(name: str) -> None:
        nonlocal start
        now = time.perf_counter()
        seconds[name] += now - start
        start = now

    z_hat = E.decode_hyper(model, [z_string], header.z_shape)
    part("hyper-latent decode")
    indexes = E.scale_indexes(model, z_hat)[0]
    part("h_s + scale indexes")
    E._crc(indexes)
    part("CRC")
    cdfs, lengths, _ = E._used_tables(model, indexes)
    values = E.decode_symbols(y_string, indexes, cdfs, lengths, E._bits(model, len(cdfs)), E._rans_tables(model))
    part("rANS (y)")
    offsets = model.gaussian_conditional._offset.reshape(-1).float()
    x = offsets.index_select(0, indexes.reshape(-1)).add_(values).reshape(indexes.shape)[None]
    part("offsets")
    x = E._layout(x)
    part("layout")
    for k, layer in enumerate(model.g_s):
        if kept is not None and k == len(model.g_s) - 1:
            kept.append((z_hat, x.clone()))
            start = time.perf_counter()  # not counted
        x = E._layer(layer, x)
        part("last layer (sub-pixel)" if k == len(model.g_s) - 1 else "GDN" if k % 2 else "other convolutions")
    piece = x.clamp_(0, 1)[0].permute(1, 2, 0)
    pixels = np.empty(piece.shape, np.uint8)
    cast_numpy(piece, pixels)
    Image.fromarray(pixels, "RGB")
    part("clamp, 8-bit, PIL")


def cast_torch(piece: torch.Tensor, pixels: np.ndarray) -> None:
    """Session 29's conversion to uint8: torch's copy of ``piece * 255`` rounded."""
    torch.from_numpy(pixels).copy_(piece.mul(255).round_())


def cast_numpy(piece: torch.Tensor, pixels: np.ndarray) -> None:
    """:mod:`kdlib.bitstream`'s since session 30: rounded in place, then numpy's cast (the same whole numbers)."""
    piece.mul_(255).round_()
    np.copyto(pixels, piece.numpy(), casting="unsafe")


def last_layer(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, cast) -> np.ndarray:
    """The last layer as :func:`kdlib.entropy._subpixel_deconv` computes it (the sub-pixel convolution, its
    first 12 outputs: 16 where ``weight`` is zero-padded to oneDNN's width), clamped, then ``cast`` to uint8."""
    phases = F.conv2d(x, weight, bias, padding=1)[:, :12]
    n, _, h, w = phases.shape
    rows = phases.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, -1).permute(0, 1, 3, 2, 4, 5)
    piece = rows.reshape(n, 2 * h, 2 * w, -1).clamp_(0, 1)[0]
    pixels = np.empty(piece.shape, np.uint8)
    cast(piece, pixels)
    return pixels


def best_ms(function, inputs: list, repeats: int = 3) -> float:
    """Best of ``repeats`` passes over ``inputs``, in ms per input."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in inputs:
            function(item)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(inputs)


def exact_headroom(model, kept: list, seconds: dict, n: int) -> None:
    """Time the exact alternatives against today's code on the same inputs; print the savings and the bound's share."""
    weight, bias = E._subpixel_weights(model.g_s[-1])
    padded = (torch.cat([weight, weight.new_zeros(16 - len(weight), *weight.shape[1:])]),
              torch.cat([bias, bias.new_zeros(16 - len(bias))]))
    forms = {"before (session 29: torch's cast)": (weight, bias, cast_torch), "today (numpy's cast)": (weight, bias, cast_numpy),
             "open: 16 outputs, numpy's cast": (*padded, cast_numpy)}
    pixels = {name: [last_layer(x, *form) for _, x in kept] for name, form in forms.items()}
    equal = all(np.array_equal(a, b) for images in zip(*pixels.values()) for a, b in zip(images, images[1:]))
    ms = {name: best_ms(lambda item, form=form: last_layer(item[1], *form), kept) for name, form in forms.items()}
    # what E.scale_indexes does after h_s (the NaN check, the lower bound, the index): its time less h_s's
    indexes = best_ms(lambda item: E.scale_indexes(model, item[0]), kept) - best_ms(lambda item: E._run(model.h_s, item[0]), kept)
    rounded = [torch.from_numpy(p.astype(np.float32) / 255) for p in pixels["today (numpy's cast)"]]  # the casts alone
    inputs = best_ms(lambda piece: (piece.clone(), np.empty(piece.shape, np.uint8)), rounded)
    casts = {name: best_ms(lambda piece, cast=cast: cast(piece.clone(), np.empty(piece.shape, np.uint8)), rounded) - inputs
             for name, cast in (("torch", cast_torch), ("numpy", cast_numpy))}
    total = 1000 * sum(seconds.values()) / n
    saved = max(0.0, ms["today (numpy's cast)"] - ms["open: 16 outputs, numpy's cast"]) + indexes
    peak = peak_gflops()
    synthesis = 1000 * flops(model, 512, 768)["gmacs_decoder"] * 2 / peak  # ms an image, one thread
    bound = synthesis + 1000 * seconds["rANS (y)"] / n
    print(f"\nthe last layer and the pixel conversion, best of 3 passes over the {len(kept)} images "
          f"(pixels equal in all three on this CPU: {equal}):")
    for name, spent in ms.items():
        print(f"{spent:6.2f} ms  {name}")
    print(f"        x255, rounding and cast alone (the same clamped images): torch's {casts['torch']:.2f} ms, numpy's "
          f"{casts['numpy']:.2f} ms ({casts['torch'] / casts['numpy']:.1f}x)")
    print(f"{indexes:6.2f} ms  scale indexes after h_s (NaN check, lower bound, index): the most a one-pass loop could save")
    print(f"bound: {bound:.2f} ms an image (synthesis {synthesis:.2f} ms at {peak:.0f} GFLOP/s, coder "
          f"{bound - synthesis:.2f}); today {total:.2f} ms: {100 * bound / total:.1f} % of it; "
          f"minus both open savings ({saved:.2f} ms): {100 * bound / (total - saved):.1f} %")


@torch.no_grad()
def main(spec: str = "S16") -> None:
    torch.set_num_threads(1)
    model = from_spec(spec).eval()
    blobs = [bitstream.compress(Image.open(p).convert("RGB"), model) for p in kodak_paths()]
    seconds: dict[str, float] = collections.defaultdict(float)
    for blob in blobs[:4]:
        decode_in_parts(model, blob, seconds)
    seconds.clear()
    kept: list = []
    for blob in blobs:
        decode_in_parts(model, blob, seconds, kept)
    total = sum(seconds.values())
    for name, spent in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"{1000 * spent / len(blobs):6.2f} ms  {100 * spent / total:5.1f} %  {name}")
    print(f"{1000 * total / len(blobs):6.2f} ms an image ({spec}, {len(blobs)} Kodak images, one thread)")
    exact_headroom(model, kept, seconds, len(blobs))


if __name__ == "__main__":
    main(*sys.argv[1:])
