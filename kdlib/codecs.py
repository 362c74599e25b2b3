"""Classical codecs through Pillow (JPEG, WebP, JPEG 2000, AVIF) measured like ours, and BD metrics.

Each codec is swept over its quality setting; every image is encoded to bytes in memory,
decoded, and scored with the same PSNR / MS-SSIM as :mod:`kdlib.evaluate`; bpp is the
file size in bits over the pixel count. Results use CompressAI's eval_model layout, one
list entry per quality setting.
"""
from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import PIL
from PIL import Image
from tqdm import tqdm

from kdlib.data import load_image, to_tensor
from kdlib.evaluate import mean, quality

# name -> (Pillow format, save options for one setting, settings from low to high rate)
CODECS: dict[str, tuple[str, Any, list[int]]] = {
    "jpeg": ("JPEG", lambda q: {"quality": q}, [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
    "webp": ("WEBP", lambda q: {"quality": q, "method": 4}, [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
    # JPEG 2000 setting = compression ratio (24 bpp / ratio), lossy 9/7 wavelet, with the colour
    # transform (mct=1: RGB to YCbCr, as every JPEG 2000 codec does for photos; Pillow's default is none)
    "jpeg2000": ("JPEG2000", lambda r: {"quality_mode": "rates", "quality_layers": [r], "irreversible": True,
                                        "mct": 1},
                 [192, 128, 96, 64, 48, 32, 24, 16, 12, 8]),
    "avif": ("AVIF", lambda q: {"quality": q, "speed": 6}, [10, 20, 30, 40, 50, 60, 70, 80, 90]),
}
LABELS = {"jpeg": "JPEG", "webp": "WebP", "jpeg2000": "JPEG 2000", "avif": "AVIF"}


def roundtrip(image: Image.Image, codec: str, setting: int) -> tuple[bytes, Image.Image, float, float]:
    """Encode ``image`` to bytes and decode it: (bytes, decoded image, encode s, decode s)."""
    fmt, options, _ = CODECS[codec]
    start = time.perf_counter()
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options(setting))
    data = buffer.getvalue()
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as decoded:
        decoded = decoded.convert("RGB")
    return data, decoded, encode_s, time.perf_counter() - start


def evaluate_codec(codec: str, images: list[Path], settings: list[int] | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """RD curve of ``codec`` on ``images``: eval_model JSON with per-setting means and per-image values."""
    if codec not in CODECS:
        raise ValueError(f"Unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    settings = settings or CODECS[codec][2]
    originals = [(Path(p).name, load_image(p)) for p in images]
    keys = ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time")
    results: dict[str, list[float]] = {k: [] for k in keys}
    per_setting = []
    bar = tqdm(total=len(settings) * len(originals), desc=codec, disable=not progress, dynamic_ncols=True)
    for setting in settings:
        rows = []
        for name, x in originals:
            image = Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy())
            data, decoded, enc_s, dec_s = roundtrip(image, codec, setting)
            rows.append({"image": name, **quality(x[None], to_tensor(decoded)[None]),
                         "bpp": len(data) * 8 / (x.shape[1] * x.shape[2]), "encoding_time": enc_s, "decoding_time": dec_s})
            bar.update(1)
        for k in keys:
            results[k].append(mean(r[k] for r in rows))
        per_setting.append({"setting": setting, "per_image": rows})
    bar.close()
    results["encode_fps"] = [1 / t for t in results["encoding_time"]]
    results["decode_fps"] = [1 / t for t in results["decoding_time"]]
    return {"name": LABELS[codec], "description": f"{LABELS[codec]}, Pillow {PIL.__version__}, "
                                                  f"settings {settings}", "options": CODECS[codec][1]("SETTING"),
            "results": results,
            "settings": settings, "per_setting": per_setting}
