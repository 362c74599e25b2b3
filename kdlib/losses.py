"""The paper's losses: rate-distortion, and knowledge distillation (L1, L2, KLD, hybrid).

All distillation terms are plain MSEs in the models' own units (images in [0, 1],
latents as they are), as in the authors' code; only the RD term scales its MSE by
``lambda * 255^2``, as CompressAI's ``RateDistortionLoss`` does.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from compressai.losses import RateDistortionLoss
from torch import nn


def latent_kld(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)) over channels, averaged over positions.

    The authors' code averaged over channels too (``nn.KLDivLoss()``), i.e. this divided
    by the channel count; here it is a true KL divergence per position.
    """
    kl = F.kl_div(F.log_softmax(student, dim=1), F.log_softmax(teacher, dim=1),
                  reduction="none", log_target=True)
    return kl.sum(dim=1).mean()


class KDLoss(nn.Module):
    """``w_latent * D(y_hat_s, y_hat_t) + w_hyper * MSE(z_hat_s, z_hat_h) + w_recon * MSE(x_hat_s, x_hat_t) + w_rd * RD``.

    ``t`` is the teacher and ``h`` the hyper-latent teacher (the teacher itself unless a
    second one is given: hybrid KD). ``D`` is MSE or, with ``latent="kld"``, :func:`latent_kld`.
    Paper presets: L1 = (0.2, 0, 0.2, 0.4); L2 adds ``w_hyper``. Without a teacher the loss
    is the plain RD loss (the no-teacher baseline).
    """

    def __init__(self, lmbda: float, w_latent: float = 0.2, w_hyper: float = 0.0,
                 w_recon: float = 0.2, w_rd: float = 0.4, latent: str = "mse"):
        super().__init__()
        if latent not in ("mse", "kld"):
            raise ValueError(f"latent must be 'mse' or 'kld', not {latent!r}")
        self.rd = RateDistortionLoss(lmbda=lmbda)
        self.weights = {"latent": w_latent, "hyper": w_hyper, "recon": w_recon, "rd": w_rd}
        self.latent = latent

    def forward(self, out: dict[str, Any], x: torch.Tensor, teacher: dict[str, Any] | None = None,
                hyper_teacher: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        terms = self.rd(out, x)
        terms = {"rd_loss": terms["loss"], "bpp_loss": terms["bpp_loss"], "mse_loss": terms["mse_loss"]}
        if teacher is None:
            terms["loss"] = terms["rd_loss"]
            return terms
        w = self.weights
        latent = latent_kld if self.latent == "kld" else F.mse_loss
        terms["latent_loss"] = latent(out["y_hat"], teacher["y_hat"])
        terms["recon_loss"] = F.mse_loss(out["x_hat"], teacher["x_hat"])
        loss = w["latent"] * terms["latent_loss"] + w["recon"] * terms["recon_loss"] + w["rd"] * terms["rd_loss"]
        if w["hyper"]:
            target = (hyper_teacher or teacher)["z_hat"]
            if target.shape != out["z_hat"].shape:
                raise ValueError(f"Hyper-latent KD needs z of the same shape: student {tuple(out['z_hat'].shape)}, "
                                 f"teacher {tuple(target.shape)}; build the student with Z equal to the teacher's N.")
            terms["hyper_loss"] = F.mse_loss(out["z_hat"], target)
            loss = loss + w["hyper"] * terms["hyper_loss"]
        terms["loss"] = loss
        return terms
