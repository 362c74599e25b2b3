"""Teacher and student codecs: CompressAI's scale hyperprior, checkpoints, pretrained weights."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.layers import GDN
from compressai.models import ScaleHyperprior
from compressai.models.utils import conv, deconv
from compressai.zoo.pretrained import load_pretrained

from kdlib.data import sha256sum
from kdlib.io import atomic
from kdlib.scales import CHECKPOINTS, REPO_ROOT

ARCHITECTURE = "bmshj2018-hyperprior"


def repo_relative(path: str | Path) -> Path:
    """``path`` relative to the repository when it lies inside it (what files and outputs record, the
    same on every machine), else resolved as it is."""
    resolved = Path(path).resolve()
    return resolved.relative_to(REPO_ROOT) if resolved.is_relative_to(REPO_ROOT) else resolved


class ModelError(RuntimeError):
    """A checkpoint is missing, corrupted, or does not fit the architecture."""


class Hyperprior(ScaleHyperprior):
    """CompressAI's ``ScaleHyperprior(N, M)`` whose forward also returns ``y_hat`` and ``z_hat``.

    ``Z`` is the width of the hyper-latent z (default ``N``, which is CompressAI's model).
    The paper's L2 students shrink the hyperprior to ``N`` but keep ``Z = 128``, the
    teacher's width, so that z_hat can be compared with the teacher's element by element.
    """

    def __init__(self, N: int = 128, M: int = 192, Z: int | None = None):
        super().__init__(N, M)
        self.Z = int(Z or N)
        if self.Z != N:
            self.entropy_bottleneck = EntropyBottleneck(self.Z)
            self.h_a[-1] = conv(N, self.Z)
            self.h_s[0] = deconv(self.Z, N)

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """CompressAI's forward, plus ``y_hat`` and ``z_hat``.

        Under autocast (mixed-precision training) the transforms run in low precision,
        the entropy models always in float32.
        """
        y = self.g_a(x)
        z = self.h_a(torch.abs(y))
        with torch.autocast(x.device.type, enabled=False):
            z_hat, z_likelihoods = self.entropy_bottleneck(z.float())
        scales_hat = self.h_s(z_hat)
        with torch.autocast(x.device.type, enabled=False):
            y_hat, y_likelihoods = self.gaussian_conditional(y.float(), scales_hat.float())
        x_hat = self.g_s(y_hat).float()
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
                "y_hat": y_hat, "z_hat": z_hat}

    @property
    def config(self) -> dict[str, int]:
        return {"N": self.N, "M": self.M, "Z": self.Z}

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor]) -> "Hyperprior":
        """Build the model that fits a (CompressAI-format) state dict and load it."""
        state_dict = load_pretrained(state_dict)
        try:
            N = state_dict["g_a.0.weight"].size(0)
            M = state_dict["g_a.6.weight"].size(0)
            Z = state_dict["h_a.4.weight"].size(0)
        except KeyError as err:
            raise ModelError(f"Not a scale-hyperprior state dict (no {err})") from None
        model = cls(N, M, Z)
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as err:
            raise ModelError(f"State dict does not fit Hyperprior(N={N}, M={M}, Z={Z}): {err}") from None
        return model


def gdn_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, GDN) for m in model.modules())


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def save_checkpoint(path: str | Path, model: Hyperprior, meta: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> None:
    """Write ``{"state_dict", "meta", **extra}`` atomically (temporary file, then rename).

    ``meta`` should hold plain values (architecture, N, M, lambda, steps, data, seed, commit);
    the model's configuration and the commit are added here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"architecture": ARCHITECTURE, **model.config, "commit": git_commit(), **meta}
    payload = {"state_dict": model.state_dict(), "meta": meta, **(extra or {})}
    with atomic(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain values only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"No checkpoint at {path}") from None
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise ModelError(f"Cannot load checkpoint {path}: {err}") from None


def resolve(name_or_path: str | Path) -> Path:
    """A released checkpoint name (``T5``, ``S64``...) or a file path."""
    path = Path(name_or_path)
    if path.exists():
        return path
    released = CHECKPOINTS / f"{name_or_path}.pth.tar"
    if released.exists():
        return released
    names = sorted(p.name.removesuffix(".pth.tar") for p in CHECKPOINTS.glob("*.pth.tar"))
    raise ModelError(f"No model {name_or_path!r}: not a file, nor a released checkpoint "
                     f"({', '.join(names) or 'none yet'}).")


def load_model(name_or_path: str | Path) -> Hyperprior:
    """Load our checkpoint, a CompressAI training checkpoint, or a zoo state dict; eval mode, updated."""
    payload = read_checkpoint(resolve(name_or_path))
    state_dict = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state_dict, dict):
        raise ModelError(f"{name_or_path} holds no state dict")
    loose = [k for k, v in state_dict.items() if not torch.is_tensor(v)]
    if loose:
        raise ModelError(f"{name_or_path}: {', '.join(map(str, loose[:3]))} should hold a tensor, not "
                         f"{type(state_dict[loose[0]]).__name__}; the checkpoint is damaged")
    bad = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelError(f"{name_or_path}: non-finite weights (NaN or infinity) in {', '.join(bad[:3])}"
                         f"{' and more' if len(bad) > 3 else ''}; the checkpoint is damaged")
    model = Hyperprior.from_state_dict(state_dict)
    model.meta = payload.get("meta", {})
    model.update()
    check_entropy_models(model, str(name_or_path))
    return model.eval()


