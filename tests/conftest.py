import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kdlib.models import Hyperprior

MIRROR = Path(os.environ.get("KDLIB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A writable copy of the Kodak mirror, set as KDLIB_DATA."""
    if not (MIRROR / "kodak").is_dir():
        pytest.skip(f"no Kodak mirror at {MIRROR}")
    shutil.copytree(MIRROR / "kodak", tmp_path / "kodak")
    monkeypatch.setenv("KDLIB_DATA", str(tmp_path))
    return tmp_path


@pytest.fixture
def small_model() -> Hyperprior:
    torch.manual_seed(0)
    model = Hyperprior(N=16, M=24).eval()
    model.update(force=True)
    return model


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """A few small smooth RGB images (odd sizes included)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(77, 100), (64, 64), (90, 130)]):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / 7 + i), np.cos(yy / 5), np.sin((xx + yy) / 11)], -1)
        img = ((base + 1) * 110 + rng.normal(0, 4, (h, w, 3))).clip(0, 255).astype(np.uint8)
        write_png(folder / f"img{i}.png", img)
    return folder
