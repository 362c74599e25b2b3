"""The scales, declared once in kdlib.scales and read by the trainer, the runner, reproduce and make."""
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib import grid, scales
from kdlib.train import Config, TrainingError

REPO = Path(__file__).resolve().parent.parent


def test_each_scale_says_where_it_writes(tmp_path):
    assert scales.get("cpu").results(tmp_path) == tmp_path  # the published results
    assert scales.get("smoke").results(tmp_path) == tmp_path / "smoke"
    assert scales.get("smoke").records(tmp_path) == tmp_path / "smoke" / "records"  # never committed
    assert scales.get("long").records(tmp_path) == scales.CHECKPOINTS / "runs" / "long"
    assert grid.folders("long", tmp_path) == (tmp_path / "long" / "experiments", scales.CHECKPOINTS / "runs" / "long")
    with pytest.raises(ValueError, match="scale must be one of smoke, cpu, long, equal, paper"):
        scales.get("huge")


def test_recipes_and_budgets_come_from_the_scales():
    assert Config(name="x", scale="smoke").steps == scales.SCALES["smoke"].recipe["steps"]
    assert Config(name="x").crop == scales.CPU_RECIPE["crop"]
    with pytest.raises(TrainingError, match="scale must be one of"):
        Config(name="x", scale="long")  # a budget of the grid, not a recipe
    run = grid.RUNS["e1-kd-N16-s1"]
    assert run.config("long").steps == scales.SCALES["long"].runs["steps"] and run.config("long").scale == "cpu"
    assert grid.members(2, "long") == [] and grid.members(1, "long") == grid.LONG
    quick, full = scales.get("smoke"), scales.get("cpu")
    assert (quick.repeats, quick.codec_settings) == (1, 3) and (full.repeats, full.codec_settings) == (3, None)


def test_what_differs_between_scales_is_a_field_not_a_name():
    """No module compares a scale's name to a literal: folders, releases and requirements follow the
    Scale's fields (published, release_converged, gpu, quick, ...), so a new scale needs no edit elsewhere."""
    import re

    names = "|".join(scales.SCALES)
    compared = re.compile(rf"""\b(scale|budget|self\.name)\s*[!=]=\s*["']({names})["']""")
    found = [f"{path.name}:{number}" for path in sorted((REPO / "kdlib").glob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if compared.search(line)]
    assert found == []