TABLE_LIMIT = 1 << 16  # |offset|, |median|: a trained codec's are tens; the coder spins on larger ones


def check_entropy_models(model: Hyperprior, name: str = "the model") -> None:
    """Refuse entropy models the coder cannot use safely, as loaded (``update()`` keeps loaded
    tables): every CDF table starts at 0, rises strictly (no zero frequency) to 2^16 within its row,
    offsets and the bottleneck's medians are finite and under :data:`TABLE_LIMIT`, the scale table
    is positive and rising. A crafted table could otherwise make CompressAI's coder divide by zero,
    read past a row, or spin for minutes."""
    for part in ("entropy_bottleneck", "gaussian_conditional"):
        em = getattr(model, part)
        cdf, lengths, offsets = em._quantized_cdf, em._cdf_length.reshape(-1).long(), em._offset.reshape(-1).long()
        problem = None
        if cdf.is_floating_point() or em._cdf_length.is_floating_point() or em._offset.is_floating_point():
            problem = "floating-point tables where integers belong"
        elif cdf.dim() != 2 or not len(cdf) or len(lengths) != len(cdf) or len(offsets) != len(cdf):
            problem = "tables of inconsistent sizes"
        elif not bool(((lengths >= 2) & (lengths <= cdf.shape[1])).all()):
            problem = "a table length outside its row"
        else:
            inside = torch.arange(cdf.shape[1])[None, 1:] < lengths[:, None]
            last = cdf.gather(1, (lengths - 1)[:, None]).squeeze(1)
            if not bool((cdf[:, 0] == 0).all() and (last == 1 << 16).all()):
                problem = "a table that does not run from 0 to 65536"
            elif not bool(((cdf[:, 1:] > cdf[:, :-1]) | ~inside).all()):
                problem = "a symbol of zero frequency"
            elif not bool((offsets.abs() <= TABLE_LIMIT).all()):
                problem = "offsets beyond 65536"
        if problem:
            raise ModelError(f"{name}: the {part.replace('_', ' ')}'s CDF tables are damaged ({problem}); "
                             "the checkpoint cannot be used")
    medians = model.entropy_bottleneck.quantiles[:, 0, 1].detach()
    if not bool(torch.isfinite(medians).all() and (medians.abs() <= TABLE_LIMIT).all()):
        raise ModelError(f"{name}: the entropy bottleneck's medians are not finite or beyond 65536; "
                         "the checkpoint is damaged")
    gc = model.gaussian_conditional
    scales = gc.scale_table
    if not (scales.is_floating_point() and len(scales) == len(gc._quantized_cdf) >= 3 and bool(
            torch.isfinite(scales).all() and (scales > 0).all() and (scales.diff() > 0).all())):
        raise ModelError(f"{name}: the scale table ({len(scales)} scales) is not positive and rising with one "
                         f"scale per CDF row ({len(gc._quantized_cdf)}), at least 3; the checkpoint is damaged")
    _probe(model, name)


