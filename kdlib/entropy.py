"""Entropy coding of a scale-hyperprior codec on CompressAI's rANS coder, deterministic and lean.

Same bitstream as CompressAI's ``compress()`` / ``decompress()`` (same quantisation, CDF
tables, scale indexes and rANS coder; files differ from its strings only if a float rounds
across .5 differently), with these differences:

- Determinism. On this CPU, oneDNN's 1x1 convolution (GDN's normalisation) changes its
  result with the thread count, and kernels may sum differently for another batch size;
  its other (transposed) convolutions were found thread-count invariant here, but not on a
  16-thread host, so ``h_s`` (which decides the scale indexes) runs at one thread. GDN is
  computed as a plain matrix product and every network pass runs one image at a time:
  scale indexes, files and decoded pixels are then the same at any thread count and in
  any batch (``benchmarks/check_determinism.py``, ``tests/test_determinism.py``). No
  global switch is flipped (such a flag would race between the threads of a batch). The
  encoder also returns a CRC of the indexes, which :func:`decode` checks: a decoder whose floats still differ (another CPU family, say)
  stops with an error instead of returning a wrong image.
- Speed. Scale indexes from the log of the scale, made exact by one comparison (CompressAI:
  a Python loop over 64 scales); CDF tables converted to Python lists once per model, unpadded,
  and only up to the largest index an image uses; decoded symbols taken without offsets (CDF
  positions, which fit a byte) through ``bytearray`` and offset in one tensor op; GDN as blocked
  matrix products in place; the last synthesis layer as a sub-pixel convolution; channels-last
  transforms. ``kdlib bench codec`` measures the result against CompressAI's path.
- Batches share the model and tables; the network runs per image (see above), and
  :mod:`kdlib.bitstream` runs one image per core.
"""
from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ans import RansDecoder, RansEncoder
from compressai.layers import GDN

from kdlib import rans
from kdlib.models import Hyperprior

_HEADER = struct.Struct(">IIHH")  # y length, z length, z height, z width


class RoundTripError(RuntimeError):
    """The decoder did not reproduce the encoder's quantised latent or scale indexes."""


_GDN_FLOATS = 1 << 17  # floats per block of GDN's matrix product (512 KB): 8192 rows at 16 channels, 1024 at
# 128: fewer, longer calls for narrow layers (benchmarks/gdn_blocks.py, one thread, quiet, an AVX2 EPYC: S16's
# g_s[5] at Kodak size 2.7 ms, 5.6 ms at the former 512 rows; T5's about as before); the same numbers at
# every block size
_GDN_MIN_ROWS = 32  # MKL multiplies a block of under 16 rows another way: other sums, which at some widths
# (192 channels: 6-8 rows) also change with the thread count; no block is ever that short


