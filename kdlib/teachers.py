"""What a KD step needs from its teachers, computed once: float32 targets, and a disk cache of them.

Every KD run with the same seed, crop, batch and data draws the same crops in the same order (so
that a KD run and its scratch twin are paired), so the KD students of a seed, whatever their
size, ask the teacher for the same targets. :class:`TargetCache` keeps the teacher's ``y_hat``
for each step on disk; a later run checks each batch against the stored CRC32 and recomputes
only ``x_hat = g_s(y_hat)``, skipping ``g_a`` (about half of the teacher's work).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdlib.models import Hyperprior

CHUNK = 500  # steps per cache file


class TeacherTargets(torch.nn.Module):
    """What the KD loss reads from a teacher in eval mode, and nothing more: ``y_hat = round(g_a(x))``
    and ``x_hat = g_s(y_hat)`` (equal to its full forward's), plus ``z_hat`` when ``hyper``."""

    def __init__(self, teacher: Hyperprior, hyper: bool = False):
        super().__init__()
        self.teacher, self.hyper = teacher.to(memory_format=torch.channels_last), hyper

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.hyper:
            return self.teacher(x)
        y_hat = torch.round(self.teacher.g_a(x))
        return {"y_hat": y_hat, "x_hat": self.teacher.g_s(y_hat)}


def batch_crc(x: torch.Tensor) -> int:
    """CRC32 of a batch's float32 values (C order)."""
    return zlib.crc32(x.detach().cpu().contiguous().numpy().tobytes())


class TargetCache:
    """The targets of ``compute`` (a :class:`TeacherTargets`, maybe compiled) for step ``s`` of a
    run, from ``<folder>/<key>/<s // CHUNK>.pt`` when that file holds this very batch (CRC32),
    else computed and, once a whole chunk has been computed in one go, written there (atomically;
    runs at the same seed may share the folder). ``decode`` is the teacher's ``g_s``."""

    def __init__(self, folder: str | Path, key: dict[str, Any], compute: Callable, decode: Callable):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(folder) / digest
        self.compute, self.decode = compute, decode
        self.loaded: tuple[int, dict[str, torch.Tensor] | None] = (-1, None)
        self.pending: dict[str, Any] | None = None
        self.hits = self.misses = 0

    def __call__(self, step: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        chunk, i = divmod(step, CHUNK)
        crc = batch_crc(x)
        stored = self._chunk(chunk)
        if stored is not None and int(stored["crc"][i]) == crc:
            self.hits += 1
            y_hat = stored["y_hat"][i].to(x.device, torch.float32).contiguous(memory_format=torch.channels_last)
            return {"y_hat": y_hat, "x_hat": self.decode(y_hat)}
        self.misses += 1
        out = self.compute(x)
        self._record(chunk, i, crc, out["y_hat"])
        return out

    def _chunk(self, chunk: int) -> dict[str, torch.Tensor] | None:
        if self.loaded[0] != chunk:
            path = self.folder / f"{chunk}.pt"
            try:
                self.loaded = (chunk, torch.load(path, weights_only=True) if path.exists() else None)
            except Exception:  # a damaged file is recomputed and replaced
                self.loaded = (chunk, None)
        return self.loaded[1]

    def _record(self, chunk: int, i: int, crc: int, y_hat: torch.Tensor) -> None:
        if i == 0:
            self.pending = {"chunk": chunk, "crc": [], "y_hat": []}
        pending = self.pending
        if pending is None or pending["chunk"] != chunk or len(pending["crc"]) != i or y_hat.abs().max() > 32767:
            self.pending = None  # started mid-chunk (a resumed run), or values too large: not cached
            return
        pending["crc"].append(crc)
        pending["y_hat"].append(y_hat.detach().cpu().to(torch.int16))
        if len(pending["crc"]) == CHUNK:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            os.close(fd)
            torch.save({"crc": torch.tensor(pending["crc"], dtype=torch.int64), "y_hat": torch.stack(pending["y_hat"])}, tmp)
            os.replace(tmp, self.folder / f"{chunk}.pt")
            self.pending, self.loaded = None, (-1, None)
