"""The scales, declared once in kdlib.scales and read by the trainer, the runner, reproduce and make."""
from pathlib import Path

import pytest

from kdlib import grid, scales
from kdlib.train import Config, TrainingError

REPO = Path(__file__).resolve().parent.parent


def test_each_scale_says_where_it_reads_and_writes(tmp_path):
    cpu, smoke, long = (scales.Layout.of(name, tmp_path) for name in ("cpu", "smoke", "long"))
    assert cpu.results == tmp_path / "results" and cpu.experiments == tmp_path / "results" / "experiments"  # published
    assert cpu.records == tmp_path / "checkpoints" / "runs" and cpu.figures == tmp_path / "figures"
    assert (cpu.tables, cpu.report) == (tmp_path / "paper" / "tables", tmp_path / "paper")
    assert smoke.results == tmp_path / "results" / "smoke" and smoke.records == smoke.results / "records"  # never committed
    assert smoke.figures == smoke.results / "smoke-figures" and smoke.report == smoke.tables  # nor its figures
    assert long.records == tmp_path / "checkpoints" / "runs" / "long" and long.parked == long.records / "parked"
    assert long.at("cpu") == cpu and cpu.at("cpu") is cpu and cpu.runs == tmp_path / "runs"
    assert scales.Layout.of("cpu").results == scales.REPO_ROOT / "results"  # the repository, whatever the working folder
    moved = scales.Layout.of("smoke", tmp_path, results_root=tmp_path / "out", outputs=tmp_path / "o")
    assert moved.results == tmp_path / "out" / "smoke" and moved.figures == tmp_path / "o" / "figures"
    with pytest.raises(ValueError, match="scale must be one of smoke, cpu, long, equal, paper"):
        scales.get("huge")


def test_no_module_rebinds_a_folder_or_reads_the_working_folder():
    """Where things go is a Layout passed down: no module assigns to another module's attribute (as
    notebook.setup once rebound plots.FIGURES), and no default run folder is relative to the working folder."""
    import re

    rebinding = re.compile(r"^\s*(?!self\.)[a-z_]+\.[A-Z_]+(\s*,\s*[a-z_]+\.[A-Z_]+)*\s*=[^=]")
    relative = re.compile(r"""(runs|root|out)\s*(:\s*[^=]+)?=\s*["'](runs|results|\.)["']""")
    found = [f"{path.name}:{number}" for path in sorted((REPO / "kdlib").glob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if rebinding.search(line) or relative.search(line)]
    assert found == []


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
    Scale's fields (published, release_students, gpu, quick, ...), so a new scale needs no edit elsewhere."""
    import re

    names = "|".join(scales.SCALES)
    compared = re.compile(rf"""\b(scale|budget|self\.name)\s*[!=]=\s*["']({names})["']""")
    found = [f"{path.name}:{number}" for path in sorted((REPO / "kdlib").glob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if compared.search(line)]
    assert found == []
