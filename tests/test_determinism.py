"""Decoding is bit-identical across processes, thread counts and batch sizes (through the CLI)."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from kdlib import bitstream
from kdlib.models import CHECKPOINTS, Hyperprior, save_checkpoint

KDLIB = [sys.executable, "-m", "kdlib.cli"]


def model_file(kind: str, tmp_path: Path) -> str:
    if kind == "released T5":
        path = CHECKPOINTS / "T5.pth.tar"
        if not path.exists():
            pytest.skip("no released T5 checkpoint")
        return str(path)
    torch.manual_seed(1)
    model = Hyperprior(16, 192)
    save_checkpoint(tmp_path / "random.pth.tar", model, {})
    return str(tmp_path / "random.pth.tar")


@pytest.mark.slow  # over 10 s here: left out of `make test-fast`
@pytest.mark.parametrize("kind", ["random N=16", "released T5"])
def test_decode_identical_across_threads_and_processes(kind, tmp_path, mirror):
    model = model_file(kind, tmp_path)
    source = tmp_path / "crop.png"
    with Image.open(mirror / "kodak" / "kodim23.png") as image:
        image.crop((100, 50, 100 + 250, 50 + 190)).save(source)  # odd size: padding on all sides
    for threads in ("1", "2"):
        subprocess.run([*KDLIB, "--threads", threads, "compress", str(source), str(tmp_path / f"e{threads}.kdl"),
                        "--model", model], check=True, capture_output=True)
    assert (tmp_path / "e1.kdl").read_bytes() == (tmp_path / "e2.kdl").read_bytes()
    digests = set()
    for threads in ("1", "2"):
        out = tmp_path / f"d{threads}.png"
        subprocess.run([*KDLIB, "--threads", threads, "decompress", str(tmp_path / "e1.kdl"), str(out),
                        "--model", model], check=True, capture_output=True)
        digests.add(hashlib.sha256(Image.open(out).tobytes()).hexdigest())
    blob = (tmp_path / "e1.kdl").read_bytes()
    with Image.open(source) as image:  # a batch decodes images concurrently: no shared state may leak
        others = bitstream.compress_batch([image.transpose(k) for k in range(3)], model)
    batch = bitstream.decompress_batch([blob, *others, blob], model)
    digests |= {hashlib.sha256(batch[i].tobytes()).hexdigest() for i in (0, 4)}
    assert len(digests) == 1


def test_fast_layers_match_compressai_and_ignore_threads_and_blocks(monkeypatch):
    """GDN in blocks and the sub-pixel last layer equal CompressAI's layers (to float rounding),
    and give the same bits at 1 and 2 threads and for any GDN block size."""
    from compressai.layers import GDN

    from kdlib import entropy

    torch.manual_seed(0)
    gdn, igdn = GDN(16), GDN(16, inverse=True)
    for layer in (gdn, igdn):
        layer.gamma.data.uniform_(0.01, 0.2)
    last = torch.nn.ConvTranspose2d(16, 3, 5, stride=2, padding=2, output_padding=1)
    x = torch.randn(1, 16, 150, 250).contiguous(memory_format=torch.channels_last)  # 37500 rows: many blocks
    threads = torch.get_num_threads()
    with torch.no_grad():
        for layer in (gdn, igdn, last):
            runs = []
            for n, rows in ((1, entropy._gdn_rows(16)), (2, entropy._gdn_rows(16)), (1, 512), (1, 1000), (1, 32768)):
                torch.set_num_threads(n)
                monkeypatch.setattr(entropy, "_GDN_FLOATS", rows * 16)
                runs.append(entropy._layer(layer, x.clone()))  # GDN works in place
            torch.set_num_threads(threads)
            assert torch.allclose(runs[0], layer(x.contiguous()), rtol=1e-5, atol=1e-5)
            assert all(torch.equal(runs[0], run) for run in runs[1:])


@pytest.mark.parametrize("channels", [16, 128, 192, 320])
def test_gdn_is_the_same_for_short_tails_and_tiny_layers(channels):
    """MKL multiplies a block of under 16 rows another way, thread-dependent at 192 and 320 channels
    (6-8 and 4-13 rows): GDN must never hand it one. A layer's pixels are computed the same whether it
    is alone, at 1 or 2 threads, or part of a larger layer (each pixel's GDN is its own)."""
    from compressai.layers import GDN

    from kdlib import entropy

    torch.manual_seed(0)
    layer = GDN(channels, inverse=True)
    layer.gamma.data.uniform_(0.01, 0.2)
    rows = entropy._gdn_rows(channels)
    big = torch.randn(1, channels, 1, 2 * rows + 64)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            whole = entropy._gdn_(layer, big.clone().contiguous(memory_format=torch.channels_last))
            for width in (1, 3, 7, 13, rows + 8, 2 * rows + 12):
                part = big[..., :width].contiguous(memory_format=torch.channels_last)
                runs = []
                for n in (1, 2):
                    torch.set_num_threads(n)
                    runs.append(entropy._gdn_(layer, part.clone()))
                assert torch.equal(runs[0], runs[1]), width
                assert torch.equal(runs[0], whole[..., :width]), width
    finally:
        torch.set_num_threads(threads)
