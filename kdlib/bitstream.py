"""The ``.kdl`` file format and the compress / decompress API behind ``kdlib compress``.

Layout (big-endian), version 1::

    magic "KDLC" | version u8 | flags u8 | name length u8 | model name (utf-8)
    model id (8 bytes: sha256 prefix of the weights) | height u32 | width u32
    padding left, right, top, bottom u16 x4 | z height u16 | z width u16
    scale-index CRC32 u32 | z length u32 | y length u32 | header CRC32 u32
    z stream | y stream | payload CRC32 u32

Decoding checks, in order: magic, version, header CRC, consistency of the sizes, file
length, payload CRC, model id, and the CRC of the scale indexes (so a decoder whose
floats differ from the encoder's stops instead of returning a wrong image).

Inputs follow :func:`kdlib.data.to_rgb`: grayscale is coded as RGB and decoded back to
grayscale (flag bit 0); 16-bit images are rounded to 8 bits; opaque alpha is dropped and
transparent images are refused.
"""
from __future__ import annotations

import hashlib
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kdlib import entropy
from compressai.ops import compute_padding

from kdlib.data import READ_ERRORS, DataError, image_size, open_image, to_rgb
from kdlib.models import Hyperprior, from_spec, load_model
from kdlib.registry import Manifest

MAGIC, VERSION = b"KDLC", 1
GRAYSCALE = 1
_FIXED = struct.Struct(">4sBBB")  # magic, version, flags, name length
_REST = struct.Struct(">8sIIHHHHHHIII")  # id, h, w, padding x4, z shape x2, index crc, z len, y len
_CRC = struct.Struct(">I")
MAX_SIDE = 1 << 15
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb limit, by default
MAX_MEMORY = 2 << 30  # bytes of working memory one image may take to code (estimated), by default
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a released model's name


class BitstreamError(ValueError):
    """A .kdl file is foreign, truncated, corrupted, or meant for another model."""


@dataclass
class Header:
    flags: int
    model_name: str
    model_id: bytes
    height: int
    width: int
    padding: tuple[int, int, int, int]  # left, right, top, bottom
    z_shape: tuple[int, int]
    index_crc: int
    z_length: int
    y_length: int

    def pack(self) -> bytes:
        name = self.model_name.encode()[:255]
        head = _FIXED.pack(MAGIC, VERSION, self.flags, len(name)) + name + _REST.pack(
            self.model_id, self.height, self.width, *self.padding, *self.z_shape,
            self.index_crc, self.z_length, self.y_length)
        return head + _CRC.pack(zlib.crc32(head))


def model_id(model: Hyperprior) -> bytes:
    """8-byte fingerprint of the weights (cached on the model)."""
    if getattr(model, "_kdl_id", None) is None:
        digest = hashlib.sha256()
        for key, value in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        model._kdl_id = digest.digest()[:8]
    return model._kdl_id


def _model(model: str | Path | Hyperprior) -> tuple[Hyperprior, str]:
    if isinstance(model, Hyperprior):
        return model, getattr(model, "name", "model")
    loaded = from_spec(str(model))
    loaded.name = Path(str(model)).name.removesuffix(".pth.tar")
    return loaded, loaded.name


def _image(image: str | Path | Image.Image) -> tuple[np.ndarray, int]:
    """(the image's 8-bit RGB pixels, H x W x 3, its flags); a file's decoded image is let go at once."""
    if isinstance(image, (str, Path)):
        try:
            return _image(open_image(image))
        except READ_ERRORS as err:
            raise DataError(f"Cannot read image {image}: {err}") from err
    flags = GRAYSCALE if image.mode in ("L", "LA", "I;16", "I;16B", "I;16L", "I", "1") else 0
    return np.asarray(to_rgb(image), dtype=np.uint8), flags


