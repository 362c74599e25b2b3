"""Entropy coding of a scale-hyperprior codec on CompressAI's rANS coder, deterministic and lean.

Same bitstream as CompressAI's ``compress()`` / ``decompress()`` (same quantisation, CDF
tables, scale indexes and rANS coder; files differ from its strings only if a float rounds
across .5 differently), with these differences:

- Determinism. On this CPU, oneDNN's 1x1 convolution (GDN's normalisation) changes its
  result with the thread count, and kernels may sum differently for another batch size;
  its other (transposed) convolutions were found thread-count invariant. So GDN is
  computed as a plain matrix product and every network pass runs one image at a time:
  scale indexes, files and decoded pixels are then the same at any thread count and in
  any batch (``benchmarks/check_determinism.py``, ``tests/test_determinism.py``). No
  global switch is flipped (such a flag would race between the threads of a batch). The encoder also returns a CRC of the indexes, which
  :func:`decode` checks: a decoder whose floats still differ (another CPU family, say)
  stops with an error instead of returning a wrong image.
- Speed. Scale indexes from the log of the scale, made exact by three comparisons
  (CompressAI: a Python loop over 64 scales), the
  CDF tables converted to Python lists once per model instead of at every call, decoded
  symbols gathered with ``np.fromiter``, the index CRC read in place, GDN as one matrix
  product, and channels-last transforms.
- Batches share the model and tables; the network runs per image (see above), and
  :mod:`kdlib.bitstream` runs one image per core.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ans import RansDecoder, RansEncoder
from compressai.layers import GDN

from kdlib.models import Hyperprior

_HEADER = struct.Struct(">IIHH")  # y length, z length, z height, z width


class RoundTripError(RuntimeError):
    """The decoder did not reproduce the encoder's quantised latent or scale indexes."""


def _gdn(layer: GDN, x: torch.Tensor) -> torch.Tensor:
    """GDN as one matrix product on the channels-last view (rows = pixels): no oneDNN, no layout
    copy, sqrt and product in place. Same numbers at any thread count (tested), and faster."""
    n, c, h, w = x.shape
    gamma = layer.gamma_reparam(layer.gamma)
    rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view when x is channels-last
    norm = torch.addmm(layer.beta_reparam(layer.beta), rows * rows, gamma.t())
    norm = norm.sqrt_() if layer.inverse else norm.rsqrt_()
    return norm.mul_(rows).reshape(n, h, w, c).permute(0, 3, 1, 2)


