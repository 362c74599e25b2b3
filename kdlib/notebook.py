"""The notebooks' prelude, in one place: scale, data and results folders, where figures go; the
normalisation of executed notebooks (``python -m kdlib.notebook normalize NB...``); and how their kernels
start under papermill (the engine ``kdlib``) and nbval (this module as a pytest plugin): on IPC sockets."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kdlib import metrics, plots
from kdlib.scales import REPO_ROOT, Layout

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SCALE_ENV = "KDLIB_SCALE"  # overrides the parameter: nbval (make test) cannot inject papermill parameters
OUTPUTS_ENV = "KDLIB_OUTPUTS"  # a folder for figures, tables and the report instead of the published ones (make test)


def setup(scale: str, results_dir: str | Path | None = None, data_dir: str | Path | None = None) -> Layout:
    """The :class:`~kdlib.scales.Layout` a notebook reads and writes, from its parameters. ``scale`` alone
    decides it (results from ``results/`` at ``cpu``, ``results/<scale>`` otherwise; a quick scale's figures
    and tables under its results, so a smoke run never overwrites the published ones); ``results_dir`` only
    overrides the results folder, relative to the repository when relative (so papermill works from any
    folder); ``data_dir`` sets ``KDLIB_DATA``. ``KDLIB_SCALE`` overrides ``scale`` and ``KDLIB_OUTPUTS``
    sends figures, tables and the report elsewhere (strict nbval, which cannot inject parameters)."""
    scale = os.environ.get(SCALE_ENV, scale)
    if data_dir:
        os.environ["KDLIB_DATA"] = str(data_dir)
    results = None if results_dir is None else REPO_ROOT / results_dir  # an absolute results_dir stays itself
    outputs = REPO_ROOT / os.environ[OUTPUTS_ENV] if os.environ.get(OUTPUTS_ENV) else None
    layout = Layout.of(scale, results=results, outputs=outputs)
    print(f"scale={scale}, results from {plots.shown(layout.results).as_posix()}/")
    return layout


def runs_line(runs: "pd.DataFrame", number: int, scale: str) -> str:
    """How many of an experiment's runs have results, which are missing, and the command that makes them."""
    missing = list(runs.loc[~runs.done, "name"])
    line = f"{len(runs) - len(missing)} of {len(runs)} runs done; missing: {', '.join(missing) or 'none'}"
    return line + (f" (make them with `kdlib experiment {number} --scale {scale}`)" if missing else "")


def points(rows: "pd.DataFrame", family: str, tag: str = "", kind: str = "student") -> "pd.DataFrame":
    """Rows of :func:`kdlib.analysis.results` (done runs) as :func:`kdlib.plots.families_figure`
    points of one ``family``; ``tag`` is a format string over a row's fields, e.g. ``"N={N}"``."""
    import pandas as pd

    rows = rows[rows.done]
    return pd.DataFrame({"family": family, "kind": kind, "bpp": rows.bpp, "psnr": rows["psnr-rgb"],
                         "ms-ssim-db": rows["ms-ssim-db"], "tag": [tag.format(**r) for r in rows.to_dict("records")]})


def teacher_point(path: str | Path, label: str) -> "pd.DataFrame":
    """A teacher's result JSON as one ``kind == "teacher"`` point."""
    import pandas as pd

    r = metrics.read_result(path)["results"]
    return pd.DataFrame([{"family": label, "kind": "teacher", "bpp": r["bpp"][0], "psnr": r["psnr-rgb"][0],
                          "ms-ssim-db": metrics.msssim_db(r["ms-ssim-rgb"][0]), "tag": ""}])


def kodim14_panel(results: Path, name: str, title: str, result_path: str | Path,
                  box: tuple[int, int, int, int] = (416, 176, 736, 496)) -> tuple[str, "np.ndarray"] | None:
    """``(title with PSNR and bpp, crop)`` of a model's decoded kodim14 saved by the experiment
    runner (``<results>/experiments/kodim14/<name>.png``), None where it is not there."""
    import numpy as np
    from PIL import Image

    path = results / "experiments" / "kodim14" / f"{name}.png"
    if not path.exists() or not Path(result_path).exists():
        return None
    image = next(r for r in metrics.read_result(result_path)["per_image"] if r["image"] == "kodim14.png")
    return f"{title}\n{image['psnr-rgb']:.2f} dB, {image['bpp']:.3f} bpp", np.asarray(Image.open(path).crop(box))


def kodim14_figure(layout: Layout, models: list[tuple[str, str, str | Path]], name: str) -> int:
    """The paper's kodim14 figure ``name``: the original crop (where Kodak is at hand) and the decoded crop of
    each model ``(name, title, result JSON)`` whose decoding landed, four to a row; saved where at least one
    landed. Returns how many panels it holds."""
    import numpy as np
    from PIL import Image

    from kdlib import data

    box = (416, 176, 736, 496)  # left, top, right, bottom
    original = not layout.scale.quick or (layout.experiments / "kodim14").exists()
    panels = [("original", np.asarray(Image.open(data.kodak_paths()[13]).crop(box)))] if original else []
    panels += [p for p in (kodim14_panel(layout.results, *model, box) for model in models) if p is not None]
    if len(panels) > 1:
        plots.save(plots.reconstructions_figure(panels, columns=4), name, layout.figures)
    return len(panels)


