"""RD metrics and result files: MS-SSIM in dB, CompressAI's eval_model JSON, where a point sits
against a curve, and BD-rate / BD-PSNR (the ``bjontegaard`` package)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import bjontegaard
import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from kdlib.scales import PAPER

# CompressAI's published Kodak curve of the teachers' model (bmshj2018-hyperprior, MSE, q1-8): the one
# reference curve every notebook and table reads
REFERENCE = PAPER / "reference" / "compressai-kodak"
COMPRESSAI_CURVE = REFERENCE / "compressai-bmshj2018-hyperprior_mse_cuda.json"


def msssim_db(value: float) -> float:
    """MS-SSIM as -10 log10(1 - MS-SSIM), the paper's and CompressAI's dB scale (NaN where not measured)."""
    return -10 * math.log10(1 - value) if value is not None and math.isfinite(value) else float("nan")


def read_result(path: str | Path) -> dict:
    """An eval_model JSON file, with a message naming the command that writes it if missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make reproduce` (or the kdlib command in the notebook).")
    return json.loads(path.read_text())


def gap_to_curve(curve: pd.DataFrame, bpp: float, psnr: float) -> dict[str, float]:
    """Where one RD point sits against a curve (``bpp``, ``psnr`` columns; piecewise linear in
    log bpp): PSNR minus the curve's PSNR at that rate, and the extra rate against the rate
    the curve needs for that PSNR (%). NaN where the point is outside the curve's range."""
    gap_db, excess_pct = curve_gaps(curve.bpp.to_numpy(), curve.psnr.to_numpy(), bpp, psnr)
    return {"psnr_gap_db": gap_db, "rate_excess_pct": excess_pct}


def curve_gaps(bpps: np.ndarray, psnrs: np.ndarray, bpp: float, psnr: float,
               interpolation: str = "linear") -> tuple[float, float]:
    """:func:`gap_to_curve` on a curve's points as arrays (sorted by rate, PSNR rising with it): the PSNR gap
    (dB) at the point's rate and the rate excess (%) at its PSNR; NaN outside the curve's range. The curve
    is piecewise linear in log bpp, or with ``interpolation="pchip"`` a shape-preserving cubic (scipy's
    PCHIP, as `bjontegaard` uses), PSNR of log bpp for the first reading and log bpp of PSNR for the second."""
    log_bpp = np.log(bpps)
    if interpolation == "pchip":
        at_rate = float(PchipInterpolator(log_bpp, psnrs, extrapolate=False)(math.log(bpp)))
        rate_for_psnr = math.exp(float(PchipInterpolator(psnrs, log_bpp, extrapolate=False)(psnr)))
    elif interpolation == "linear":
        at_rate = float(np.interp(math.log(bpp), log_bpp, psnrs, left=math.nan, right=math.nan))
        rate_for_psnr = math.exp(float(np.interp(psnr, psnrs, log_bpp, left=math.nan, right=math.nan)))
    else:
        raise ValueError(f"interpolation must be 'linear' or 'pchip', not {interpolation!r}")
    return psnr - at_rate, 100 * (bpp / rate_for_psnr - 1)


def bd_metrics(anchor: dict[str, list[float]], test: dict[str, list[float]], method: str = "akima",
               rate: str = "bpp") -> dict[str, float]:
    """BD-rate (%) and BD-PSNR (dB) of ``test`` against ``anchor`` (eval_model ``results``).

    ``bjontegaard`` package, integrated over the range the two curves share, however small
    (``min_overlap=0``); ``overlap_pct`` says how much that is. ``method="akima"`` (default) or
    ``"cubic"`` (Bjontegaard's cubic polynomial fit, the authors' way); ``rate="bpp-estimated"`` for the
    likelihood rate the paper reports.
    """
    args = (anchor[rate], anchor["psnr-rgb"], test[rate], test["psnr-rgb"])
    options = {"method": method, "require_matching_points": False, "min_overlap": 0}
    lo, hi = max(min(anchor["psnr-rgb"]), min(test["psnr-rgb"])), min(max(anchor["psnr-rgb"]), max(test["psnr-rgb"]))
    span = max(max(anchor["psnr-rgb"]), max(test["psnr-rgb"])) - min(min(anchor["psnr-rgb"]), min(test["psnr-rgb"]))
    try:
        rate_pct, psnr_db = float(bjontegaard.bd_rate(*args, **options)), float(bjontegaard.bd_psnr(*args, **options))
    except AssertionError:  # bjontegaard asserts, in places, what its ValueErrors say elsewhere
        raise ValueError("a curve is not monotonic (PSNR falls where the rate rises)") from None
    return {"bd_rate_pct": rate_pct, "bd_psnr_db": psnr_db, "overlap_pct": 100 * max(0.0, hi - lo) / span}


def per_image(path: str | Path, lmbda: float) -> pd.DataFrame:
    """A result JSON's images: psnr, ms-ssim, bpp (real), bpp-estimated, and the RD cost
    ``bpp + lambda * 255^2 * MSE`` that training minimises (real bpp)."""
    frame = pd.DataFrame(json.loads(Path(path).read_text())["per_image"]).set_index("image")
    mse = 10 ** (-frame["psnr-rgb"] / 10)
    frame["rd_cost"] = frame["bpp"] + lmbda * 255**2 * mse
    return frame[["psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-estimated", "rd_cost"]]
