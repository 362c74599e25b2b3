"""The arithmetic behind the speed numbers, on fake timers: ratios, shares and bounds computed right."""
import itertools

import pytest
import torch

from kdlib import bench, resources


def test_speed_rows_ratios_share_and_bound():
    seconds = {"ce": 6.0, "cd": 4.0, "oe": 3.0, "od": 1.0, "ud": 2.0}  # 8 images
    rows = bench.speed_rows("S", 8, 8 * 1000, seconds, {"compressai": 1000, "ours": 1010},
                            coder_s=0.8, synthesis_s=0.05, threads=2)
    compressai, ours, bare = rows
    assert compressai["decode_img_s"] == 2 and ours["decode_img_s"] == 8 and bare["decode_img_s"] == 4
    assert ours["encode_ratio"] == 2 and ours["decode_ratio"] == 4 and bare["decode_ratio"] == 2
    assert bare["safe_decode_ratio"] == 2 and ours["bytes_ratio"] == pytest.approx(1.01)
    assert ours["bpp"] == pytest.approx(8 * 1010 / 8000) and compressai["bpp"] == 1.0
    assert ours["coder_share"] == pytest.approx(0.8 / (1.0 * 2))  # coder seconds over both threads' time
    # per image: 0.1 s of coder spread over 2 threads + 0.05 s of synthesis -> 10 images/s at best
    assert ours["bound_img_s"] == pytest.approx(10) and ours["of_bound"] == pytest.approx(0.8)


def test_coder_seconds_sums_every_decoder_call_and_restores_the_decoder(monkeypatch):
    from kdlib import entropy

    clock = itertools.count(step=0.25)
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    real = entropy.decode_symbols
    monkeypatch.setattr(entropy, "decode_symbols", lambda *args, **kwargs: None)

    class FakeBitstream:  # decodes each blob with two decoder calls (z, then y)
        @staticmethod
        def decompress_batch(blobs, model):
            for _ in blobs:
                entropy.decode_symbols()
                entropy.decode_symbols()

    assert bench._coder_seconds(FakeBitstream, [b"a", b"b", b"c"], None) == pytest.approx(6 * 0.25)
    assert entropy.decode_symbols is not real and entropy.decode_symbols() is None  # the patched one is back


def test_time_frames_counts_every_pass_and_meters_energy(monkeypatch):
    clock = iter([10.0, 12.0])  # start, end
    monkeypatch.setattr(resources.time, "perf_counter", lambda: next(clock))
    calls = []
    joules = iter([100.0, 100.5])

    class Meter:
        read = staticmethod(lambda: next(joules))

    out = resources.time_frames(calls.append, [torch.zeros(1)] * 4, passes=2, device=torch.device("cpu"),
                                meter=Meter())
    assert len(calls) == 1 + 8  # a warm-up, then 2 passes over 4 frames
    assert out["fps"] == pytest.approx(8 / 2.0) and out["mj_per_frame"] == pytest.approx(0.5 * 1e3 / 8)