PROBE_LIMIT = 256.0  # |pixel| a decoder trained on [0, 1] images gives for all-zero latents: a few units


def _probe(model: Hyperprior, name: str) -> None:
    """Run the synthesis transforms on all-zero latents: ``h_s`` must give finite scales under
    :data:`TABLE_LIMIT` (a NaN becomes index -2^31) and ``g_s`` finite pixels within
    +-:data:`PROBE_LIMIT` (a scaled-up layer would otherwise code files that decode to noise, and
    say nothing)."""
    with torch.no_grad():
        scales = model.h_s(torch.zeros(1, model.Z, 2, 2))
        pixels = model.g_s(torch.zeros(1, model.M, 2, 2))
    if not bool(torch.isfinite(scales).all() and (scales.abs() <= TABLE_LIMIT).all()):
        raise ModelError(f"{name}: the hyper-synthesis h_s gives scales beyond {TABLE_LIMIT} (or non-finite) for "
                         "zero hyper-latents; the checkpoint is damaged")
    if not bool(torch.isfinite(pixels).all() and (pixels.abs() <= PROBE_LIMIT).all()):
        raise ModelError(f"{name}: the synthesis g_s gives pixels beyond +-{PROBE_LIMIT:g} (or non-finite) for "
                         "zero latents; the checkpoint is damaged")


def pretrained(quality: int, metric: str = "mse", path: str | Path | None = None) -> Hyperprior:
    """CompressAI's pretrained ``bmshj2018-hyperprior`` at ``quality`` (1..8).

    With ``path``, a local copy of the official file is used; otherwise the file is
    downloaded through torch.hub. Either way its sha256 must start with the 8 hex
    digits in the official file name.
    """
    from compressai.zoo.image import model_urls  # the zoo imports every CompressAI model

    try:
        url = model_urls[ARCHITECTURE][metric][quality]
    except KeyError:
        raise ModelError(f"No pretrained {ARCHITECTURE} for metric={metric!r} quality={quality!r}") from None
    prefix = re.search(r"-([0-9a-f]{8,})\.pth", url).group(1)
    if path is None:
        try:
            state_dict = torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True,
                                                            map_location="cpu", weights_only=True)
        except Exception as err:
            raise ModelError(f"Cannot download {url} ({err}). Download it elsewhere and pass "
                             f"path=... (file name {Path(url).name}).") from None
    else:
        digest = sha256sum(path)
        if not digest.startswith(prefix):
            raise ModelError(f"{path}: sha256 {digest[:8]}... does not match the official "
                             f"{Path(url).name} (expected prefix {prefix})")
        state_dict = read_checkpoint(path)
    model = Hyperprior.from_state_dict(state_dict)
    model.meta = {"source": url, "quality": quality, "metric": metric}
    model.update()
    check_entropy_models(model, Path(url).name)
    return model.eval()


class SpecError(ModelError):
    """A model spec is malformed (bad usage rather than a bad file)."""


def from_spec(spec: str) -> Hyperprior:
    """``NAME`` or ``PATH`` (our checkpoint or a CompressAI state dict), ``zoo:Q[=FILE]`` for
    CompressAI's pretrained, or ``untrained:N[,M]`` (seeded random weights, for
    architecture-only measurements)."""
    if spec.startswith("untrained:"):
        torch.manual_seed(0)
        try:
            N, M = (list(map(int, spec[10:].split(","))) + [192])[:2]
        except ValueError:
            raise SpecError(f"{spec!r}: expected untrained:N or untrained:N,M with integers") from None
        model = Hyperprior(N, M).eval()
        model.update()
        model.meta = {"trained": False}
        return model
    if spec.startswith("zoo:"):
        quality, _, path = spec[4:].partition("=")
        if not quality.isdigit():
            raise SpecError(f"{spec!r}: expected zoo:Q or zoo:Q=FILE with a quality Q in 1..8")
        return pretrained(int(quality), path=path or None)
    return load_model(spec)


def spec_name(spec: str) -> str:
    """A file-name-safe result name for a model spec (a run's best/last checkpoint: the run's name)."""
    path = Path(spec.replace(":", "-").replace("=", "-").replace(",", "-"))
    name = path.name.removesuffix(".pth.tar")
    return path.parent.name if name in ("best", "last") and path.parent.name else name
