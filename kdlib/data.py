"""Datasets: Kodak (checksum-verified, mirror or download), training folders, image I/O.

Where data comes from
---------------------
``KDLIB_DATA`` names a local mirror folder laid out as ``kodak/kodimNN.png`` and
``train/...``. When it is unset, Kodak is downloaded from its official site into
``KDLIB_CACHE`` (default ``~/.cache/kdlib``). Every Kodak file is verified against
its sha256 either way.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from PIL import Image
from torch.utils.data import Dataset

from kdlib.io import atomic

DATA_ENV = "KDLIB_DATA"
CACHE_ENV = "KDLIB_CACHE"
KODAK_URL = "https://r0k.us/graphics/kodak/kodak/{name}"
KODAK_SHA256 = {
    "kodim01.png": "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd",
    "kodim02.png": "133d50ad0f2cda48fef30e251f433fa1a98ee08c0f2d07cdab9462e876ccae5d",
    "kodim03.png": "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db",
    "kodim04.png": "1e079e4adc03524e53f1394a2a8e1c5995f0f70a5aec125b12fa3fdbe33cba37",
    "kodim05.png": "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53",
    "kodim06.png": "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18",
    "kodim07.png": "a74d606cef80e70a04fb983364f79fb954ad46665edf2a8b7355ce81adfa7998",
    "kodim08.png": "e3cfc1371a5643c7f8cdf1bd565c172abce6aa26e3f2fdce74cbf7c32364089d",
    "kodim09.png": "a0c72eb70826619305388ed9c0f8aa8f491b234155d62673cda270d7021149a2",
    "kodim10.png": "28fb615837dc8e66fc92c40158cac80b57f07d0ce77d22576aa85ac9e2787336",
    "kodim11.png": "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6",
    "kodim12.png": "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980",
    "kodim13.png": "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08",
    "kodim14.png": "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e",
    "kodim15.png": "d36d884e29bce92adea11de456be4e9a5815e79c112d47453a34a6f6edc84e63",
    "kodim16.png": "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54",
    "kodim17.png": "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b",
    "kodim18.png": "5deb2d91e347cbdcc0d8a595daa8877de0772c9cdbce4956a2f45a0f97648a47",
    "kodim19.png": "8f12d577f9ca36f384f82dec11ed8a4e12a27bd5a32ef117b9bcaf4fe4d0606f",
    "kodim20.png": "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a",
    "kodim21.png": "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b",
    "kodim22.png": "37782d92a1cfb36ff586047d5c0a2fa75e042fd0b58f90f866b4ab91349c4e03",
    "kodim23.png": "2ed596d7de74cc43d23add4c116763f49d7b5a78b21444fe84caece531ee933b",
    "kodim24.png": "ac96f39dacff2ec303ddb8a7eb72d59f77af2b491144926335938338ee63473d",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
VAL_EVERY = 10  # every 10th training file (by sorted relative path) is held out for validation


# what Pillow raises on a file it cannot read: OSError mostly, ValueError for some headers (a PPM's
# maxval, an SGI's mode), SyntaxError and EOFError in some plugins
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


class DataError(RuntimeError):
    """A dataset file is missing, tampered with or unreadable."""


SMOKE_SIDE = 192  # the smoke scale evaluates on centre crops of this side (MS-SSIM needs > 160): seconds


def smoke_images(folder: str | Path, count: int = 2, side: int = SMOKE_SIDE) -> list[Path]:
    """Centre crops (``side`` pixels) of the first ``count`` verified Kodak images, written once into
    ``folder`` under their Kodak names: what the smoke scale evaluates on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in kodak_paths()[:count]:
        target = folder / source.name
        if not target.exists():
            with Image.open(source) as image:
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image.crop((left, top, left + side, top + side)).save(target)
        paths.append(target)
    return paths


def mirror_root() -> Path | None:
    """The local mirror folder named by ``KDLIB_DATA``, or None."""
    root = os.environ.get(DATA_ENV)
    return Path(root).expanduser() if root else None


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, "~/.cache/kdlib")).expanduser()


def code_digest(*files: str) -> str:
    """sha256 prefix of kdlib source files (``entropy`` for entropy.py, or a file name such as
    ``rans.c``): a result is stale when the code that made it changes."""
    root = Path(__file__).parent
    return hashlib.sha256(b"".join((root / (f if "." in f else f"{f}.py")).read_bytes() for f in files)).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file, computed once per content state (path, size, modification time): a grid of
    runs hashes its teachers' configs many times, and a crop bank's files are checked at every open."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256sum(path)


