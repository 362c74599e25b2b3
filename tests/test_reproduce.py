import json
from pathlib import Path

import pytest

from kdlib import reproduce as rep
from kdlib.scales import Layout


def test_a_product_is_made_once_then_again_when_its_inputs_change(tmp_path, monkeypatch, mirror):
    made = []
    inputs = {"sha256": "a", "images": 2}

    def make():
        made.append(1)
        (tmp_path / "smoke" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "smoke" / "x" / "table.csv").write_text("a,b\n")

    product = lambda: rep.Product(Path("x/table.csv"), "nb", dict(inputs), rep._sidecar, make)  # noqa: E731
    monkeypatch.setattr(rep, "products", lambda layout, images: [product()])
    monkeypatch.setattr("kdlib.experiments.run_experiment", lambda *a, **k: None)
    layout = Layout.of("smoke", results_root=tmp_path)
    assert rep.reproduce(layout) == [Path("x/table.csv")]
    assert json.loads((tmp_path / "smoke" / "x" / "table.csv.inputs.json").read_text()) == inputs
    assert rep.reproduce(layout) == [] and len(made) == 1
    inputs["sha256"] = "b"  # e.g. a re-released checkpoint
    assert rep.reproduce(layout) == [Path("x/table.csv")] and len(made) == 2


def test_every_committed_result_records_its_inputs():
    """The committed cpu results are up to date with the committed checkpoints and code (a change to
    the codec's code, or a new release, needs `make reproduce` before it lands)."""
    from kdlib import data

    layout = Layout.of("cpu")
    stale = [str(p.path) for p in rep.products(layout, data.kodak_paths()) if p.stale(layout.results)]
    assert not stale, f"stale or missing: {stale}; run `make reproduce`"


def test_paper_scale_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(rep.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="missing here: a CUDA GPU"):
        rep.reproduce(Layout.of("paper"))


def test_out_holds_every_result_the_experiments_included(tmp_path, monkeypatch, mirror):
    """`kdlib reproduce --out X` writes the experiments' results under X too (they went to the
    repository's results/ whatever --out said)."""
    from kdlib import grid

    folders = []
    monkeypatch.setattr(rep, "products", lambda layout, images: [])
    monkeypatch.setattr("kdlib.experiments.run_experiment", lambda number, layout, **k: folders.append(layout.experiments))
    rep.reproduce(Layout.of("cpu", results_root=tmp_path / "out"))
    assert folders == [tmp_path / "out" / "experiments"] * len(grid.EXPERIMENTS)


def test_a_result_made_by_other_evaluation_code_is_stale(tmp_path):
    """A model's result JSON records the digest of the code that evaluated it (kdlib.evaluate.
    EVALUATION_CODE); one without it, or with another, is made again (issue 27: the staleness check
    saw only the checkpoint and the image count)."""
    from kdlib.evaluate import evaluation_code

    inputs = {"sha256": "abc", "images": 2, "code": evaluation_code()}
    product = rep.Product(Path("M.json"), "nb", inputs, rep._model_inputs, lambda: None)
    result = {"model": {"sha256": "abc", "code": evaluation_code()}, "per_image": [{}, {}]}
    (tmp_path / "M.json").write_text(json.dumps(result))
    assert not product.stale(tmp_path)
    for code in (None, "0" * 16):
        result["model"]["code"] = code
        (tmp_path / "M.json").write_text(json.dumps(result))
        assert product.stale(tmp_path)
