"""What a KD step needs from its teachers, computed once: float32 targets, and a disk cache of them.

Every KD run with the same seed, crop, batch and data draws the same crops in the same order (so
that a KD run and its scratch twin are paired), so the KD students of a seed, whatever their
size, ask the teacher for the same targets. :class:`TargetCache` keeps them on disk per step:
the teacher's ``y_hat`` (int16, about 2 GB per seed at the cpu budget) and, while the disk keeps
:data:`KEEP_FREE` bytes free, its ``x_hat`` (float32, about 16 GB per seed). A later run checks
each batch against the stored CRC32 and reads both, skipping the teacher altogether; with
``y_hat`` alone it recomputes ``x_hat = g_s(y_hat)`` and skips ``g_a``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlib.models import Hyperprior

CHUNK = 500  # steps per cache file
KEEP_FREE = 16 * 2**30  # x_hat is cached only while the disk keeps this much free after a chunk


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


def key_folder(folder: str | Path, key: dict[str, Any]) -> Path:
    """Where a :class:`TargetCache` in ``folder`` keeps the targets of ``key``."""
    return Path(folder) / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def stored(folder: str | Path, key: dict[str, Any], steps: int) -> str | None:
    """What a :class:`TargetCache` in ``folder`` holds for every step of a ``steps``-step run
    with this key: ``"x_hat"`` (both targets), ``"y_hat"``, or None."""
    chunks = range(math.ceil(steps / key["chunk"]))
    for kind, suffixes in (("x_hat", (".pt", ".x.pt", ".x.f32")), ("y_hat", (".pt",))):
        if all((key_folder(folder, key) / f"{c}{s}").exists() for c in chunks for s in suffixes):
            return kind
    return None


def batch_crc(x: torch.Tensor) -> int:
    """CRC32 of a batch's float32 values (C order)."""
    return zlib.crc32(x.detach().cpu().contiguous().numpy().tobytes())


