"""Figures: each family drawn once, teachers apart."""
import pandas as pd

from kdlib import plots


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
