"""DDP through torchrun: two CPU processes with the gloo backend."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdlib.models import load_model, read_checkpoint
from kdlib.train import Config, run_dir


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
def test_torchrun_two_processes(photo_folder, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    args = ["--name", "ddp", "--scale", "smoke", "--N", "8", "--M", "16", "--data", str(photo_folder),
            "--runs", str(tmp_path), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "kdlib.cli", "train", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = Config(name="ddp", scale="smoke", N=8, M=16, data=str(photo_folder))
    state = read_checkpoint(run_dir(config, tmp_path) / "last.pth.tar")
    assert state["meta"]["world_size"] == 2 and len(state["rng"]) == 2  # one RNG state per rank, for resume
    assert load_model(run_dir(config, tmp_path) / "best.pth.tar").meta["steps"] == config.steps