def check_results(done: "pd.DataFrame", layout: Layout) -> None:
    """Every landed result: 24 Kodak images, made by the run's declared config (at ``cpu``),
    and a real bit rate within 5 % of the estimate (not at ``smoke``: a 4-step model on two 192x192
    crops, whose header and stream overheads are a large share of a few hundred bytes)."""
    from kdlib import grid

    scale = layout.scale
    for r in done.itertuples():
        result = metrics.read_result(r.path)
        assert len(result["per_image"]) == 24 or scale.quick, r.name
        assert not scale.published or result["model"]["config_hash"] == grid.RUNS[r.name].config(scale.name).hash(), r.name
        assert scale.quick or abs(result["results"]["bpp"][0] / result["results"]["bpp-estimated"][0] - 1) < 0.05, r.name
    print(f"checks passed ({len(done)} results)")


VOLATILE_CELL_METADATA = ("execution", "papermill")  # timestamps and durations of a run
PARAMETERS = """\
# Parameters: edit them here and run the notebook, or override them with papermill (-p scale smoke).
scale: str = "cpu"  # the budget whose results are read and whose figures and tables are written: smoke or cpu
data_dir: str = None  # a local data mirror (sets KDLIB_DATA); None keeps the environment's
results_dir: str = None  # None: the scale's own results (results/, or results/<scale>); a folder overrides it"""


def _kernel_manager(base: type) -> type:
    """``base`` starting its kernel on IPC sockets named for that kernel alone, not on TCP ports: a TCP
    port is found free, released, then bound by the kernel, and two kernels starting at once (nbval's
    beside papermill's under ``make -j2``) can pick the same one ("Address already in use")."""

    class IPCKernelManager(base):
        def __init__(self, **kwargs: object) -> None:
            import tempfile
            import uuid

            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(tempfile.gettempdir(), f"kdlib-kernel-{uuid.uuid4().hex[:16]}"))
            super().__init__(**kwargs)

    IPCKernelManager.__qualname__ = f"IPC{base.__name__}"
    return IPCKernelManager


def kernel_managers() -> tuple[type, type]:
    """(sync, async) kernel managers on IPC sockets: nbval uses the first, papermill's nbclient the second."""
    from jupyter_client import AsyncKernelManager, KernelManager

    return _kernel_manager(KernelManager), _kernel_manager(AsyncKernelManager)


def _papermill_engine() -> type:
    from papermill.engines import NBClientEngine

    class IPCEngine(NBClientEngine):
        """papermill's engine with kernels on IPC sockets (``papermill --engine kdlib``)."""

        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):  # noqa: ANN001, ANN206
            kwargs.setdefault("kernel_manager_class", kernel_managers()[1])
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return IPCEngine


# A pytest plugin (pyproject.toml: addopts "-p kdlib.notebook"), for `pytest --nbval` on the notebooks. nbval
# starts each kernel on TCP ports that jupyter_client finds free and releases before the kernel binds them,
# a race with any kernel starting beside it (make test runs papermill's on the other core): here nbval's
# kernels start on IPC sockets named for each (kernel_managers). And nbval leaves images out of its
# comparison unless nbdime is asked for: here an image that changes on re-execution fails its cell like
# any other output (every figure is seeded and byte-stable).
def pytest_configure(config) -> None:  # noqa: ANN001
    try:
        import nbval.kernel
    except ImportError:  # nbval not installed: nothing to set
        return
    nbval.kernel.KernelManager = kernel_managers()[0]


def pytest_collection_modifyitems(items) -> None:  # noqa: ANN001
    for item in items:
        skip = getattr(item.parent, "skip_compare", None)
        if skip is not None:
            item.parent.skip_compare = tuple(k for k in skip if k not in ("image/png", "image/jpeg"))


def __getattr__(name: str) -> type:  # the entry point papermill.engine "kdlib" (pyproject.toml), built on demand
    if name == "IPCEngine":
        return _papermill_engine()
    raise AttributeError(name)


def normalize(path: str | Path) -> None:
    """Rewrite an executed notebook without what changes from run to run and says nothing about the
    results: papermill's and Jupyter's timestamps and durations, the injected cell's random id, progress
    bars on stderr, and this machine's path to the repository (outputs print paths relative to it). A
    re-execution whose numbers did not move then leaves the committed notebook byte-identical."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    root = re.compile(re.escape(str(REPO_ROOT)) + r"/?")
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.id = "injected-parameters"
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in cell.outputs:
            if output.get("output_type") == "stream" and output.get("name") == "stderr" and "\r" in output.get("text", ""):
                continue  # a progress bar
            if "text" in output:
                output["text"] = root.sub("", output["text"])
            for kind, value in output.get("data", {}).items():
                if kind.startswith("text/") and isinstance(value, str):
                    output["data"][kind] = root.sub("", value)
            outputs.append(output)
        cell.outputs = outputs
    nbformat.write(nb, path)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "normalize":
        sys.exit("usage: python -m kdlib.notebook normalize NOTEBOOK [NOTEBOOK ...]")
    for notebook in sys.argv[2:]:
        normalize(notebook)
