"""Entropy coding of a scale-hyperprior codec on CompressAI's rANS coder, deterministic and lean.

Same bitstream as CompressAI's ``compress()`` / ``decompress()`` (same quantisation, CDF
tables, scale indexes and rANS coder), with three differences:

- Determinism. The only floats that reach the entropy coder are the scales from ``h_s``.
  ``h_s`` runs outside oneDNN (whose blocked kernels change their summation order with the
  thread count) and one image at a time (the plain kernels' order depends on the batch
  size), so the scale indexes are the same at any thread count and in any batch; the
  transforms ``g_a`` and ``g_s`` compute GDN's 1x1 normalisation the same way (the only
  layer found to vary) and also run per image, so files and decoded pixels are too. The encoder also returns a CRC of the indexes, which :func:`decode` checks: a decoder
  whose floats still differ (another CPU family, say) stops with an error instead of
  returning a wrong image.
- Speed. Scale indexes in one ``bucketize`` (CompressAI: a Python loop over 64 scales), the
  CDF tables converted to Python lists once per model instead of at every call, decoded
  symbols gathered in a C array, GDN's 1x1 normalisation outside oneDNN (also faster for
  narrow models here) and channels-last transforms for wide ones.
- Batches share the model, tables and coder; the network runs per image (see above).
"""
from __future__ import annotations

import struct
import zlib
from array import array

import torch
import torch.nn.functional as F
from compressai.ans import RansDecoder, RansEncoder
from compressai.layers import GDN

from kdlib.models import Hyperprior

_HEADER = struct.Struct(">IIHH")  # y length, z length, z height, z width


class RoundTripError(RuntimeError):
    """The decoder did not reproduce the encoder's quantised latent or scale indexes."""


def _gdn(layer: GDN, x: torch.Tensor) -> torch.Tensor:
    """GDN with its normalisation conv outside oneDNN: thread-count and batch invariant."""
    channels = x.size(1)
    gamma = layer.gamma_reparam(layer.gamma).reshape(channels, channels, 1, 1)
    with torch.backends.mkldnn.flags(enabled=False):
        norm = F.conv2d(x * x, gamma, layer.beta_reparam(layer.beta))
    return x * (torch.sqrt(norm) if layer.inverse else torch.rsqrt(norm))


def _layout(model: Hyperprior, x: torch.Tensor) -> torch.Tensor:
    """Channels-last for wide models (oneDNN's transposed convs are ~1.7x faster so at N=128 on
    this CPU), contiguous for narrow ones (where it is slower). A rule on N alone, so that the
    encoder and every decoder of a model compute the same way."""
    return x.contiguous(memory_format=torch.channels_last if model.N >= 64 else torch.contiguous_format)


def _run(layers: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The layers, one image at a time (kernels may sum differently for other batch sizes)."""
    outputs = []
    for image in x.split(1):
        for layer in layers:
            image = _gdn(layer, image) if isinstance(layer, GDN) else layer(image)
        outputs.append(image)
    return torch.cat(outputs)


def analyze(model: Hyperprior, x: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    """``g_a(x)``; deterministic: stable GDN layers, the same file at any thread count."""
    return _run(model.g_a, _layout(model, x)) if deterministic else model.g_a(x)


def synthesize(model: Hyperprior, y_hat: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    """``g_s(y_hat)`` clamped to [0, 1]; deterministic: stable GDN layers, the same pixels anywhere."""
    x_hat = _run(model.g_s, _layout(model, y_hat)) if deterministic else model.g_s(y_hat)
    return x_hat.clamp_(0, 1).contiguous()


def scale_indexes(model: Hyperprior, z_hat: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    """CDF index of every element of y (``h_s`` outside oneDNN if deterministic), CompressAI's rule in one op."""
    with torch.backends.mkldnn.flags(enabled=not deterministic):
        scales = _run(model.h_s, z_hat) if deterministic else model.h_s(z_hat)
    gc = model.gaussian_conditional
    scales = gc.lower_bound_scale(scales)
    table = torch.as_tensor(gc.scale_table[:-1], dtype=scales.dtype, device=scales.device)
    # number of table entries strictly below the scale == CompressAI's build_indexes
    return torch.bucketize(scales, table, out_int32=True)


def _tables(model: Hyperprior) -> tuple[list, list, list]:
    """The Gaussian conditional's CDF tables as Python lists, built once per model."""
    gc = model.gaussian_conditional
    key = (gc._quantized_cdf.data_ptr(), gc._quantized_cdf._version)
    if getattr(model, "_kdl_tables_key", None) != key:
        model._kdl_tables = (gc._quantized_cdf.tolist(), gc._cdf_length.reshape(-1).int().tolist(),
                             gc._offset.reshape(-1).int().tolist())
        model._kdl_tables_key = key
    return model._kdl_tables


def _crc(indexes: torch.Tensor) -> int:
    return zlib.crc32(indexes.to(torch.int16).cpu().numpy().tobytes())


@torch.no_grad()
def encode(model: Hyperprior, x: torch.Tensor, deterministic: bool = True) -> dict:
    """Compress a padded batch ``x``: ``{"strings": [y, z], "shape", "y_hat", "index_crc"}``.

    ``deterministic=False`` computes every float exactly as CompressAI's ``compress()`` does
    (default oneDNN kernels): the evaluation path, comparable to CompressAI's own numbers.
    """
    y = analyze(model, x, deterministic)
    z = model.h_a(torch.abs(y))
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    indexes = scale_indexes(model, z_hat, deterministic)
    symbols = torch.round(y).int()
    cdf, lengths, offsets = _tables(model)
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
    cdf, lengths, offsets = _tables(model)
    coder = RansDecoder()
    flat_indexes = indexes.reshape(len(indexes), -1).tolist()
    values = array("i")  # a C array: far cheaper than torch.tensor() on a list of lists
    for string, idx in zip(strings[0], flat_indexes):
        values.extend(coder.decode_with_indexes(string, idx, cdf, lengths, offsets))
    y_hat = torch.frombuffer(values, dtype=torch.int32).to(z_hat.device, torch.float32).reshape(indexes.shape)
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