def _gdn_rows(channels: int) -> int:
    """Rows (pixels) per block of GDN's matrix product at ``channels``."""
    return max(_GDN_MIN_ROWS, _GDN_FLOATS // channels)


def _gdn_blocks(rows: int, channels: int) -> list[tuple[int, int]]:
    """(start, stop) of GDN's row blocks: :func:`_gdn_rows` each, a tail under ``_GDN_MIN_ROWS`` merged
    into the block before it."""
    bounds = [*range(0, rows, _gdn_rows(channels)), rows]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < _GDN_MIN_ROWS:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def _gdn_(layer: GDN, x: torch.Tensor) -> torch.Tensor:
    """GDN in place on ``x``, as matrix products on the channels-last view (rows = pixels): no
    oneDNN, no layout copy. Blocks of rows reuse two small buffers instead of fresh image-sized
    ones, whose page faults cost more than the arithmetic here (1.2-1.8x faster), small enough to stay
    in cache. The same numbers at any thread count and block size (tested): no block is under
    ``_GDN_MIN_ROWS`` rows, a smaller layer is computed in a zero-padded block of that size."""
    c = x.shape[1]
    rows = x.permute(0, 2, 3, 1).view(-1, c)  # x must be channels-last
    if len(rows) < _GDN_MIN_ROWS:
        padded = rows.new_zeros(_GDN_MIN_ROWS, c)
        padded[:len(rows)] = rows
        _gdn_(layer, padded.t()[None, :, None])  # (1, c, 1, rows): channels-last
        rows.copy_(padded[:len(rows)])
        return x
    gamma_t, beta = layer.gamma_reparam(layer.gamma).t(), layer.beta_reparam(layer.beta)
    blocks = _gdn_blocks(len(rows), c)
    squares, norm = rows.new_empty(2, max(stop - start for start, stop in blocks), c)
    for start, stop in blocks:
        block, n = rows[start:stop], stop - start
        torch.addmm(beta, torch.mul(block, block, out=squares[:n]), gamma_t, out=norm[:n])
        block.mul_(norm[:n].sqrt_() if layer.inverse else norm[:n].rsqrt_())
    return x


def _layout(x: torch.Tensor) -> torch.Tensor:
    """Channels-last, where oneDNN's (transposed) convolutions ran 1.1-3.5x faster on this CPU for
    N=16..128. Fixed, so that the encoder and every decoder compute the same way."""
    return x.contiguous(memory_format=torch.channels_last)


def _subpixel_weights(layer: torch.nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """CompressAI's ``deconv`` (5x5, stride 2, padding 2, output padding 1) as a 3x3 convolution
    whose outputs are the four output phases (row parity, column parity, channel), built once."""
    key = (layer.weight._version, layer.weight.data_ptr())
    if getattr(layer, "_kdl_subpixel_key", None) != key:
        w = layer.weight  # (in, out, 5, 5)
        taps = ((4, 2, 0), (None, 3, 1))  # per output parity: the deconv tap for input offsets -1, 0, +1
        phases = w.new_zeros(2, 2, w.shape[1], w.shape[0], 3, 3)
        for ry, rx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            for jy, ky in enumerate(taps[ry]):
                for jx, kx in enumerate(taps[rx]):
                    if ky is not None and kx is not None:
                        phases[ry, rx, :, :, jy, jx] = w[:, :, ky, kx].t()
        layer._kdl_subpixel = (phases.reshape(-1, w.shape[0], 3, 3), layer.bias.repeat(4))
        layer._kdl_subpixel_key = key
    return layer._kdl_subpixel


def _subpixel_deconv(layer: torch.nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a channels-last ``x``, computed as a sub-pixel convolution; channels-last out."""
    weight, bias = _subpixel_weights(layer)
    phases = F.conv2d(x, weight, bias, padding=1)
    n, _, h, w = phases.shape
    rows = phases.permute(0, 2, 3, 1).reshape(n, h, w, 2, 2, -1).permute(0, 1, 3, 2, 4, 5)
    return rows.reshape(n, 2 * h, 2 * w, -1).permute(0, 3, 1, 2)


def _layer(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, GDN):
        return _gdn_(layer, x)  # in place: x is the previous layer's output
    if isinstance(layer, torch.nn.ConvTranspose2d) and layer.out_channels <= 4:
        return _subpixel_deconv(layer, x)  # the last synthesis layer, where oneDNN's deconv is slow
    return layer(x)


def _run(layers: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The layers, one image at a time (kernels may sum differently for other batch sizes)."""
    outputs = []
    for image in x.split(1):
        for layer in layers:
            image = _layer(layer, image)
        outputs.append(image)
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _on(layers: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the device of ``layers`` (:func:`kdlib.bitstream.use_device` puts the transforms on a GPU)."""
    return x.to(next(layers.parameters()).device)


# Tiles. A large image is transformed tile by tile, so that the transforms' working memory follows the
# tile, not the image: TILE latents a side (1024 pixels), each computed with HALO latents of context
# around it, beyond the reach of the transforms (g_a: 30 pixels, under 2 latents; g_s: under 2
# latents), then cut to the tile. Every pixel is computed from the same inputs as in one piece; only
# the order oneDNN sums in may change with a tile's width. S16's files and pixels were identical on
# every image tried (tests/test_bitstream.py with small tiles) on the reference's kind of CPU (AVX-512);
# without AVX-512 (an AMD EPYC), 2 of 90,000 values one level apart; T5 decoded a few pixels one level
# apart (docs/codec.md counts them). An image of up to TILE latents a side is one tile, the
# whole-image path itself. The file format is unchanged.
TILE, HALO, STRIDE = 64, 4, 16


def _spans(n: int) -> list[tuple[int, int, int, int]]:
    """Along an axis of ``n`` latents: (start, stop) of each tile and (start, stop) of what it is computed from."""
    return [(a, min(n, a + TILE), max(0, a - HALO), min(n, a + TILE + HALO)) for a in range(0, n, TILE)]


class PaddedImage:
    """An 8-bit RGB image (H x W x 3, uint8) seen as the float (1, 3, H', W') tensor in [0, 1] that
    :func:`kdlib.data.pad` would make of it with ``mode="replicate"`` (edges repeated, centred), one
    region at a time: the float image is never held whole (12 bytes a pixel, twice with its padding)."""

    def __init__(self, pixels: np.ndarray, padding: tuple[int, int, int, int]):
        self.pixels, (self.left, right, self.top, bottom) = pixels, padding
        self.shape = (1, 3, pixels.shape[0] + self.top + bottom, pixels.shape[1] + self.left + right)

    def region(self, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        height, width = self.pixels.shape[:2]
        rows = np.clip(np.arange(r0, r1) - self.top, 0, height - 1)
        cols = np.clip(np.arange(c0, c1) - self.left, 0, width - 1)
        part = np.ascontiguousarray(self.pixels[rows][:, cols])
        return torch.from_numpy(part).permute(2, 0, 1).float().div_(255.0)[None]


def analyze(model: Hyperprior, x: "torch.Tensor | PaddedImage", deterministic: bool = True) -> torch.Tensor:
    """``g_a(x)``; deterministic: stable GDN layers, the same file at any thread count, and a large
    image in tiles (:data:`TILE`). ``x``: a padded batch, or one :class:`PaddedImage`."""
    if isinstance(x, torch.Tensor) and not deterministic:
        return model.g_a(_on(model.g_a, x))
    height, width = x.shape[-2] // STRIDE, x.shape[-1] // STRIDE
    if isinstance(x, torch.Tensor) and height <= TILE and width <= TILE:
        return _run(model.g_a, _layout(_on(model.g_a, x)))
    region = x.region if isinstance(x, PaddedImage) else lambda r0, r1, c0, c1: x[..., r0:r1, c0:c1]
    y = None
    for r0, r1, a0, a1 in _spans(height):
        for c0, c1, b0, b1 in _spans(width):
            part = _run(model.g_a, _layout(_on(model.g_a, region(a0 * STRIDE, a1 * STRIDE, b0 * STRIDE, b1 * STRIDE))))
            if y is None:
                y = part.new_empty(*part.shape[:2], height, width)
            y[..., r0:r1, c0:c1] = part[..., r0 - a0:r1 - a0, c0 - b0:c1 - b0]
    return y


def synthesize(model: Hyperprior, y_hat: torch.Tensor, deterministic: bool = True,
               sink: "Callable[[int, int, torch.Tensor], None] | None" = None) -> torch.Tensor | None:
    """``g_s(y_hat)`` clamped to [0, 1]; deterministic: stable GDN layers, the same pixels anywhere, and a
    large image in tiles (:data:`TILE`). With ``sink``, each tile's pixels go to ``sink(row, column,
    pixels)`` (padded coordinates) as they are made, and nothing is returned: the whole float image is
    never held."""
    y_hat = _on(model.g_s, y_hat)
    if not deterministic:
        return model.g_s(y_hat).clamp_(0, 1)
    height, width = y_hat.shape[-2:]
    if sink is None and height <= TILE and width <= TILE:
        return _run(model.g_s, _layout(y_hat)).clamp_(0, 1)
    x_hat = None
    for r0, r1, a0, a1 in _spans(height):
        for c0, c1, b0, b1 in _spans(width):
            part = _run(model.g_s, _layout(y_hat[..., a0:a1, b0:b1])).clamp_(0, 1)
            part = part[..., (r0 - a0) * STRIDE:(r1 - a0) * STRIDE, (c0 - b0) * STRIDE:(c1 - b0) * STRIDE]
            if sink is not None:
                sink(r0 * STRIDE, c0 * STRIDE, part)
                continue
            if x_hat is None:
                x_hat = part.new_empty(*part.shape[:2], height * STRIDE, width * STRIDE)
            x_hat[..., r0 * STRIDE:r1 * STRIDE, c0 * STRIDE:c1 * STRIDE] = part
    return x_hat


@contextmanager
def _one_thread():
    """torch at one thread meanwhile (a no-op where it already is, as in :mod:`kdlib.bitstream`'s workers)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def scale_indexes(model: Hyperprior, z_hat: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
    """CDF index of every element of y (``h_s`` per image if deterministic): CompressAI's
    ``build_indexes``, i.e. the number of scale-table entries below the scale, in a few ops.

    Deterministic: ``h_s`` at one thread. The indexes must be bit-equal in encoder and decoder, and
    oneDNN's transposed convolutions, thread-count invariant at 1 and 2 threads on our 2-core CPU,
    were not on a 16-thread host (the GPU check, issue 29: files encoded one image per thread failed
    their index CRC when decoded there at 16 threads). ``h_s`` is about 1 % of a decode's work."""
    if deterministic:
        with _one_thread():
            scales = _run(model.h_s, z_hat)
    else:
        scales = model.h_s(z_hat)
    if scales.isnan().any():  # an index would be -2^31
        raise RoundTripError("The model's hyper-synthesis gives NaN scales: its weights are damaged")
    scales = model.gaussian_conditional.lower_bound_scale(scales)
    table = _tables(model)[3]
    if table["log_step"] is None:
        return torch.bucketize(scales, table["bounds"], out_int32=True)
    # geometric table: the log gives the nearest bound to well within half a step, whatever the
    # float rounding; one comparison with that bound makes the index exact
    nearest = scales.log().sub_(table["log_first"]).div_(table["log_step"]).round_()
    nearest = nearest.clamp_(0, len(table["bounds"]) - 1).to(torch.int32)
    bounds = table["bounds"].index_select(0, nearest.reshape(-1)).reshape(nearest.shape)  # (4.6x faster than [])
    return (bounds < scales).to(torch.int32).add_(nearest)


def _tables(model: Hyperprior) -> tuple[list, list, list, dict]:
    """The Gaussian conditional's CDF tables as Python lists, and its scale table, built once per model."""
    gc = model.gaussian_conditional
    key = (gc._quantized_cdf.data_ptr(), gc._quantized_cdf._version, gc.scale_table._version)
    if getattr(model, "_kdl_tables_key", None) != key:
        bounds = gc.scale_table[:-1].float()
        logs = bounds.double().log()
        step = (logs[-1] - logs[0]).item() / (len(bounds) - 1)
        geometric = len(bounds) > 2 and torch.allclose(logs.diff(), torch.full_like(logs[1:], step), rtol=1e-3)
        scale = {"bounds": bounds, "log_first": logs[0].item(), "log_step": step if geometric else None}
        lengths = gc._cdf_length.reshape(-1).int().tolist()
        cdfs = [row[:length] for row, length in zip(gc._quantized_cdf.tolist(), lengths)]  # unpadded
        model._kdl_tables = (cdfs, lengths, gc._offset.reshape(-1).int().tolist(), scale)
        model._kdl_tables_key = key
    return model._kdl_tables


def _used_tables(model: Hyperprior, indexes: torch.Tensor) -> tuple[list, list, list]:
    """CDFs, lengths and offsets up to the largest index used: the coder converts every table it
    is given at each call, and the wide ones (large scales) are seldom used."""
    top = int(indexes.max()) + 1
    cdfs, lengths, offsets, _ = _tables(model)
    return cdfs[:top], lengths[:top], offsets[:top]


def _as_tensor(values: list[int]) -> torch.Tensor:
    """The coder's output list as a tensor. Decoded without offsets, the values are CDF positions,
    nearly always 0..255, and ``bytearray`` converts those in a C loop, 2-3x faster than
    ``np.fromiter``; a value outside (a bypass-coded outlier) falls back to the latter."""
    try:
        return torch.from_numpy(np.frombuffer(bytearray(values), np.uint8))
    except ValueError:
        return torch.from_numpy(np.fromiter(values, np.int32, len(values)))


def _crc(indexes: torch.Tensor) -> int:
    """CRC32 of the scale indexes as little-endian int32 (no copy on little-endian machines)."""
    return zlib.crc32(indexes.to(torch.int32).cpu().contiguous().numpy().astype("<i4", copy=False))


MAX_SYMBOL = 1 << 15  # |round(y)| beyond this is no image a trained codec makes (the coder would spin)


def check_latent(y: torch.Tensor, what: str = "latent") -> None:
    """Refuse a latent the coder cannot take: non-finite values (NaN weights, overflow) or values so
    large that CompressAI's bypass coding runs for minutes (e.g. weights scaled by 1e9)."""
    if not torch.isfinite(y).all():
        raise RoundTripError(f"The model's {what} has NaN or infinite values: its weights are damaged")
    peak = y.abs().max().item() if y.numel() else 0.0
    if peak > MAX_SYMBOL:
        raise RoundTripError(f"The model's {what} reaches {peak:.3g}, beyond {MAX_SYMBOL}: its weights are damaged "
                             "(a trained codec's latents are small integers)")


@torch.no_grad()
def encode(model: Hyperprior, x: torch.Tensor, deterministic: bool = True) -> dict:
    """Compress a padded batch ``x``: ``{"strings": [y, z], "shape", "y_hat", "index_crc"}``.

    ``deterministic=False`` computes every float exactly as CompressAI's ``compress()`` does
    (default oneDNN kernels): the evaluation path, comparable to CompressAI's own numbers.
    """
    y = analyze(model, x, deterministic)
    check_latent(y)  # before any call into the coder: damaged weights would make it spin
    y_abs = _on(model.h_a, torch.abs(y))
    z = _run(model.h_a, y_abs) if deterministic else model.h_a(y_abs)
    del y_abs  # a large image's latents are most of its memory: each is let go once used
    check_latent(z - model.entropy_bottleneck.quantiles[:, 0, 1].detach().reshape(1, -1, 1, 1), "hyper-latent")
    z_strings = model.entropy_bottleneck.compress(z)
    z_hat = model.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
    indexes = scale_indexes(model, z_hat, deterministic)
    symbols = torch.round(y).int()
    del y
    if rans.available():  # CompressAI's bytes, without holding the GIL (images encode in parallel on threads)
        tables, offsets = _rans_tables(model), np.asarray(_tables(model)[2], np.int32)
        y_strings = [rans.encode(s.cpu().numpy(), i.cpu().numpy(), tables, offsets)  # y may be on a GPU
                     for s, i in zip(symbols, indexes)]
    else:
        coder = RansEncoder()
        y_strings = [coder.encode_with_indexes(s.reshape(-1).tolist(), i.reshape(-1).tolist(), *_used_tables(model, i))
                     for s, i in zip(symbols, indexes)]
    return {"strings": [y_strings, z_strings], "shape": tuple(z.size()[-2:]), "y_hat": symbols.float(),
            "index_crc": [_crc(i) for i in indexes]}


# Memory safety. CompressAI's rANS decoder has no end-of-stream check: on a cut or crafted stream it
# reads past its buffer. kdlib decodes with its own bounds-checked decoder (:mod:`kdlib.rans`, the
# same arithmetic), which never reads outside the stream and refuses any stream an encoder cannot
# have written. Only where it cannot be built (no C compiler) does :func:`decode_symbols` fall back
# on CompressAI's decoder over a zero-padded copy, with this bound on what it can read. Its state x stays
# at least 2^31 once the initial state is (checked below): each decoding step (a symbol, or one 4-bit
# group of an escape) reads at most one 32-bit word, and a group's read leaves x at least 2^59, so the
# next 7 groups read none. An escape reads 4-bit groups while they are 0xF: at most 16 from the 64-bit
# state, then 8 per all-ones word it reads, and the first word that is not all ones ends the run within
# 8 groups. No encoder writes such a run (its count of groups is at most 8 < 15) and an encoder's word
# is all ones with chance 2^-32: a stream with two all-ones words in a row (chance 2^-64 a pair) is
# refused, so a run is at most 16 + 8 + 8 = 32 groups, 31 of them 0xF, which ask for up to
# 15 x 31 + 14 = 479 more: at most 511 groups and 1 + 64 words, 260 bytes, per escape. Hence at most
# 8 + 4 n + 260 e bytes for n symbols, e of them escapes, whatever the stream's length (before, the
# padding grew with the stream: 16 bytes per byte). Escapes are counted chunk by chunk and capped at
# min(n, CHUNK), so the padding is 4 n + 264 min(n, CHUNK) bytes. ``tests/test_bitstream.py`` replays
# the decoder's reads on crafted streams against this bound.
ESCAPE_BYTES = 264
CHUNK = 16_384  # symbols per coder call: the padding holds a chunk of escapes, and copying a larger
# one into the coder costs more than the calls saved (measured with kdlib bench codec)


def _bits_table(cdfs: list[list[int]], lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per CDF table and decoded value (a column; values beyond the last one fold into it): whether it
    is an escape (the last symbol, ``length - 2``, or beyond), and the bits it costs: 16 - log2 of its
    frequency, plus 4 for an escape (its first 4-bit group; it may read more)."""
    width = max(lengths)
    escape, bits = torch.ones(len(cdfs), width, dtype=torch.uint8), torch.zeros(len(cdfs), width, dtype=torch.float64)
    for t, (cdf, n) in enumerate(zip(cdfs, lengths)):
        cost = 16 - torch.tensor(cdf[:n], dtype=torch.float64).diff().log2()
        escape[t, :n - 2] = 0
        bits[t, :n - 2], bits[t, n - 2:] = cost[:n - 2], cost[n - 2] + 4
    return escape, bits


def decode_symbols(string: bytes, indexes: torch.Tensor, cdfs: list, lengths: list,
                   table: tuple[torch.Tensor, torch.Tensor], rans_tables: "rans.Tables | None" = None) -> torch.Tensor:
    """CompressAI's rANS decoding of one stream (values without offsets: CDF positions), safe on any
    bytes. With ``rans_tables`` (:class:`kdlib.rans.Tables` of ``cdfs``), by :mod:`kdlib.rans`, which
    never reads past the stream and refuses any stream no encoder writes. Otherwise by CompressAI's
    decoder over a padded copy (see above): a stream with too many escapes is refused, and so is one
    whose symbols need more bits than it holds (it ran out: cut or altered) or, without escapes,
    fewer. ``table``: :func:`_bits_table` of ``cdfs``; ``indexes``: each symbol's CDF."""
    size, indexes = len(string), indexes.reshape(-1)
    if size < 8 or size % 4:
        raise RoundTripError(f"A latent stream of {size} bytes is no rANS stream (whole 32-bit words, two at least): "
                             "the file was cut or altered")
    if rans_tables is not None and rans.available():
        try:
            return torch.from_numpy(rans.decode(string, indexes.numpy(), rans_tables))
        except rans.StreamError as err:
            raise RoundTripError(str(err)) from None
    if not 1 << 31 <= int.from_bytes(string[:8], "little") < 1 << 63:
        raise RoundTripError("A latent stream starts in a state no encoder writes: the file was cut or altered")
    ones = np.frombuffer(string, "<u4") == 0xFFFFFFFF
    if (ones[1:] & ones[:-1]).any():
        raise RoundTripError("A latent stream holds two all-ones words in a row (an encoder's chance: 2^-64 a pair): "
                             "the file was altered")
    escape, bits = (t.reshape(-1) for t in table)
    width, n = table[0].shape[1], len(indexes)
    allowed = min(n, CHUNK)  # escapes, in all
    decoder, flat, zeros = RansDecoder(), indexes.tolist(), [0] * len(cdfs)
    decoder.set_stream(string + bytes(4 * n + ESCAPE_BYTES * allowed + 64))
    rows = indexes.long() * width
    parts, done, escapes, spent = [], 0, 0, 0.0
    while done < n:
        stop = min(n, done + CHUNK, done + allowed - escapes)
        if stop <= done:
            raise RoundTripError(f"A latent stream has {escapes} escape-coded values in {done} symbols: it was "
                                 "altered (a trained codec's latents need few)")
        values = _as_tensor(decoder.decode_stream(flat[done:stop], cdfs, lengths, zeros))
        column = values.long().clamp_(max=width - 1)
        if values.dtype != torch.uint8:  # negative values are escapes too
            column[values < 0] = width - 1
        at = column.add_(rows[done:stop])  # (index_select: 5x faster than indexing here)
        escapes += int(escape.index_select(0, at).sum())
        spent += bits.index_select(0, at).sum().item()
        parts.append(values)
        done = stop
    first = int.from_bytes(string[:8], "little")  # the state the decoder starts from
    held = math.log2(max(first, 1)) + 32 * (size // 4 - 2) - 31  # bits a whole stream gives its symbols
    slack = 32 + 1e-4 * n  # a word, and rANS's rounding (< 1e-4 bit per symbol)
    if spent > held + slack:
        raise RoundTripError(f"A latent stream ran out: its symbols need {spent:.0f} bits, it holds {held:.0f}; "
                             "the file was cut or altered")
    if not escapes and spent < held - slack:  # (an escape's bits are counted at least, not exactly)
        raise RoundTripError(f"A latent stream holds {held:.0f} bits, its symbols use {spent:.0f}: "
                             "the file was altered")
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _hyper_tables(model: Hyperprior) -> tuple[list, list, torch.Tensor, tuple]:
    """The entropy bottleneck's CDF tables as lists (unpadded), offsets (a tensor), and :func:`_bits_table`,
    once per model."""
    eb = model.entropy_bottleneck
    key = (eb._quantized_cdf.data_ptr(), eb._quantized_cdf._version)
    if getattr(model, "_kdl_hyper_key", None) != key:
        lengths = eb._cdf_length.reshape(-1).int().tolist()
        cdfs = [row[:n] for row, n in zip(eb._quantized_cdf.tolist(), lengths)]
        model._kdl_hyper = (cdfs, lengths, eb._offset.reshape(-1).long(), _bits_table(cdfs, lengths),
                            rans.Tables(cdfs, lengths))
        model._kdl_hyper_key = key
    return model._kdl_hyper


def decode_hyper(model: Hyperprior, strings: list[bytes], shape: tuple[int, int]) -> torch.Tensor:
    """z_hat from its streams: CompressAI's ``EntropyBottleneck.decompress``, through :func:`decode_symbols`."""
    eb = model.entropy_bottleneck
    cdfs, lengths, offsets, table, rans_tables = _hyper_tables(model)
    size = (len(strings), len(lengths), *shape)
    indexes = eb._build_indexes(size).to(eb._quantized_cdf.device)
    outputs = eb._quantized_cdf.new_empty(size)
    offsets = offsets.to(outputs.device)
    for i, string in enumerate(strings):
        values = decode_symbols(string, indexes[i], cdfs, lengths, table, rans_tables).to(outputs.device)
        outputs[i] = offsets.index_select(0, indexes[i].reshape(-1).long()).add_(values).reshape(outputs[i].shape)
    medians = eb._extend_ndims(eb._get_medians().detach(), len(shape)).expand(len(strings), *([-1] * (len(shape) + 1)))
    return eb.dequantize(outputs, medians, medians.dtype)


@torch.no_grad()
def decode(model: Hyperprior, strings: list, shape: tuple[int, int], index_crc: list[int] | None = None,
           deterministic: bool = True, sink: Callable[[int, int, torch.Tensor], None] | None = None) -> dict:
    """Decompress ``[y_strings, z_strings]``: ``{"x_hat", "y_hat"}``, ``x_hat`` in [0, 1], still padded
    (None with ``sink``, which takes the pixels tile by tile: :func:`synthesize`).

    With ``index_crc`` (from :func:`encode`), raises :class:`RoundTripError` if the decoder's
    scale indexes are not the encoder's. Any bytes are safe to decode (:func:`decode_symbols`):
    a cut or altered stream raises :class:`RoundTripError`. ``deterministic`` as in :func:`encode`.
    """
    z_hat = decode_hyper(model, strings[1], shape)
    indexes = scale_indexes(model, z_hat, deterministic)
    if index_crc is not None:
        for i, (expected, idx) in enumerate(zip(index_crc, indexes)):
            if _crc(idx) != expected:
                raise RoundTripError(f"Image {i}: the scale indexes decoded from the hyper-latent differ from the "
                                     "encoder's: the file's streams were altered or mixed from another file, or this "
                                     "machine's floating point differs from the encoder's; cannot decode exactly")
    offsets, rows = model.gaussian_conditional._offset.reshape(-1).float(), []
    for string, i in zip(strings[0], indexes):
        cdfs, lengths, _ = _used_tables(model, i)  # decoded without offsets; added in one tensor op
        values = decode_symbols(string, i, cdfs, lengths, _bits(model, len(cdfs)), _rans_tables(model))
        rows.append(offsets.index_select(0, i.reshape(-1)).add_(values.to(offsets.device)).reshape(i.shape))
        del values
    del indexes
    y_hat = rows[0][None] if len(rows) == 1 else torch.stack(rows)
    return {"x_hat": synthesize(model, y_hat, deterministic, sink), "y_hat": y_hat}


def _rans_tables(model: Hyperprior) -> "rans.Tables":
    """The Gaussian conditional's tables for :mod:`kdlib.rans` (all of them), built once per model."""
    cdfs, lengths, _, _ = _tables(model)
    if getattr(model, "_kdl_rans_source", None) is not model._kdl_tables:
        model._kdl_rans, model._kdl_rans_source = rans.Tables(cdfs, lengths), model._kdl_tables
    return model._kdl_rans


def _bits(model: Hyperprior, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_bits_table` of the Gaussian conditional's first ``count`` tables, built once per model."""
    cdfs, lengths, _, _ = _tables(model)
    if getattr(model, "_kdl_bits_source", None) is not model._kdl_tables:
        model._kdl_bits, model._kdl_bits_source = _bits_table(cdfs, lengths), model._kdl_tables
    escape, bits = model._kdl_bits
    return escape[:count], bits[:count]


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
