"""The numbers behind the size and compute tables: parameter and multiply-add counts of known models."""
import pytest

from kdlib import resources
from kdlib.models import Hyperprior


def encoder_macs(N: int, M: int, H: int, W: int) -> int:
    """CompressAI's g_a by hand: four 5x5 stride-2 convolutions (3 -> N -> N -> N -> M) and three GDNs,
    each a 1x1 convolution N -> N over its input's pixels."""
    pixels = [H * W // 4**k for k in (1, 2, 3, 4)]  # outputs of the four convolutions
    convs = 25 * (3 * N * pixels[0] + N * N * pixels[1] + N * N * pixels[2] + N * M * pixels[3])
    return convs + N * N * (pixels[0] + pixels[1] + pixels[2])


@pytest.mark.parametrize("N", [16, 128])
def test_encoder_multiply_adds_are_counted_as_by_hand(N):
    counted = resources.flops(Hyperprior(N, 192), 512, 768)
    assert counted["gmacs_encoder"] == pytest.approx(encoder_macs(N, 192, 512, 768) / 1e9, rel=1e-9)
    assert counted["gflops"] == pytest.approx(2 * counted["gmacs"])
    parts = counted["gmacs_encoder"] + counted["gmacs_hyperprior"] + counted["gmacs_decoder"]
    assert parts == pytest.approx(counted["gmacs"], rel=1e-6)


def test_parameter_counts_and_memory_are_the_papers():
    """The paper's table (5.08 M for the N = 128 teacher, 0.27 M for N = 16) to its two decimals, and
    float32 parameters in MiB."""
    model = Hyperprior(128, 192)
    before = resources.size(model)["params_buffers_MiB"]
    model.update(force=True)  # builds the CDF tables
    teacher, student = resources.size(model), resources.size(Hyperprior(16, 192))
    assert round(teacher["params_M"], 2) == 5.08 and round(student["params_M"], 2) == 0.27
    assert teacher["params_MiB"] == pytest.approx(teacher["params_M"] * 1e6 * 4 / 2**20)
    assert teacher["params_buffers_MiB"] > before  # the CDF tables count as buffers, not parameters


def test_peak_memory_measures_each_phase_in_its_own_fresh_process(tmp_path):
    """Encoding and decoding run side by side, each in a fresh process (the decoder reads a stream made
    beforehand): both report a peak, and the rise above the resident size before the call within it."""
    import numpy as np
    from PIL import Image


    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(image)
    out = resources.peak_memory(Hyperprior(16, 24), image)
    assert set(out) == {"encode_peak_MiB", "encode_extra_MiB", "decode_peak_MiB", "decode_extra_MiB"}
    for phase in ("encode", "decode"):
        assert out[f"{phase}_peak_MiB"] > 50 and 0 <= out[f"{phase}_extra_MiB"] < out[f"{phase}_peak_MiB"]
