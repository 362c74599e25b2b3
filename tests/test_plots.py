import math

import numpy as np
import pandas as pd

from kdlib import plots


def test_gap_to_curve():
    bpp = np.array([0.1, 0.2, 0.4, 0.8])
    curve = pd.DataFrame({"bpp": bpp, "psnr": 30 + 3 * np.log2(bpp / 0.1)})  # +3 dB per doubling
    on = plots.gap_to_curve(curve, 0.4, 36.0)
    assert math.isclose(on["psnr_gap_db"], 0, abs_tol=1e-9) and math.isclose(on["rate_excess_pct"], 0, abs_tol=1e-9)
    worse = plots.gap_to_curve(curve, 0.4, 33.0)  # the curve gets 33 dB at 0.2 bpp
    assert math.isclose(worse["psnr_gap_db"], -3) and math.isclose(worse["rate_excess_pct"], 100)
    outside = plots.gap_to_curve(curve, 0.3, 28.0)
    assert math.isnan(outside["rate_excess_pct"]) and outside["psnr_gap_db"] < -3
