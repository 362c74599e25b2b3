"""Evaluate a codec on images with real bitstreams; results in CompressAI's eval_model JSON layout.

Each image is padded to a multiple of 64, compressed, serialised to bytes, and decoded
by a separately built copy of the model (state dict only), which must reproduce the
encoder's ``y_hat`` exactly. The floats are computed as CompressAI's ``compress()`` /
``decompress()`` compute them (same bytes as the deterministic ``.kdl`` path, PSNR within
about 1e-6 dB of it), so results compare with CompressAI's published numbers. PSNR and MS-SSIM are computed on the 8-bit rounded images,
bpp on the original pixel count, as CompressAI's ``eval_model`` does.
"""
from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pytorch_msssim import ms_ssim
from tqdm import tqdm

from kdlib import __version__
from kdlib.data import code_digest, crop, load_image, pad
from kdlib.entropy import RoundTripError, decode, encode, pack, unpack
from kdlib.io import write_json
from kdlib.models import Hyperprior

MS_SSIM_MIN_SIDE = 160
METRICS = ("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-estimated", "encoding_time", "decoding_time")


def quality(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and MS-SSIM of 8-bit rounded images, both batches (N, 3, H, W) in [0, 1].

    PSNR is computed with CompressAI's eval_model expression, float32 to the end (its
    precision is about 2e-6 dB), so that our numbers and CompressAI's agree to the last digit. MS-SSIM needs both sides
    above 160 pixels (its 4 downsamplings); it is NaN below.
    """
    a = (x * 255).clamp(0, 255).round()
    b = (x_hat * 255).clamp(0, 255).round()
    mse = (a - b).pow(2).mean()
    psnr = math.inf if mse.item() == 0 else (20 * math.log10(255) - 10 * torch.log10(mse)).item()
    msssim = ms_ssim(a, b, data_range=255).item() if min(a.shape[-2:]) > MS_SSIM_MIN_SIDE else math.nan
    return {"psnr-rgb": psnr, "ms-ssim-rgb": msssim}


def fresh_copy(model: Hyperprior) -> Hyperprior:
    """A decoder built only from the encoder's state dict, as a receiver would have it."""
    decoder = Hyperprior.from_state_dict(model.state_dict())
    decoder.update()
    return decoder.eval()


@torch.no_grad()
def evaluate_image(model: Hyperprior, decoder: Hyperprior, x: torch.Tensor,
                   save: Path | None = None) -> dict[str, float]:
    """Metrics of one image (3, H, W); raises :class:`RoundTripError` if decoding is not exact.
    ``save``: a PNG path for the decoded image."""
    x = x.unsqueeze(0)
    num_pixels = x.shape[-2] * x.shape[-1]
    x_padded, unpadding = pad(x)

    start = time.perf_counter()
    enc = encode(model, x_padded, deterministic=False)  # CompressAI's floats: comparable numbers
    blob = pack(enc["strings"][0][0], enc["strings"][1][0], enc["shape"])
    enc_time = time.perf_counter() - start

    start = time.perf_counter()
    y_string, z_string, shape = unpack(blob)
    dec = decode(decoder, [[y_string], [z_string]], shape, enc["index_crc"], deterministic=False)
    dec_time = time.perf_counter() - start
    if not torch.equal(dec["y_hat"], enc["y_hat"]):
        wrong = (dec["y_hat"] != enc["y_hat"]).sum().item()
        raise RoundTripError(f"Decoded y_hat differs from the encoder's in {wrong} of {enc['y_hat'].numel()} elements")

    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        pixels = crop(dec["x_hat"], unpadding)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(save)
    likelihoods = model(x_padded)["likelihoods"]
    bits_estimated = sum(-torch.log2(v).sum().item() for v in likelihoods.values())
    return {**quality(x, crop(dec["x_hat"], unpadding)),
            "bpp": (len(y_string) + len(z_string)) * 8.0 / num_pixels,
            "bpp-estimated": bits_estimated / num_pixels,
            "encoding_time": enc_time, "decoding_time": dec_time}


def evaluate(model: Hyperprior, images: list[Path], name: str, description: str = "",
             progress: bool = True, keep: dict[str, Path] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``images``: a dict in CompressAI's eval_model layout plus our keys.

    ``results`` holds one-element lists of means (CompressAI's plotting reads them);
    ``per_image`` the metrics of each image; ``bpp`` counts the real bitstream,
    ``bpp-estimated`` the likelihoods. ``keep`` maps image file names to PNG paths for their
    decoded images.
    """
    model = model.eval()
    model.update()
    decoder = fresh_copy(model)
    per_image = []
    for path in tqdm(images, desc=f"eval {name}", disable=not progress, dynamic_ncols=True):
        per_image.append({"image": Path(path).name, **evaluate_image(model, decoder, load_image(path),
                                                                         (keep or {}).get(Path(path).name))})
    means = {k: mean(r[k] for r in per_image) for k in METRICS}
    return {
        "name": name,
        "description": description or f"kdlib {__version__}, real bitstream (ans)",
        "results": {k: [v] for k, v in means.items()},
        "model": {**portable(getattr(model, "meta", {})), **model.config},
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "machine": platform.machine(), "processor": platform.processor()},
        "per_image": per_image,
    }


def portable(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's metadata with paths inside the repository made relative to it (a result JSON
    is the same whichever machine wrote it)."""
    from kdlib.models import REPO_ROOT

    root = str(REPO_ROOT) + "/"
    return {k: v.replace(root, "") if isinstance(v, str) else v for k, v in meta.items()}


def mean(values) -> float:
    """Mean of the finite values (NaN if none)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


EVALUATION_CODE = ("evaluate", "entropy", "rans", "rans.c")  # the code whose edits can move a result's numbers


def evaluation_code() -> str:
    """Digest of :data:`EVALUATION_CODE`, recorded in every result JSON: ``kdlib reproduce`` makes a
    result again when today's code would compute it differently."""
    return code_digest(*EVALUATION_CODE)


def evaluate_to_json(model: Hyperprior, paths: list[Path], name: str, out: Path, sha256: str | None = None) -> dict:
    """Evaluate, write ``<out>/<name>.json`` (with the checkpoint's ``sha256`` and the evaluation code's
    digest, what ``kdlib reproduce`` checks) and print a one-line summary."""
    result = evaluate(model, paths, name)
    result["model"]["code"] = evaluation_code()
    if sha256:
        result["model"]["sha256"] = sha256
    path = write_json(out / f"{name}.json", result)
    means = {k: v[0] for k, v in result["results"].items()}
    print(f"{name}: PSNR {means['psnr-rgb']:.3f} dB, MS-SSIM {means['ms-ssim-rgb']:.4f}, "
          f"bpp {means['bpp']:.4f} (estimated {means['bpp-estimated']:.4f}), "
          f"encode {means['encoding_time']:.3f} s, decode {means['decoding_time']:.3f} s -> {path}")
    return result