def use_device(model: Hyperprior, device: str | torch.device | None) -> Hyperprior:
    """Put ``model``'s transforms (``g_a``, ``g_s``: nearly all the arithmetic) on ``device``. The
    hyperprior stays on the CPU, so the scale indexes, hence the files, are the same whatever
    device encoded them, and any machine decodes them. Decoded pixels on a GPU may differ from
    the CPU's by float rounding."""
    if device is not None:
        try:
            device = torch.device(device)
        except RuntimeError:
            raise DataError(f"Unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DataError(f"Device {device} asked for, but torch sees no CUDA GPU here; leave --device out to use the CPU")
        model.cpu()
        model.g_a.to(device)
        model.g_s.to(device)
    return model


def working_memory(model: Hyperprior, height: int, width: int) -> int:
    """Estimated peak bytes of coding one ``height`` x ``width`` image with ``model``, above what is
    loaded. The transforms run in tiles (:data:`kdlib.entropy.TILE`), so their share follows the tile:
    per pixel of the largest tile with its halo, 64 bytes and 1.6 per channel of the transforms (N). The
    rest follows the image: per padded pixel 8 bytes (the 8-bit image and its copy) and 16 per 256 latent
    symbols per channel of y (the latents, scale indexes and symbols: M per 256 pixels); plus 32 MiB.
    An upper bound of the peaks ``benchmarks/memory_curve.py`` measured at 1 to 48 Mpx (docs/codec.md):
    S16 16 bytes a pixel and T5 about 340 MiB for its tile."""
    rows, cols = -(-height // 64) * 4, -(-width // 64) * 4  # latents
    side = entropy.TILE + 2 * entropy.HALO
    tile = min(rows, side) * min(cols, side) * entropy.STRIDE ** 2
    pixels = rows * cols * entropy.STRIDE ** 2
    return (32 << 20) + int(tile * (64 + 1.6 * model.N) + pixels * (8 + 16 * model.M / 256))


def check_size(model: Hyperprior, height: int, width: int, max_pixels: int, max_memory: int,
               error: type[Exception] = ValueError) -> None:
    """Refuse, before anything is allocated, an image over the pixel budget (Pillow's, by default) or
    whose coding would need more than ``max_memory`` bytes (:func:`working_memory`)."""
    if max(height, width) > MAX_SIDE:
        raise error(f"Image is {width}x{height}; the format allows sides up to {MAX_SIDE}")
    if height * width > max_pixels:
        raise error(f"A {width}x{height} image is over the budget of {max_pixels} pixels (a decompression bomb?); "
                    "raise the budget if you trust the file (--max-pixels; in Python, max_pixels=)")
    need = working_memory(model, height, width)
    if need > max_memory:
        raise error(f"A {width}x{height} image needs about {_size(need)} to code with this model, over the budget of "
                    f"{_size(max_memory)}; raise the budget if the machine has the memory (--max-memory; in Python, "
                    "max_memory=)")


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def _on_cpu(model: Hyperprior) -> bool:
    return all(p.device.type == "cpu" for p in model.parameters())


def compress(image: str | Path | Image.Image, model: str | Path | Hyperprior, device: str | None = None,
             max_pixels: int = MAX_PIXELS, max_memory: int = MAX_MEMORY) -> bytes:
    """Compress an image (path or PIL image, any size) with ``model`` (name, path or model);
    ``device``: see :func:`use_device`; an image over ``max_pixels`` pixels or ``max_memory`` bytes of
    working memory (:func:`check_size`) is refused before its pixels are decoded."""
    return compress_batch([image], model, device, max_pixels, max_memory)[0]


def _image_size(image: str | Path | Image.Image) -> tuple[int, int]:
    """(height, width) of an image, from its header only when it is a file."""
    return (image.height, image.width) if isinstance(image, Image.Image) else image_size(image)


def _encode_one(image, model: Hyperprior, name: str, max_pixels: int = MAX_PIXELS,
                max_memory: int = MAX_MEMORY) -> bytes:
    check_size(model, *_image_size(image), max_pixels, max_memory, DataError)
    pixels, flags = _image(image)
    height, width = pixels.shape[:2]
    padding, _ = compute_padding(height, width, min_div=64)  # edges repeated: a tiny image survives its padding
    enc = entropy.encode(model, entropy.PaddedImage(pixels, padding))
    z, y = enc["strings"][1][0], enc["strings"][0][0]
    header = Header(flags, name, model_id(model), height, width, tuple(padding),
                    enc["shape"], enc["index_crc"][0], len(z), len(y))
    return header.pack() + z + y + _CRC.pack(zlib.crc32(z + y))


def _parallel(function, items: list) -> list:
    """``function`` over ``items``, one image per core, torch at one thread meanwhile (it releases
    the GIL). Every image is computed as alone and our kernels do not depend on the thread
    count, so results are the same as one at a time."""
    threads = torch.get_num_threads()
    if min(len(items), threads) < 2:
        return [function(item) for item in items]
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(function, items))
    finally:
        torch.set_num_threads(threads)


def compress_batch(images: list, model: str | Path | Hyperprior, device: str | None = None,
                   max_pixels: int = MAX_PIXELS, max_memory: int = MAX_MEMORY) -> list[bytes]:
    """Compress several images with one loaded model, several at a time (one at a time on a GPU);
    budgets as in :func:`compress`."""
    model, name = _model(model)
    model_id(model)  # fingerprint once, before the workers share the model
    use_device(model, device)
    encode = lambda image: _encode_one(image, model, name, max_pixels, max_memory)  # noqa: E731
    return _parallel(encode, images) if _on_cpu(model) else [encode(image) for image in images]


def read_header(blob: bytes) -> tuple[Header, bytes]:
    """Parse and check a .kdl file's header and length; returns the header and the payload."""
    if len(blob) < _FIXED.size:
        raise BitstreamError(f"Not a kdlib file: {len(blob)} bytes is shorter than any header")
    magic, version, flags, name_length = _FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise BitstreamError(f"Not a kdlib file (starts with {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise BitstreamError(f"Unsupported .kdl version {version}; this kdlib reads version {VERSION}")
    header_end = _FIXED.size + name_length + _REST.size
    if len(blob) < header_end + _CRC.size:
        raise BitstreamError(f"Truncated file: {len(blob)} bytes, the header alone needs {header_end + _CRC.size}")
    (header_crc,) = _CRC.unpack_from(blob, header_end)
    if zlib.crc32(blob[:header_end]) != header_crc:
        raise BitstreamError("Corrupted file: header checksum mismatch")
    name = blob[_FIXED.size:_FIXED.size + name_length].decode(errors="replace")
    mid, h, w, *rest = _REST.unpack_from(blob, _FIXED.size + name_length)
    header = Header(flags, name, mid, h, w, tuple(rest[:4]), tuple(rest[4:6]), *rest[6:])
    if flags & ~GRAYSCALE:
        raise BitstreamError(f"Unknown flags {flags:#04x} in the header: a newer or foreign .kdl file")
    _check_geometry(header)
    expected = header_end + _CRC.size + header.z_length + header.y_length + _CRC.size
    if len(blob) != expected:
        kind = "Truncated" if len(blob) < expected else "Corrupted"
        raise BitstreamError(f"{kind} file: {len(blob)} bytes, the header announces {expected}")
    payload = blob[header_end + _CRC.size:-_CRC.size]
    if zlib.crc32(payload) != _CRC.unpack_from(blob, len(blob) - _CRC.size)[0]:
        raise BitstreamError("Corrupted file: payload checksum mismatch")
    return header, payload


def _check_geometry(header: Header) -> None:
    left, right, top, bottom = header.padding
    padded_h, padded_w = header.height + top + bottom, header.width + left + right
    ok = (0 < header.height <= MAX_SIDE and 0 < header.width <= MAX_SIDE and padded_h % 64 == 0
          and padded_w % 64 == 0 and max(header.padding) < 64 and header.z_shape == (padded_h // 64, padded_w // 64))
    if not ok:
        raise BitstreamError(f"Corrupted file: inconsistent geometry {header.width}x{header.height}, "
                             f"padding {header.padding}, latent {header.z_shape}")


def released_model(name: str) -> Hyperprior:
    """The released checkpoint a file names (``checkpoints/manifest.json``), and nothing else: the
    name in a file never reaches a path, a download or an architecture builder."""
    manifest = Manifest()
    weights = manifest.weights(name) if NAME.fullmatch(name) else None
    if weights is None:
        raise BitstreamError(f"File needs model {name!r}, which is not a released model here "
                             f"({', '.join(sorted(manifest.entries())) or 'none'}); pass the model explicitly (--model).")
    model = load_model(weights)
    model.name = name
    return model


def decompress(blob: bytes, model: str | Path | Hyperprior | None = None, device: str | None = None,
               max_pixels: int = MAX_PIXELS, max_memory: int = MAX_MEMORY) -> Image.Image:
    """Decode a .kdl file to a PIL image; ``model`` defaults to the released model named in the
    file; ``device``: see :func:`use_device`; a file announcing more than ``max_pixels`` pixels, or
    an image whose decoding needs more than ``max_memory`` bytes (:func:`check_size`), is refused
    before anything is allocated."""
    return decompress_batch([blob], model, device, max_pixels, max_memory)[0]


def _decode_one(header: Header, payload: bytes, decoder: Hyperprior) -> Image.Image:
    strings = [[payload[header.z_length:]], [payload[:header.z_length]]]
    left, top, height, width = header.padding[0], header.padding[2], header.height, header.width
    pixels = np.empty((height, width, 3), np.uint8)

    def keep(row: int, column: int, part: torch.Tensor) -> None:  # a tile of x_hat (in [0, 1]), padded coordinates
        r0, r1 = max(row, top), min(row + part.shape[-2], top + height)
        c0, c1 = max(column, left), min(column + part.shape[-1], left + width)
        if r0 < r1 and c0 < c1:
            piece = part[0, :, r0 - row:r1 - row, c0 - column:c1 - column].cpu().permute(1, 2, 0)
            piece.mul_(255).round_()  # in place: the tile is not read again; whole numbers, then numpy's cast
            with np.errstate(invalid="ignore"):  # faster than torch's to uint8 (benchmarks/decode_parts.py)
                np.copyto(pixels[r0 - top:r1 - top, c0 - left:c1 - left], piece.numpy(), casting="unsafe")

    try:
        entropy.decode(decoder, strings, header.z_shape, [header.index_crc], sink=keep)
    except entropy.RoundTripError as err:
        raise BitstreamError(str(err)) from None
    if header.flags & GRAYSCALE:
        return Image.fromarray(np.round(pixels.mean(axis=2)).astype(np.uint8), "L")
    return Image.fromarray(pixels, "RGB")


def decompress_batch(blobs: list[bytes], model: str | Path | Hyperprior | None = None,
                     device: str | None = None, max_pixels: int = MAX_PIXELS,
                     max_memory: int = MAX_MEMORY) -> list[Image.Image]:
    """Decode several .kdl files, loading each model once, several at a time (one at a time on a GPU);
    budgets as in :func:`decompress`."""
    given = use_device(_model(model)[0], device) if model is not None else None
    released: dict[str, Hyperprior] = {}
    jobs = []
    for blob in blobs:  # check every file and find its model first
        header, payload = read_header(blob)
        if header.width * header.height > max_pixels:
            raise BitstreamError(f"File announces a {header.width}x{header.height} image, over the budget of "
                                 f"{max_pixels} pixels (a decompression bomb?); raise it with max_pixels= "
                                 "(CLI: --max-pixels) if you trust the file")
        if given is None and header.model_name not in released:
            released[header.model_name] = use_device(released_model(header.model_name), device)
        decoder = given or released[header.model_name]
        if model_id(decoder) != header.model_id:
            raise BitstreamError(f"File was encoded with model {header.model_name!r} (id {header.model_id.hex()}), "
                                 f"not with the given model (id {model_id(decoder).hex()})")
        check_size(decoder, header.height, header.width, max_pixels, max_memory, BitstreamError)
        jobs.append((header, payload, decoder))
    if all(_on_cpu(decoder) for decoder in ([given] if given else released.values())):
        return _parallel(lambda job: _decode_one(*job), jobs)
    return [_decode_one(*job) for job in jobs]
