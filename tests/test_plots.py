import math

import numpy as np
import pandas as pd
import pytest

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


@pytest.mark.parametrize("method, rate", [("akima", "bpp"), ("cubic", "bpp-estimated")])
def test_bd_of_a_curve_needing_ten_percent_more_rate(method, rate):
    from kdlib.codecs import bd_metrics

    anchor = {"bpp": [0.1, 0.2, 0.4, 0.8], "bpp-estimated": [0.1, 0.2, 0.4, 0.8], "psnr-rgb": [27, 29, 31, 33]}
    test = {**anchor, rate: [1.1 * v for v in anchor[rate]]}
    bd = bd_metrics(anchor, test, method, rate)
    assert bd["bd_rate_pct"] == pytest.approx(10.0) and bd["bd_psnr_db"] < 0 and bd["overlap_pct"] == 100
