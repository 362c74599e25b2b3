"""The HTML report, opened in a real headless browser (Debian's chromium; `make test` installs it)."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kdlib import plots
from kdlib.report import write_html

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def rendered(page: Path) -> tuple[int, int]:
    """(images rendered, images) on a page, as the browser saw them after load."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium (apt-get install chromium)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<div id="kdlib-figures">figures rendered: (\d+)/(\d+)</div>', dom)
    assert found, f"{page.name}: the page did not finish loading in the browser"
    return int(found[1]), int(found[2])


def test_report_renders_every_figure_in_a_browser(tmp_path):
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]*.ipynb"))
    index = write_html(notebooks, tmp_path / "report", plots.PAPER / "REPRODUCTION.md", plots.FIGURES)
    shown, total = rendered(index)
    assert total == len(list(plots.FIGURES.glob("*.png"))) > 20 and shown == total
    for notebook in notebooks:
        outputs = sum("image/png" in o.get("data", {}) for c in json.loads(notebook.read_text())["cells"]
                      for o in c.get("outputs", []))
        shown, total = rendered(index.with_name(f"{notebook.stem}.html"))
        assert shown == total >= outputs, notebook.name
