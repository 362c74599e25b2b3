"""Entropy coding of a scale-hyperprior codec on CompressAI's rANS coders.

:func:`encode` / :func:`decode` are CompressAI's ``compress()`` / ``decompress()`` for
:class:`~kdlib.models.Hyperprior`, returning the quantised latent ``y_hat`` as well so
that a round trip can be checked exactly.
"""
from __future__ import annotations

import struct

import torch

from kdlib.models import Hyperprior

_HEADER = struct.Struct(">IIHH")  # y length, z length, z height, z width


class RoundTripError(RuntimeError):
    """The decoder did not reproduce the encoder's quantised latent."""


@torch.no_grad()
def encode(model: Hyperprior, x: torch.Tensor) -> dict:
    """Compress a padded batch ``x``: ``{"strings": [y, z], "shape", "y_hat"}``."""
    y = model.g_a(x)
    z = model.h_a(torch.abs(y))
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    indexes = model.gaussian_conditional.build_indexes(model.h_s(z_hat))
    y_strings = model.gaussian_conditional.compress(y, indexes)
    y_hat = model.gaussian_conditional.quantize(y, "dequantize")
    return {"strings": [y_strings, z_strings], "shape": tuple(z.size()[-2:]), "y_hat": y_hat}


@torch.no_grad()
def decode(model: Hyperprior, strings: list, shape: tuple[int, int]) -> dict:
    """Decompress: ``{"x_hat", "y_hat"}`` with ``x_hat`` clamped to [0, 1] (still padded)."""
    z_hat = model.entropy_bottleneck.decompress(strings[1], shape)
    indexes = model.gaussian_conditional.build_indexes(model.h_s(z_hat))
    y_hat = model.gaussian_conditional.decompress(strings[0], indexes, z_hat.dtype)
    return {"x_hat": model.g_s(y_hat).clamp_(0, 1), "y_hat": y_hat}


def pack(y_string: bytes, z_string: bytes, shape: tuple[int, int]) -> bytes:
    """One image's streams as bytes: a 12-byte header, then y and z."""
    return _HEADER.pack(len(y_string), len(z_string), *shape) + y_string + z_string


def unpack(blob: bytes) -> tuple[bytes, bytes, tuple[int, int]]:
    if len(blob) < _HEADER.size:
        raise ValueError(f"Stream too short ({len(blob)} bytes) for its header")
    y_len, z_len, h, w = _HEADER.unpack_from(blob)
    if len(blob) != _HEADER.size + y_len + z_len:
        raise ValueError(f"Stream length {len(blob)} does not match its header ({_HEADER.size + y_len + z_len})")
    body = blob[_HEADER.size:]
    return body[:y_len], body[y_len:], (h, w)
