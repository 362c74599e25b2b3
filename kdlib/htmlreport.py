"""The static HTML report (``make report``): ``paper/REPRODUCTION.md`` as its index, with every
figure shown, and one page per executed notebook (nbconvert), each linking back to the index."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from kdlib.scales import Layout


# Added to every page of the HTML report: once the page has loaded, it writes how many of its images
# rendered (decoded, non-zero width) into #kdlib-figures, which a headless browser's DOM dump shows.
_CHECK = """<div id="kdlib-figures"></div><script>
window.addEventListener("load", () => { const images = [...document.images];
  const shown = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.getElementById("kdlib-figures").textContent = `figures rendered: ${shown}/${images.length}`; });
</script>"""


# Wide tables scroll inside the page instead of running off it.
_STYLE = "<style>table { display: block; overflow-x: auto; max-width: 100%; }</style>"
# nbconvert's template loads require.js and MathJax from a CDN: a blank page offline. The notebooks need
# neither (no widgets; formulas are written in plain text), so the report carries no remote script.
_REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>\s*", re.IGNORECASE)


def offline(page: str) -> str:
    """An HTML page without remote scripts, with the report's style."""
    return _REMOTE_SCRIPT.sub("", page).replace("</head>", _STYLE + "</head>", 1)


def write_html(notebooks: list[Path], out: str | Path, layout: Layout) -> Path:
    """A static HTML report in ``out``: ``index.html`` (``layout``'s REPRODUCTION.md, with every figure of
    ``layout.figures`` shown, its tables copied) and one page per executed notebook (nbconvert, figures
    embedded). Returns the index."""
    from nbconvert import HTMLExporter  # Jupyter's exporter, only when a report is written
    from nbconvert.filters.markdown import markdown2html

    out, figures = Path(out), layout.figures
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    pages = []
    back = '<p><a href="index.html">&larr; the reproduction, figure by figure (index)</a></p>'
    for notebook in notebooks:
        body, _ = exporter.from_filename(str(notebook))
        page = out / f"{Path(notebook).stem}.html"
        body = body.replace('"../figures/', '"figures/').replace("](../figures/", "](figures/")  # the report's copy
        body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + back, body, count=1)
        page.write_text(offline(body.replace("</body>", back + _CHECK + "</body>")))
        pages.append(page.name)
    for folder, name in ((figures, "figures"), (layout.tables, "tables")):
        if folder.is_dir():
            shutil.copytree(folder, out / name, dirs_exist_ok=True)
    text = (layout.report / "REPRODUCTION.md").read_text().replace("](../figures/", "](figures/")
    shown = [f'<figure><img src="figures/{p.name}" width="600"><figcaption>{p.stem}</figcaption></figure>'
             for p in sorted((out / "figures").glob("*.png"))]
    links = "".join(f'<li><a href="{p}">{p.removesuffix(".html")}</a></li>' for p in pages)
    (out / "index.html").write_text(offline(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>kdlib: the reproduction</title></head><body>"
        + f"<h2>Notebooks</h2><ul>{links}</ul>" + markdown2html(text) + "<h2>Every figure</h2>" + "".join(shown)
        + _CHECK + "</body></html>"))
    return out / "index.html"
