import pickle

import pytest
import torch
from compressai.models import ScaleHyperprior

from kdlib.models import Hyperprior, ModelError, load_model, pretrained, read_checkpoint, save_checkpoint


def test_forward_returns_latents():
    model = Hyperprior(16, 24)
    out = model(torch.rand(1, 3, 64, 64))
    assert out["y_hat"].shape == (1, 24, 4, 4) and out["z_hat"].shape == (1, 16, 1, 1)
    assert set(out["likelihoods"]) == {"y", "z"}


def test_wide_hyper_latent_variant():
    model = Hyperprior(16, 24, Z=32)
    out = model(torch.rand(1, 3, 64, 64))
    assert out["z_hat"].shape == (1, 32, 1, 1)
    again = Hyperprior.from_state_dict(model.state_dict())
    assert again.config == {"N": 16, "M": 24, "Z": 32}


def test_compressai_state_dict_loads(tmp_path):
    reference = ScaleHyperprior(16, 24)
    reference.update()
    torch.save(reference.state_dict(), tmp_path / "zoo-style.pth.tar")
    model = load_model(tmp_path / "zoo-style.pth.tar")
    assert model.config == {"N": 16, "M": 24, "Z": 16}
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(model(x)["x_hat"], reference.eval()(x)["x_hat"])


def test_pretrained_checksum_enforced(tmp_path):
    torch.save(ScaleHyperprior(128, 192).state_dict(), tmp_path / "bmshj2018-hyperprior-5-f8b614e1.pth.tar")
    with pytest.raises(ModelError, match="does not match the official"):
        pretrained(5, path=tmp_path / "bmshj2018-hyperprior-5-f8b614e1.pth.tar")
    with pytest.raises(ModelError, match="No pretrained"):
        pretrained(9)


def test_checkpoint_metadata_roundtrip(tmp_path):
    model = Hyperprior(16, 24)
    save_checkpoint(tmp_path / "m.pth.tar", model, {"lambda": 0.025, "steps": 3, "seed": 0, "data": "x"})
    loaded = load_model(tmp_path / "m.pth.tar")
    assert loaded.meta["lambda"] == 0.025 and loaded.meta["N"] == 16 and "commit" in loaded.meta
    assert not list(tmp_path.glob("*.tmp"))
    save_checkpoint(tmp_path / "z.pth.tar", Hyperprior(16, 24, Z=32), {"lambda": 0.025})  # experiment 4's Z != N
    assert load_model(tmp_path / "z.pth.tar").Z == 32  # the load's probe feeds h_s Z channels


class Payload:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_arbitrary_pickles_refused(tmp_path):
    with open(tmp_path / "evil.pth.tar", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(ModelError, match="Cannot load checkpoint"):
        read_checkpoint(tmp_path / "evil.pth.tar")
    with pytest.raises(ModelError, match="No model 'nope'"):
        load_model("nope")