def _layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last, where oneDNN's (transposed) convolutions ran 1.1-3.5x faster on this CPU for
    N=16..128. Fixed, so that the encoder and every decoder compute the same way."""
    return x.contiguous(memory_format=torch.channels_last)


def _run(layers: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The layers, one image at a time (kernels may sum differently for other batch sizes)."""
    outputs = []
    for image in x.split(1):
        for layer in layers:
            image = _gdn(layer, image) if isinstance(layer, GDN) else layer(image)
        outputs.append(image)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def analyze(model: Hyperprior, x: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    """``g_a(x)``; deterministic: stable GDN layers, the same file at any thread count."""
    return _run(model.g_a, _layout(x)) if deterministic else model.g_a(x)


def synthesize(model: Hyperprior, y_hat: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    """``g_s(y_hat)`` clamped to [0, 1]; deterministic: stable GDN layers, the same pixels anywhere."""
    x_hat = _run(model.g_s, _layout(y_hat)) if deterministic else model.g_s(y_hat)
    return x_hat.clamp_(0, 1)


def scale_indexes(model: Hyperprior, z_hat: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    """CDF index of every element of y (``h_s`` per image if deterministic): CompressAI's
    ``build_indexes``, i.e. the number of scale-table entries below the scale, in a few ops."""
    scales = _run(model.h_s, z_hat) if deterministic else model.h_s(z_hat)
    scales = model.gaussian_conditional.lower_bound_scale(scales)
    table = _tables(model)[3]
    if table["log_step"] is None:
        return torch.bucketize(scales, table["bounds"], out_int32=True)
    # geometric table: the log gives the bracket to within one; three comparisons make it exact
    k = ((scales.log() - table["log_first"]) / table["log_step"]).floor_().clamp_(0, len(table["bounds"]) - 1).long()
    padded = table["padded"]
    count = (padded[k] < scales).int() + (padded[k + 1] < scales).int() + (padded[k + 2] < scales).int()
    return count.add_(k.int()).sub_(1)


def _tables(model: Hyperprior) -> tuple[list, list, list, dict]:
    """The Gaussian conditional's CDF tables as Python lists, and its scale table, built once per model."""
    gc = model.gaussian_conditional
    key = (gc._quantized_cdf.data_ptr(), gc._quantized_cdf._version, gc.scale_table._version)
    if getattr(model, "_kdl_tables_key", None) != key:
        bounds = gc.scale_table[:-1].float()
        logs = bounds.double().log()
        step = (logs[-1] - logs[0]).item() / (len(bounds) - 1)
        geometric = len(bounds) > 2 and torch.allclose(logs.diff(), torch.full_like(logs[1:], step), rtol=1e-3)
        inf = torch.tensor([float("inf")])
        scale = {"bounds": bounds, "padded": torch.cat([-inf, bounds, inf]),
                 "log_first": logs[0].item(), "log_step": step if geometric else None}
        model._kdl_tables = (gc._quantized_cdf.tolist(), gc._cdf_length.reshape(-1).int().tolist(),
                             gc._offset.reshape(-1).int().tolist(), scale)
        model._kdl_tables_key = key
    return model._kdl_tables


def _crc(indexes: torch.Tensor) -> int:
    """CRC32 of the scale indexes as little-endian int32 (no copy on little-endian machines)."""
    return zlib.crc32(indexes.to(torch.int32).cpu().contiguous().numpy().astype("<i4", copy=False))


@torch.no_grad()
def encode(model: Hyperprior, x: torch.Tensor, deterministic: bool = True) -> dict:
    """Compress a padded batch ``x``: ``{"strings": [y, z], "shape", "y_hat", "index_crc"}``.

    ``deterministic=False`` computes every float exactly as CompressAI's ``compress()`` does
    (default oneDNN kernels): the evaluation path, comparable to CompressAI's own numbers.
    """
    y = analyze(model, x, deterministic)
    z = _run(model.h_a, torch.abs(y)) if deterministic else model.h_a(torch.abs(y))
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    indexes = scale_indexes(model, z_hat, deterministic)
    symbols = torch.round(y).int()
    cdf, lengths, offsets, _ = _tables(model)
    coder = RansEncoder()
    flat_symbols, flat_indexes = symbols.reshape(len(x), -1).tolist(), indexes.reshape(len(x), -1).tolist()
    y_strings = [coder.encode_with_indexes(s, i, cdf, lengths, offsets) for s, i in zip(flat_symbols, flat_indexes)]
    return {"strings": [y_strings, z_strings], "shape": tuple(z.size()[-2:]), "y_hat": symbols.float(),
            "index_crc": [_crc(i) for i in indexes]}


@torch.no_grad()
def decode(model: Hyperprior, strings: list, shape: tuple[int, int], index_crc: list[int] | None = None,
           deterministic: bool = True) -> dict:
    """Decompress ``[y_strings, z_strings]``: ``{"x_hat", "y_hat"}``, ``x_hat`` in [0, 1], still padded.

    With ``index_crc`` (from :func:`encode`), raises :class:`RoundTripError` if the decoder's
    scale indexes are not the encoder's. ``deterministic`` as in :func:`encode`.
    """
    z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
    indexes = scale_indexes(model, z_hat, deterministic)
    if index_crc is not None:
        for i, (expected, idx) in enumerate(zip(index_crc, indexes)):
            if _crc(idx) != expected:
                raise RoundTripError(f"Image {i}: this decoder's scale indexes differ from the encoder's "
                                     "(floating-point results differ between the two machines); cannot decode exactly")
    cdf, lengths, offsets, _ = _tables(model)
    coder = RansDecoder()
    flat_indexes = indexes.reshape(len(indexes), -1).tolist()
    count = indexes[0].numel()  # np.fromiter: the cheapest way from the coder's list to an array
    values = [np.fromiter(coder.decode_with_indexes(string, idx, cdf, lengths, offsets), np.int32, count)
              for string, idx in zip(strings[0], flat_indexes)]
    y_hat = torch.from_numpy(np.concatenate(values)).to(z_hat.device, torch.float32).reshape(indexes.shape)
    return {"x_hat": synthesize(model, y_hat, deterministic), "y_hat": y_hat}


def pack(y_string: bytes, z_string: bytes, shape: tuple[int, int]) -> bytes:
    """One image's streams as bytes: a 12-byte header, then y and z (for measurements; files use
    :mod:`kdlib.bitstream`)."""
    return _HEADER.pack(len(y_string), len(z_string), *shape) + y_string + z_string


def unpack(blob: bytes) -> tuple[bytes, bytes, tuple[int, int]]:
    if len(blob) < _HEADER.size:
        raise ValueError(f"Stream too short ({len(blob)} bytes) for its header")
    y_len, z_len, h, w = _HEADER.unpack_from(blob)
    if len(blob) != _HEADER.size + y_len + z_len:
        raise ValueError(f"Stream length {len(blob)} does not match its header ({_HEADER.size + y_len + z_len})")
    body = blob[_HEADER.size:]
    return body[:y_len], body[y_len:], (h, w)
