"""The gain of KD with its uncertainty: paired differences over Kodak images, bootstraps, seeds.

A KD student and its scratch twin are evaluated on the same 24 images, so their difference is
taken image by image (paired); its 95 % interval comes from resampling the images. Seeds give
a second spread: the same difference measured on independently trained pairs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kdlib.codecs import bd_metrics


def per_image(path: str | Path, lmbda: float) -> pd.DataFrame:
    """A result JSON's images: psnr, ms-ssim, bpp (real), bpp-estimated, and the RD cost
    ``bpp + lambda * 255^2 * MSE`` that training minimises (real bpp)."""
    frame = pd.DataFrame(json.loads(Path(path).read_text())["per_image"]).set_index("image")
    mse = 10 ** (-frame["psnr-rgb"] / 10)
    frame["rd_cost"] = frame["bpp"] + lmbda * 255**2 * mse
    return frame[["psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-estimated", "rd_cost"]]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over paired items, with a 95 % percentile interval from resampling items."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (samples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high)}


def kd_gain(kd: list[str | Path], scratch: list[str | Path], lmbda: float) -> dict[str, float]:
    """KD minus scratch for one size: each seed's pair, then the per-image means over seeds.

    Returns, per metric (psnr-rgb, bpp, rd_cost): ``d_<metric>`` (mean difference),
    ``d_<metric>_low`` / ``_high`` (paired bootstrap over images of the seed-averaged
    difference) and ``d_<metric>_seed_sd`` (standard deviation over seeds of the mean
    difference; NaN with one seed)."""
    if len(kd) != len(scratch) or not kd:
        raise ValueError(f"KD and scratch need the same seeds: {len(kd)} KD results, {len(scratch)} scratch")
    pairs = [(per_image(k, lmbda), per_image(s, lmbda)) for k, s in zip(kd, scratch)]
    out: dict[str, float] = {"seeds": len(pairs)}
    for metric in ("psnr-rgb", "bpp", "rd_cost"):
        a = np.mean([k[metric].to_numpy() for k, _ in pairs], axis=0)
        b = np.mean([s.loc[k.index, metric].to_numpy() for k, s in pairs], axis=0)
        boot = paired_bootstrap(a, b)
        by_seed = [k[metric].mean() - s[metric].mean() for k, s in pairs]
        out.update({f"d_{metric}": boot["mean"], f"d_{metric}_low": boot["low"], f"d_{metric}_high": boot["high"],
                    f"d_{metric}_seed_sd": float(np.std(by_seed, ddof=1)) if len(by_seed) > 1 else float("nan")})
    return out


def family_bd(rows: pd.DataFrame, anchor: str, test: str, by: str = "arm") -> dict[str, float]:
    """BD-rate and BD-PSNR of the curve of ``rows[by] == test`` against that of ``anchor`` (points
    sorted by bpp; one point per size or lambda; seed 0)."""
    curves = {}
    for arm in (anchor, test):
        points = rows[(rows[by] == arm) & (rows.seed == 0)].sort_values("bpp")
        curves[arm] = {"bpp": list(points.bpp), "psnr-rgb": list(points["psnr-rgb"])}
    if min(len(c["bpp"]) for c in curves.values()) < 2:
        return {"bd_rate_pct": float("nan"), "bd_psnr_db": float("nan"), "overlap_pct": 0.0}
    return bd_metrics(curves[anchor], curves[test])
