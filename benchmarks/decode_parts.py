"""Where a model's decode time goes: each part of kdlib's decode path timed on its own over the 24
Kodak images, one thread, after 4 images of warm-up (run it on a quiet machine).

    python benchmarks/decode_parts.py [MODEL]     (default S16)
"""
import collections
import sys
import time

import numpy as np
import torch
from PIL import Image

from kdlib import bitstream
from kdlib import entropy as E
from kdlib.data import kodak_paths
from kdlib.models import from_spec


def decode_in_parts(model, blob: bytes, seconds: dict) -> None:
    """kdlib's decode of one file (:func:`kdlib.entropy.decode` and the pixel conversion of
    :mod:`kdlib.bitstream`), each part's time added to ``seconds``."""
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
        x = E._layer(layer, x)
        part("last layer (sub-pixel)" if k == len(model.g_s) - 1 else "GDN" if k % 2 else "other convolutions")
    piece = x.clamp_(0, 1)[0].permute(1, 2, 0)
    pixels = np.empty(piece.shape, np.uint8)
    torch.from_numpy(pixels).copy_(piece.mul(255).round_())
    Image.fromarray(pixels, "RGB")
    part("clamp, 8-bit, PIL")


@torch.no_grad()
def main(spec: str = "S16") -> None:
    torch.set_num_threads(1)
    model = from_spec(spec).eval()
    blobs = [bitstream.compress(Image.open(p).convert("RGB"), model) for p in kodak_paths()]
    seconds: dict[str, float] = collections.defaultdict(float)
    for blob in blobs[:4]:
        decode_in_parts(model, blob, seconds)
    seconds.clear()
    for blob in blobs:
        decode_in_parts(model, blob, seconds)
    total = sum(seconds.values())
    for name, spent in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"{1000 * spent / len(blobs):6.2f} ms  {100 * spent / total:5.1f} %  {name}")
    print(f"{1000 * total / len(blobs):6.2f} ms an image ({spec}, {len(blobs)} Kodak images, one thread)")


if __name__ == "__main__":
    main(*sys.argv[1:])
