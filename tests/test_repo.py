"""The repository as a newcomer clones it: no trace of the machine that built it."""
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_no_tracked_text_file_holds_this_checkouts_absolute_path():
    """Notebook outputs, reports and logs print paths relative to the repository (kdlib.plots.shown,
    kdlib.notebook.normalize). Binary files are left out: a released checkpoint's metadata records
    where it was trained from, and rewriting it would change its sha256, hence every run's config hash."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    leaks = []
    for name in filter(None, files):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        head = path.read_bytes()
        if b"\0" in head[:8192]:
            continue  # binary
        if str(REPO).encode() in head:
            leaks.append(name.decode())
    assert not leaks, f"absolute path {REPO} in {leaks}"


def readme_models() -> dict[str, list[str]]:
    """The README's model table: name -> its cells."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| name | lambda | training |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_the_readmes_model_table_quotes_the_records():
    """Steps from the manifest, Kodak points and the gaps to the classical codecs from the table notebook
    e7_codecs writes (paper/tables/released_vs_codecs.csv): one source for each number a newcomer reads."""
    import json

    import pandas as pd

    rows = readme_models()
    manifest = json.loads((REPO / "checkpoints" / "manifest.json").read_text())
    against = pd.read_csv(REPO / "paper" / "tables" / "released_vs_codecs.csv").set_index("model")
    assert set(rows) == set(manifest) == set(against.index)
    for name, cells in rows.items():
        r = against.loc[name]
        assert cells[4] == f"{r.psnr:.2f} dB at {r.bpp:.3f} bpp", name
        gaps = ["" if pd.isna(v) else f"{v:+.2f}" for v in (r.jpeg_db, r.webp_db, r.jpeg2000_db, r.avif_db)]
        assert cells[6:10] == gaps, name
        if name in ("T5", "T1"):
            assert f"{manifest[name]['steps'] / 1000:g}k steps" in cells[2], name
            assert ("not converged" in manifest[name]["recipe"]) == ("not converged" in cells[2]), name
