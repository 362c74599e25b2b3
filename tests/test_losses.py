import pytest
import torch

from kdlib.losses import KDLoss, latent_kld
from kdlib.models import Hyperprior


@pytest.fixture
def outputs():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    return x, Hyperprior(16, 24).train()(x), Hyperprior(32, 24).eval()(x)


def test_scratch_is_rd(outputs):
    x, student, _ = outputs
    terms = KDLoss(0.025)(student, x)
    assert torch.equal(terms["loss"], terms["rd_loss"])
    assert terms["rd_loss"].item() == pytest.approx(0.025 * 255**2 * terms["mse_loss"].item() + terms["bpp_loss"].item(), rel=1e-5)


def test_l1_weights(outputs):
    x, student, teacher = outputs
    terms = KDLoss(0.025, w_latent=0.3, w_recon=0.3, w_rd=0.4)(student, x, teacher)
    expected = 0.3 * terms["latent_loss"] + 0.3 * terms["recon_loss"] + 0.4 * terms["rd_loss"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["recon_loss"].item() == pytest.approx(torch.mean((student["x_hat"] - teacher["x_hat"]) ** 2).item())


def test_hyper_term_needs_matching_z(outputs):
    x, student, teacher = outputs
    with pytest.raises(ValueError, match="same shape"):
        KDLoss(0.025, w_hyper=0.1)(student, x, teacher)
    wide = Hyperprior(16, 24, Z=32).train()(x)
    terms = KDLoss(0.025, w_hyper=0.1)(wide, x, teacher, hyper_teacher=teacher)
    assert terms["hyper_loss"].item() > 0


def test_kld():
    a = torch.randn(2, 8, 3, 3)
    assert latent_kld(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert latent_kld(a, torch.randn(2, 8, 3, 3)).item() > 0
    with pytest.raises(ValueError):
        KDLoss(0.025, latent="l2")


def test_kld_at_the_authors_scale_is_per_position_over_channels():
    s, t = torch.randn(2, 192, 4, 4), torch.randn(2, 192, 4, 4)
    assert torch.allclose(latent_kld(s, t, per_position=False) * 192, latent_kld(s, t))
    loss = KDLoss(0.025, latent="kld-mean")
    with pytest.raises(ValueError, match="latent must be one of"):
        KDLoss(0.025, latent="kl")
    assert loss.latent == "kld-mean"


def test_presets_name_the_authors_weights():
    from kdlib.losses import KD_PRESETS

    assert KD_PRESETS["authors"] == dict(w_latent=0.2, w_hyper=0.0, w_recon=0.2, w_rd=0.6)
    assert KD_PRESETS["paper-text"]["w_rd"] == 0.4
