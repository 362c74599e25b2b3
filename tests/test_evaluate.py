import json
import math

import pytest
import torch
import torch.nn.functional as F

from kdlib.data import image_files, load_image
from kdlib.entropy import RoundTripError, decode, encode
from kdlib.evaluate import evaluate, evaluate_image, fresh_copy
from kdlib.io import write_json


def test_roundtrip_is_exact(small_model):
    x = torch.rand(2, 3, 64, 128)
    enc = encode(small_model, x)
    dec = decode(fresh_copy(small_model), enc["strings"], enc["shape"])
    assert torch.equal(dec["y_hat"], enc["y_hat"])


def test_matches_compressai_compress(small_model, photo_folder):
    """PSNR and bpp equal CompressAI's own compress()/decompress() on an odd-sized image."""
    x = load_image(photo_folder / "img0.png")  # 77x100
    ours = evaluate_image(small_model, fresh_copy(small_model), x)
    padded = F.pad(x[None], (14, 14, 25, 26))
    enc = small_model.compress(padded)
    x_hat = small_model.decompress(enc["strings"], enc["shape"])["x_hat"][..., 25:-26, 14:-14]
    mse = ((x * 255).round() - (x_hat[0] * 255).clamp(0, 255).round()).pow(2).mean()
    bpp = sum(len(s[0]) for s in enc["strings"]) * 8 / (77 * 100)
    assert ours["psnr-rgb"] == pytest.approx(20 * math.log10(255) - 10 * torch.log10(mse).item(), abs=1e-5)
    assert ours["bpp"] == pytest.approx(bpp, abs=1e-12)
    assert ours["bpp-estimated"] > 0


def test_corrupted_decoder_is_caught(small_model):
    decoder = fresh_copy(small_model)
    with torch.no_grad():
        decoder.h_s[-2].bias.add_(5.0)  # the receiver derives other scales: decoding goes wrong
    with pytest.raises(RoundTripError, match="scale indexes decoded from the hyper-latent differ"):
        evaluate_image(small_model, decoder, torch.rand(3, 64, 64))


def test_json_layout(small_model, photo_folder, tmp_path):
    result = evaluate(small_model, image_files(photo_folder), "tiny", progress=False)
    path = write_json(tmp_path / "tiny.json", result)
    loaded = json.loads(path.read_text())
    assert {"name", "description", "results"} <= set(loaded)
    assert set(loaded["results"]) == {"psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-estimated", "encoding_time", "decoding_time"}
    assert all(len(v) == 1 for v in loaded["results"].values())
    assert [r["image"] for r in loaded["per_image"]] == ["img0.png", "img1.png", "img2.png"]
    assert loaded["model"]["N"] == 16


def test_scale_indexes_equal_compressai(small_model):
    """The log-based index equals CompressAI's build_indexes, on table entries and their neighbours too."""
    from kdlib import entropy

    gc = small_model.gaussian_conditional
    table = gc.scale_table.float()
    scales = torch.cat([table, torch.nextafter(table, torch.tensor(1e9)), torch.nextafter(table, torch.tensor(0.0)),
                        torch.exp(torch.empty(20000).uniform_(-3, 7)), torch.tensor([0.0, 1e6])])
    expected = gc.build_indexes(scales[None])
    small_model.h_s = torch.nn.Sequential()  # identity: feed the scales straight in
    assert torch.equal(entropy.scale_indexes(small_model, scales[None]), expected)


def test_decoded_values_to_tensor_both_ways():
    from kdlib.entropy import _as_tensor

    assert _as_tensor([0, 7, 255]).tolist() == [0, 7, 255]
    assert _as_tensor([0, 300, -2]).tolist() == [0, 300, -2]  # bypass-coded outliers: the slow path


def test_outliers_round_trip(small_model):
    """Latents far outside the CDF tables go through the coder's bypass mode and still decode exactly."""
    from kdlib import entropy

    class Times(torch.nn.Module):
        def forward(self, y):
            return y * 1e4

    x = torch.rand(1, 3, 64, 64)
    small_model.g_a.append(Times())
    enc = entropy.encode(small_model, x)
    assert enc["y_hat"].abs().max() > 255
    dec = entropy.decode(small_model, enc["strings"], enc["shape"], enc["index_crc"])
    assert torch.equal(dec["y_hat"], enc["y_hat"])