def sha256sum(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically (no partial file is ever left)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic(dest) as tmp, open(tmp, "wb") as file, urllib.request.urlopen(url, timeout=60) as response:
        shutil.copyfileobj(response, file)


def kodak_paths(root: str | Path | None = None, download_missing: bool = True) -> list[Path]:
    """Paths of the 24 verified Kodak images.

    ``root`` (or ``KDLIB_DATA``) is a mirror folder holding ``kodak/``; without one,
    the images are downloaded into the cache. Raises :class:`DataError` listing every
    missing or corrupted file and how to provide it.
    """
    root = Path(root).expanduser() if root else mirror_root()
    folder = root / "kodak" if root else cache_root() / "kodak"
    paths, problems = [], []
    for name, expected in KODAK_SHA256.items():
        path = folder / name
        if not path.exists() and root is None and download_missing:
            try:
                download(KODAK_URL.format(name=name), path)
            except OSError as err:
                problems.append(f"{name}: download from {KODAK_URL.format(name=name)} failed ({err})")
                continue
        if not path.exists():
            problems.append(f"{name}: missing from {folder}")
        elif sha256sum(path) != expected:
            problems.append(f"{name}: sha256 mismatch (file corrupted or not the official image)")
        else:
            paths.append(path)
    if problems:
        how = (f"Put the official files in {folder} (set {DATA_ENV} to a mirror folder that "
               f"contains kodak/), or unset {DATA_ENV} to download them from {KODAK_URL.format(name='')}.")
        raise DataError("Kodak is incomplete:\n  " + "\n  ".join(problems) + "\n" + how)
    return paths


def train_root(root: str | Path | None = None) -> Path:
    """The default training folder: ``<mirror>/train``."""
    root = Path(root).expanduser() if root else mirror_root()
    if root is None or not (root / "train").is_dir():
        raise DataError(f"No training folder: set {DATA_ENV} to a folder containing train/ "
                        "or pass any folder of images explicitly.")
    return root / "train"


def image_files(folder: str | Path) -> list[Path]:
    """All images under ``folder``, recursively, sorted."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    return files


def split(files: list[Path], part: str) -> list[Path]:
    """The fixed train/validation split: every ``VAL_EVERY``-th file (the last one if fewer) is validation."""
    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', not {part!r}")
    held_out = set(range(VAL_EVERY - 1, len(files), VAL_EVERY)) or {len(files) - 1}
    return [f for i, f in enumerate(files) if (i in held_out) == (part == "val")]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class PngHeader:
    """What a PNG's chunks say before any pixel is inflated."""
    width: int
    height: int
    depth: int
    color: int  # PNG colour type: 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA
    transparent: tuple[int, ...] | None  # a gray or RGB file's tRNS colour, as samples


def png_header(blob: bytes, name: str = "image") -> PngHeader:
    """Walk a PNG's chunks, inflating nothing: IHDR first and only there, every chunk inside the file
    and an IEND at its end; a file that breaks any of these is refused (DataError)."""
    pos, header, transparent = len(PNG_SIGNATURE), None, None
    while True:
        if pos + 12 > len(blob):
            raise DataError(f"{name}: the PNG ends before its IEND chunk (a truncated file?)")
        length, kind = struct.unpack_from(">I4s", blob, pos)
        if pos + 12 + length > len(blob):
            raise DataError(f"{name}: a PNG {kind!r} chunk says {length} bytes, past the end of the file (truncated?)")
        if (kind == b"IHDR") != (header is None) or (kind == b"IHDR" and length != 13):
            raise DataError(f"{name}: a PNG must start with one 13-byte IHDR chunk and have no other")
        body = blob[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"tRNS" and header[3] in (0, 2) and length == (2 if header[3] == 0 else 6):
            transparent = struct.unpack(">H" if header[3] == 0 else ">HHH", body)
        elif kind == b"IEND":
            width, height, depth, color = header[:4]
            return PngHeader(width, height, depth, color, transparent)
        pos += 12 + length


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file from its header alone; a PNG's from the same (single) IHDR
    the decoder reads."""
    try:
        if _is_png(path):
            header = png_header(Path(path).read_bytes(), str(path))
            return header.height, header.width
        with Image.open(path) as opened:
            return opened.height, opened.width
    except READ_ERRORS as err:
        raise DataError(f"Cannot read image {path}: {err}") from err


def to_8_bits(samples: np.ndarray, channels: list[int], rows: int = 256) -> np.ndarray:
    """``channels`` of (H, W, C) 16-bit samples rounded to 8 bits (x / 257, to nearest), a block of
    rows at a time so that the only full-size copy is the 8-bit result."""
    out = np.empty((*samples.shape[:2], len(channels)), np.uint8)
    for y in range(0, samples.shape[0], rows):
        out[y:y + rows] = (samples[y:y + rows, :, channels].astype(np.uint32) + 128) // 257
    return out


def read_png16(blob: bytes, header: PngHeader, name: str = "image") -> Image.Image:
    """A 16-bit PNG decoded by libspng (pyspng: CRCs checked, inflation bounded by the header's size,
    interlacing handled), rounded to 8 bits; a tRNS colour becomes an alpha channel (Pillow reads the
    colour ones as 8-bit by dropping the low byte, and ignores a 16-bit tRNS)."""
    from pyspng import c as spng

    try:  # RGBA16 whatever the file holds (libspng's one 16-bit format for every colour type)
        samples = spng.spng_decode_image_bytes(blob, spng.SPNG_FMT_RGBA16)
    except RuntimeError as err:
        raise DataError(f"Cannot read image {name}: {err}") from err
    if header.transparent is not None:  # gray's key (k,) compared as (k, k, k): libspng replicates gray
        samples[..., 3][(samples[..., :3] == (header.transparent * 3)[:3]).all(axis=2)] = 0
    gray, alpha = header.color in (0, 4), header.color in (4, 6) or header.transparent is not None
    samples = to_8_bits(samples, [0, 3] if gray and alpha else [0] if gray else [0, 1, 2, 3] if alpha else [0, 1, 2])
    return Image.fromarray(samples.squeeze(2) if samples.shape[2] == 1 else samples,
                           {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples.shape[2]])


def open_image(path: str | Path) -> Image.Image:
    """An image file, loaded; a 16-bit PNG by :func:`read_png16`, which rounds its samples to 8 bits."""
    if _is_png(path):
        blob = Path(path).read_bytes()
        header = png_header(blob, str(path))
        if header.depth == 16:
            return read_png16(blob, header, str(path))
    with Image.open(path) as image:
        image.load()
        return image


def _is_png(path: str | Path) -> bool:
    with open(path, "rb") as file:
        return file.read(8) == PNG_SIGNATURE


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Convert to 8-bit RGB with a documented rule for every mode.

    Grayscale is replicated to three channels; 16-bit samples are rounded to 8 bits;
    an alpha channel is dropped only when fully opaque, otherwise the image is rejected
    (the codecs code colour, not transparency).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 257.0 if array.max() > 255 or image.mode.startswith("I;16") else 1.0
        image = Image.fromarray(np.clip(np.round(array / scale), 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGB", "L") and image.info.get("transparency") is not None:  # a tRNS colour
        key = np.array(image.info["transparency"]).reshape(-1)
        array = np.asarray(image).reshape(image.height, image.width, -1)
        if key.size == array.shape[2] and (array == key).all(axis=2).any():
            raise DataError(f"{name} has transparent pixels (its tRNS colour is used); flatten it onto a background "
                            "first (kdlib codes RGB only).")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:
            raise DataError(f"{name} has transparent pixels; flatten it onto a background first "
                            "(kdlib codes RGB only).")
    if image.mode not in ("RGB", "L", "1", "RGBA", "LA", "CMYK", "YCbCr"):
        raise DataError(f"{name}: unsupported image mode {image.mode!r}")
    return image.convert("RGB")


def load_image(path: str | Path) -> torch.Tensor:
    """An image file as a float tensor (3, H, W) in [0, 1]."""
    try:
        rgb = to_rgb(open_image(path), str(path))
    except READ_ERRORS as err:
        raise DataError(f"Cannot read image {path}: {err}") from err
    return to_tensor(rgb)


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def pad(x: torch.Tensor, multiple: int = 64, mode: str = "constant") -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad (N, C, H, W) to a multiple of ``multiple``, centred: with zeros by default, exactly as
    CompressAI's eval (so results compare); ``mode="replicate"`` repeats the edge pixels, which
    ``.kdl`` files use so that a tiny image is not swamped by its padding.

    Returns the padded tensor and the (negative) padding that :func:`crop` applies to undo it.
    """
    padding, unpadding = compute_padding(x.shape[-2], x.shape[-1], min_div=multiple)
    return F.pad(x, padding, mode=mode), unpadding


def crop(x: torch.Tensor, unpadding: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad`."""
    return F.pad(x, unpadding)


class ImageCrops(Dataset):
    """Square crops of a list of images: random with flips (training) or centred (validation).

    Images smaller than the crop are reflect-padded. Decoded images are kept in memory
    (``cache=True``) since the training sets here are a few hundred photos.
    """

    def __init__(self, files: list[Path], crop_size: int, train: bool = True, cache: bool = True):
        if not files:
            raise DataError("ImageCrops got an empty file list")
        self.files, self.crop_size, self.train = list(files), crop_size, train
        self._cache: dict[int, np.ndarray] = {} if cache else None

    def __len__(self) -> int:
        return len(self.files)

    def _array(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        array = np.array(to_rgb(open_image(self.files[index]), str(self.files[index])), dtype=np.uint8)
        if self._cache is not None:
            self._cache[index] = array
        return array

    def __getitem__(self, index: int) -> torch.Tensor:
        array, size = self._array(index), self.crop_size
        h, w = array.shape[:2]
        if h < size or w < size:
            array = np.pad(array, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
            h, w = array.shape[:2]
        if self.train:
            top, left = np.random.randint(0, h - size + 1), np.random.randint(0, w - size + 1)
        else:
            top, left = (h - size) // 2, (w - size) // 2
        patch = array[top : top + size, left : left + size]
        if self.train:
            if np.random.rand() < 0.5:
                patch = patch[:, ::-1]
            if np.random.rand() < 0.5:
                patch = patch[::-1]
        return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1).float().div_(255.0)
