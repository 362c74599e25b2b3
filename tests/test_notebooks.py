"""The notebooks as a user meets them: one parameters cell that takes effect when edited, papermill's
overrides from any folder, kernels that start side by side without racing for a port."""
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kdlib.notebook import PARAMETERS, kernel_managers

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


def test_every_notebook_holds_one_parameters_cell_and_nothing_injected():
    assert NOTEBOOKS
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        parameters = [c for c in nb.cells if "parameters" in tags(c)]
        assert [c.source for c in parameters] == [PARAMETERS], path.name
        assert not [c for c in nb.cells if "injected-parameters" in tags(c)], path.name


def opening(tmp_path: Path, edit: str | None = None) -> Path:
    """e1_size up to its setup() call, its parameters cell edited as a JupyterLab user would."""
    nb = nbformat.read(REPO / "notebooks" / "e1_size.ipynb", as_version=4)
    end = next(i for i, c in enumerate(nb.cells) if "setup(scale" in c.source)
    nb.cells = nb.cells[: end + 1]
    for cell in nb.cells:
        cell.outputs = [] if cell.cell_type == "code" else None
        if cell.cell_type != "code":
            cell.pop("outputs")
        if edit and "parameters" in tags(cell):
            cell.source = cell.source.replace('scale: str = "cpu"', edit)
    path = tmp_path / "opening.ipynb"
    nbformat.write(nb, path)
    return path


def printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_an_edit_of_the_parameters_cell_takes_effect_in_a_real_kernel(tmp_path, monkeypatch):
    monkeypatch.delenv("KDLIB_SCALE", raising=False)
    nb = nbformat.read(opening(tmp_path, edit='scale: str = "smoke"'), as_version=4)
    NotebookClient(nb, kernel_name="kdlib", kernel_manager_class=kernel_managers()[1],
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert "scale=smoke, results from results/smoke/" in printed(nb)


@pytest.mark.slow
def test_papermill_scale_alone_selects_the_scales_results_from_any_folder(tmp_path, monkeypatch):
    import papermill

    monkeypatch.delenv("KDLIB_SCALE", raising=False)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(opening(tmp_path)), str(out), parameters={"scale": "smoke"}, kernel_name="kdlib",
                               engine_name="kdlib", progress_bar=False)
    assert "scale=smoke, results from results/smoke/" in printed(nbformat.read(out, as_version=4))


@pytest.mark.slow
def test_kernels_started_together_never_share_an_address():
    """Eight kernels at once, as nbval's and papermill's start side by side under make -j2: each on its
    own IPC sockets (the TCP race, "Address already in use", cannot happen), each answering."""
    manager = kernel_managers()[0]

    def start_and_ask(i: int) -> tuple[str, str, str]:
        km = manager(kernel_name="kdlib")
        km.start_kernel()
        try:
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=120)
            texts = []
            kc.execute_interactive(f"print({i} * 7)", timeout=60,
                                   output_hook=lambda m: texts.append(m["content"].get("text", "")))
            kc.stop_channels()
            return km.transport, km.ip, "".join(texts).strip()
        finally:
            km.shutdown_kernel(now=True)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(start_and_ask, range(8)))
    assert [a[2] for a in answers] == [str(i * 7) for i in range(8)]
    assert {a[0] for a in answers} == {"ipc"} and len({a[1] for a in answers}) == 8


def test_papermill_finds_the_kdlib_engine():
    from papermill.engines import papermill_engines

    engine = papermill_engines.get_engine("kdlib")
    assert engine.__name__ == "IPCEngine"


def test_the_pytest_plugin_compares_images_and_gives_nbval_ipc_kernels():
    """`-p kdlib.notebook` (pyproject.toml): nbval's kernels on IPC sockets, and image outputs compared."""
    import types

    import nbval.kernel

    from kdlib import notebook

    assert nbval.kernel.KernelManager.__name__ == "IPCKernelManager"  # configured for this very run
    item = types.SimpleNamespace(parent=types.SimpleNamespace(skip_compare=("metadata", "image/png", "image/jpeg")))
    notebook.pytest_collection_modifyitems([item])
    assert item.parent.skip_compare == ("metadata",)


def test_the_notebooks_hold_under_500_lines_of_code():
    """Data in, plot out, one call for the verdict (issue 43): the logic lives in kdlib, so the notebooks' code
    cells stay short. Markdown cells are not counted."""
    lines = sum(len(c.source.splitlines()) for path in NOTEBOOKS for c in nbformat.read(path, as_version=4).cells
                if c.cell_type == "code")
    assert lines < 500, lines
