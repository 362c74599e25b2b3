"""The notebooks' prelude, in one place: scale, data and results folders, where figures go."""
from __future__ import annotations

import os
from pathlib import Path

from kdlib import plots

SCALE_ENV = "KDLIB_SCALE"  # overrides the parameter: nbval (make test) cannot inject papermill parameters


def setup(scale: str, results_dir: str | Path, data_dir: str | Path | None = None) -> tuple[str, Path]:
    """(scale, results folder) for a notebook's parameters. ``data_dir`` sets ``KDLIB_DATA``; at
    ``smoke`` scale figures and tables go under the results folder, so a smoke run never
    overwrites the published ones."""
    scale = os.environ.get(SCALE_ENV, scale)
    if data_dir:
        os.environ["KDLIB_DATA"] = str(data_dir)
    results = Path(results_dir)
    if scale == "smoke":
        plots.FIGURES, plots.TABLES = results / "smoke-figures", results / "smoke-tables"
    print(f"scale={scale}")
    return scale, results
