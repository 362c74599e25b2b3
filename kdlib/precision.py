"""The student's precision in training: its transforms under bfloat16 autocast, on CPUs without native
bfloat16 emulated with float32 convolutions on bfloat16 operands (docs/training.md, "Precision")."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

CONVOLUTIONS = {F.conv2d, F.conv_transpose2d, torch.conv2d, torch.conv_transpose2d}


class EmulatedBf16(TorchFunctionMode):
    """bfloat16 autocast's convolutions computed in float32: operands rounded to bfloat16, products summed in
    float32, the output rounded to bfloat16 (meant to match oneDNN's native bf16 kernels, which accumulate in
    float32). On an AVX2 CPU, PyTorch's own bf16 path (``_slow_conv2d``, ``slow_conv_transpose2d``) made a training
    step about 8x slower than fp32 and was further from bfloat16's definition on ``conv_transpose2d``'s output
    and weight gradient (docs/training.md, "Precision"). Gradients follow through the casts, so the input, weight
    and bias gradients come out rounded to bfloat16."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func not in CONVOLUTIONS or not torch.is_autocast_enabled("cpu") \
                or torch.get_autocast_dtype("cpu") != torch.bfloat16:
            return func(*args, **(kwargs or {}))
        kwargs = dict(kwargs or {})  # copied only here, where bias may be taken out of it
        x, weight, *rest = args
        bias = rest.pop(0) if rest else kwargs.pop("bias", None)

        def bf16(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(torch.bfloat16).float()

        with torch.autocast("cpu", enabled=False):
            return func(bf16(x), bf16(weight), bf16(bias), *rest, **kwargs).to(torch.bfloat16)


@contextlib.contextmanager
def student_precision(device: torch.device, precision: str, native: bool) -> Iterator[None]:
    """The context of the student's forward pass: nothing for "fp32"; bfloat16 autocast for "bf16", emulated by
    :class:`EmulatedBf16` on a CPU without ``native`` bfloat16."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        if precision == "bf16" and device.type == "cpu" and not native:
            with EmulatedBf16():
                yield
        else:
            yield
