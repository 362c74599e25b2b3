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


def test_bd_two_ways_reads_estimated_rate_for_the_authors_and_real_rate_for_akima():
    from kdlib.analysis import bd_two_ways

    anchor = {"bpp": [0.1, 0.2, 0.4, 0.8], "psnr-rgb": [27, 29, 31, 33]}  # published: no estimate
    test = {"bpp": [0.12, 0.24, 0.48, 0.96], "bpp-estimated": [0.11, 0.22, 0.44, 0.88], "psnr-rgb": [27, 29, 31, 33]}
    bd = bd_two_ways(anchor, test)
    assert bd["authors_bd_rate_pct"] == pytest.approx(10.0, abs=0.05)  # estimated rate, 10 % above
    assert bd["akima_bd_rate_pct"] == pytest.approx(20.0, abs=0.05)  # real rate, 20 % above
    assert bd["authors_bd_psnr_db"] < 0 and bd["akima_bd_psnr_db"] < bd["authors_bd_psnr_db"]
    assert all(math.isnan(v) for v in bd_two_ways(anchor, {k: v[:1] for k, v in test.items()}).values())


def test_families_figure_draws_each_family_once_and_teachers_as_squares():
    points = pd.DataFrame({"family": ["KD", "KD", "scratch", "teacher T5"], "kind": ["student"] * 3 + ["teacher"],
                           "bpp": [0.3, 0.6, 0.7, 0.8], "psnr": [29, 31, 30, 34], "ms-ssim-db": [13, 15, 14, 18],
                           "tag": ["a", "b", "c", ""]})
    curve = pd.DataFrame({"label": "ref", "bpp": [0.2, 0.8], "psnr": [28, 34], "ms-ssim-db": [12, 18]})
    fig = plots.families_figure(points, curve)
    labels = [h.get_label() for h in fig.axes[0].get_lines()]
    assert labels == ["ref", "KD", "scratch", "teacher T5"]
    assert list(fig.axes[0].get_lines()[1].get_xdata()) == [0.3, 0.6]  # a family is one line
    assert fig.axes[0].get_lines()[3].get_marker() == "s"
    assert [t.get_text() for t in fig.axes[0].texts] == ["a", "b", "c"]


def test_a_family_whose_psnr_falls_as_its_rate_rises_has_no_bd_metric():
    from kdlib.analysis import bd_two_ways, family_bd

    rows = pd.DataFrame({"arm": ["kd"] * 3 + ["scratch"] * 3, "seed": 0, "bpp": [0.5, 0.7, 0.9, 0.6, 0.8, 0.95],
                         "psnr-rgb": [27, 29, 31, 27.5, 31, 30]})  # scratch: more rate, less PSNR at the top
    bd = family_bd(rows, "scratch", "kd")
    assert math.isnan(bd["bd_rate_pct"]) and "not monotonic" in bd["note"]
    assert math.isnan(bd_two_ways({"bpp": [0.6, 0.8, 0.95], "psnr-rgb": [27.5, 31, 30]},
                                  {"bpp": [0.5, 0.7, 0.9], "psnr-rgb": [27, 29, 31]})["akima_bd_rate_pct"])