class TargetCache:
    """The targets of ``compute`` (a :class:`TeacherTargets`, maybe compiled) for step ``s`` of a
    run, from ``<folder>/<key>/<s // chunk>.*`` when those files hold this very batch (CRC32),
    else computed. ``decode`` is the teacher's ``g_s``. A chunk computed in one go (not a resumed
    run's first) is written at its end, atomically (runs at the same seed may share the folder):
    ``<c>.pt`` (CRC32s and int16 ``y_hat``), ``<c>.x.f32`` (raw float32 ``x_hat``, read through a
    memory map) and ``<c>.x.pt`` (its CRC32s and batch shape, written last); ``keep_x=False``
    keeps ``y_hat`` only."""

    def __init__(self, folder: str | Path, key: dict[str, Any], compute: Callable, decode: Callable,
                 chunk: int | None = None, keep_x: bool = True):
        self.folder = key_folder(folder, key)
        self.compute, self.decode, self.chunk, self.keep_x = compute, decode, chunk or CHUNK, keep_x
        self.loaded: tuple[int, dict[str, torch.Tensor] | None] = (-1, None)
        self.loaded_x: tuple[int, tuple[torch.Tensor, np.memmap] | None] = (-1, None)
        self.pending: dict[str, Any] | None = None
        self.hits = self.x_hits = self.misses = 0
        for stale in self.folder.glob("*.tmp"):  # left by a killed run (a live one writes every step)
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)

    def __call__(self, step: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        chunk, i = divmod(step, self.chunk)
        crc = batch_crc(x)
        stored, stored_x = self._chunk(chunk), self._x_chunk(chunk)
        y_hit = stored is not None and int(stored["crc"][i]) == crc
        x_hit = stored_x is not None and int(stored_x[0][i]) == crc
        if y_hit:
            self.hits += 1
            y_hat = stored["y_hat"][i].to(x.device, torch.float32).contiguous(memory_format=torch.channels_last)
            if x_hit:
                self.x_hits += 1
                x_hat = torch.from_numpy(np.array(stored_x[1][i])).to(x.device)
                out = {"y_hat": y_hat, "x_hat": x_hat.contiguous(memory_format=torch.channels_last)}
            else:
                out = {"y_hat": y_hat, "x_hat": self.decode(y_hat)}
        else:
            self.misses += 1
            out = self.compute(x)
        if i == 0:
            self.close()
            self.pending = self._start(chunk, out["x_hat"], keep_y=not y_hit, keep_x=not x_hit)
        self._record(chunk, i, crc, out)
        return out

    def _chunk(self, chunk: int) -> dict[str, torch.Tensor] | None:
        if self.loaded[0] != chunk:
            path = self.folder / f"{chunk}.pt"
            try:
                self.loaded = (chunk, torch.load(path, weights_only=True) if path.exists() else None)
            except Exception:  # a damaged file is recomputed and replaced
                self.loaded = (chunk, None)
        return self.loaded[1]

    def _x_chunk(self, chunk: int) -> tuple[torch.Tensor, np.memmap] | None:
        if self.loaded_x[0] != chunk:
            index, raw = self.folder / f"{chunk}.x.pt", self.folder / f"{chunk}.x.f32"
            self.loaded_x = (chunk, None)
            try:
                if index.exists() and raw.exists():
                    meta = torch.load(index, weights_only=True)
                    shape = (len(meta["crc"]), *meta["shape"].tolist())
                    if raw.stat().st_size == 4 * math.prod(shape):  # else damaged: recomputed, replaced
                        self.loaded_x = (chunk, (meta["crc"], np.memmap(raw, np.float32, "r", shape=shape)))
            except Exception:
                pass
        return self.loaded_x[1]

    def _start(self, chunk: int, x_hat: torch.Tensor, keep_y: bool, keep_x: bool) -> dict[str, Any]:
        """What this chunk will write: ``y_hat`` unless stored, ``x_hat`` unless stored or the disk is short."""
        self.folder.mkdir(parents=True, exist_ok=True)
        x_file = None
        if keep_x and self.keep_x and shutil.disk_usage(self.folder).free > self.chunk * 4 * x_hat.numel() + KEEP_FREE:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            x_file = (os.fdopen(fd, "wb"), tmp)
        return {"chunk": chunk, "crc": [], "y_hat": [] if keep_y else None, "x_file": x_file,
                "shape": list(x_hat.shape)}

    def _record(self, chunk: int, i: int, crc: int, out: dict[str, torch.Tensor]) -> None:
        pending = self.pending
        if pending is None or pending["chunk"] != chunk or len(pending["crc"]) != i:
            self.close()  # started mid-chunk (a resumed run): not cached
            return
        pending["crc"].append(crc)
        if pending["y_hat"] is not None:
            if out["y_hat"].abs().max() > 32767:  # does not fit int16: not cached
                pending["y_hat"] = None
            else:
                pending["y_hat"].append(out["y_hat"].detach().cpu().to(torch.int16))
        if pending["x_file"] is not None:
            pending["x_file"][0].write(out["x_hat"].detach().cpu().float().contiguous().numpy().tobytes())
        if len(pending["crc"]) < self.chunk:
            return
        self.pending, crcs = None, torch.tensor(pending["crc"], dtype=torch.int64)
        if pending["y_hat"] is not None:
            self.loaded = (-1, None)
            self._save({"crc": crcs, "y_hat": torch.stack(pending["y_hat"])}, f"{chunk}.pt")
        if pending["x_file"] is not None:
            file, tmp = pending["x_file"]
            file.close()
            os.replace(tmp, self.folder / f"{chunk}.x.f32")
            self._save({"crc": crcs, "shape": torch.tensor(pending["shape"])}, f"{chunk}.x.pt")
            self.loaded_x = (-1, None)

    def _save(self, value: dict[str, torch.Tensor], name: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        os.close(fd)
        torch.save(value, tmp)
        os.replace(tmp, self.folder / name)

    def close(self) -> None:
        """Forget an unfinished chunk (its temporary file is removed)."""
        if self.pending is not None and self.pending["x_file"] is not None:
            file, tmp = self.pending["x_file"]
            file.close()
            Path(tmp).unlink(missing_ok=True)
        self.pending = None
