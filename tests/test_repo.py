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
