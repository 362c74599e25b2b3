"""What a KD step needs from its teachers, computed once: float32 targets, and a disk cache of them.

Every KD run with the same seed, crop, batch and data draws the same crops in the same order (so
that a KD run and its scratch twin are paired), so the KD students of a seed, whatever their
size, ask the teacher for the same targets. :class:`TargetCache` keeps them on disk per step:
the teacher's ``y_hat`` (int16, about 2 GB per seed at the cpu budget), ``z_hat`` for hyper-latent
KD (float32, 16 KB a step) and, while the disk keeps :data:`KEEP_FREE` bytes free, its ``x_hat``
(float32, about 16 GB per seed). A later run checks each batch against the stored CRC32 and reads
them, skipping the teacher altogether; with ``y_hat`` but no ``x_hat`` it recomputes
``x_hat = g_s(y_hat)`` and skips ``g_a``; with ``y_hat`` and ``x_hat`` but no ``z_hat`` it runs
``g_a`` and ``h_a`` only.
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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlib.io import atomic
from kdlib.models import Hyperprior

CHUNK = 500  # steps per cache file
KEEP_FREE = 16 * 2**30  # x_hat is cached only while the disk keeps this much free after a chunk
PARTS = ("y_hat", "x_hat")  # what the KD loss reads from a teacher; hyper-latent KD adds "z_hat"
FILES = {"y_hat": "{}.pt", "x_hat": "{}.x.pt", "z_hat": "{}.z.pt"}  # x_hat's values: "{}.x.f32"


class TeacherTargets(torch.nn.Module):
    """What the KD loss reads from a teacher in eval mode, and nothing more: ``parts`` among
    ``y_hat = round(g_a(x))``, ``x_hat = g_s(y_hat)`` and ``z_hat`` (the entropy bottleneck's
    dequantised ``h_a(|g_a(x)|)``), each equal to the teacher's full forward's."""

    def __init__(self, teacher: Hyperprior, parts: Iterable[str] = PARTS):
        super().__init__()
        self.teacher, self.parts = teacher.to(memory_format=torch.channels_last), tuple(parts)
        if not self.parts or set(self.parts) - set(FILES):
            raise ValueError(f"parts must be among {tuple(FILES)}, not {self.parts}")

    def forward(self, x: torch.Tensor, parts: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """The targets of batch ``x``: ``parts`` (a subset of this module's; all of them by default)."""
        parts = parts or self.parts
        y = self.teacher.g_a(x)
        out = {}
        if "y_hat" in parts or "x_hat" in parts:
            out["y_hat"] = torch.round(y)
        if "x_hat" in parts:
            out["x_hat"] = self.teacher.g_s(out["y_hat"])
        if "z_hat" in parts:
            out["z_hat"] = self.teacher.entropy_bottleneck(self.teacher.h_a(torch.abs(y)).float())[0]
        return {k: out[k] for k in parts}


def key_folder(folder: str | Path, key: dict[str, Any]) -> Path:
    """Where a :class:`TargetCache` in ``folder`` keeps the targets of ``key``."""
    return Path(folder) / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def stored(folder: str | Path, key: dict[str, Any], steps: int) -> set[str]:
    """The parts a :class:`TargetCache` in ``folder`` holds for every step of a ``steps``-step run with this key."""
    chunks = range(math.ceil(steps / key["chunk"]))
    where = key_folder(folder, key)
    names = {part: [name] + ([name.replace(".pt", ".f32")] if part == "x_hat" else []) for part, name in FILES.items()}
    return {part for part, files in names.items()
            if all((where / f.format(c)).exists() for c in chunks for f in files)}


def batch_crc(x: torch.Tensor) -> int:
    """CRC32 of a batch's float32 values (C order)."""
    return zlib.crc32(x.detach().cpu().contiguous().numpy().tobytes())


class TargetCache:
    """The targets of ``compute`` (a :class:`TeacherTargets` giving ``parts``, maybe compiled) for
    step ``s`` of a run, from ``<folder>/<key>/<s // chunk>.*`` when those files hold this very batch
    (CRC32), else computed. ``decode`` is the teacher's ``g_s``. A chunk computed in one go (not a
    resumed run's first) is written at its end, atomically (runs at the same seed may share the
    folder): ``<c>.pt`` (CRC32s and int16 ``y_hat``), ``<c>.z.pt`` (CRC32s and ``z_hat``),
    ``<c>.x.f32`` (raw float32 ``x_hat``, read through a memory map) and ``<c>.x.pt`` (its CRC32s and
    batch shape, written last); ``keep_x=False`` keeps no ``x_hat``. ``hits``: steps served without
    the teacher's ``g_a``; ``decoded``: those of them whose ``x_hat`` was recomputed."""

    def __init__(self, folder: str | Path, key: dict[str, Any], compute: Callable, decode: Callable | None,
                 parts: Iterable[str] = PARTS, chunk: int | None = None, keep_x: bool = True):
        self.folder = key_folder(folder, key)
        self.compute, self.decode, self.parts = compute, decode, tuple(parts)
        self.chunk, self.keep_x = chunk or CHUNK, keep_x
        self.loaded: dict[str, tuple[int, Any]] = {}
        self.pending: dict[str, Any] | None = None
        self.hits = self.decoded = self.misses = 0
        for stale in self.folder.glob("*.tmp"):  # left by a killed run (a live one writes every step)
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)

    def __call__(self, step: int, x: torch.Tensor) -> dict[str, torch.Tensor]:
        chunk, i = divmod(step, self.chunk)
        crc = batch_crc(x)
        found = {part: self._stored(part, chunk, i, crc, x.device) for part in self.parts}
        missing = {part for part, value in found.items() if value is None}
        if not missing or (missing == {"x_hat"} and found.get("y_hat") is not None and self.decode is not None):
            self.hits += 1
            out = found
            if missing:
                self.decoded += 1
                out["x_hat"] = self.decode(out["y_hat"])
        elif missing == {"z_hat"}:  # hyper-latent KD on a seed whose y_hat and x_hat are stored: no g_s
            self.misses += 1
            out = found | self.compute(x, ("z_hat",))
        else:
            self.misses += 1
            out = self.compute(x)
        if i == 0:
            self.close()
            self.pending = self._start(chunk, out, missing)
        self._record(chunk, i, crc, out)
        return out

    def _load(self, part: str, chunk: int) -> tuple[torch.Tensor, Any] | None:
        """(CRC32s, values) of ``part`` in chunk ``chunk``, None when absent or damaged (then recomputed)."""
        if self.loaded.get(part, (-1, None))[0] != chunk:
            value, index = None, self.folder / FILES[part].format(chunk)
            try:
                if index.exists():
                    stored_ = torch.load(index, weights_only=True)
                    if part != "x_hat":
                        value = (stored_["crc"], stored_[part])
                    else:
                        raw, shape = self.folder / f"{chunk}.x.f32", (len(stored_["crc"]), *stored_["shape"].tolist())
                        if raw.exists() and raw.stat().st_size == 4 * math.prod(shape):
                            value = (stored_["crc"], np.memmap(raw, np.float32, "r", shape=shape))
            except Exception:
                value = None
            self.loaded[part] = (chunk, value)
        return self.loaded[part][1]

    def _stored(self, part: str, chunk: int, i: int, crc: int, device: torch.device) -> torch.Tensor | None:
        value = self._load(part, chunk)
        if value is None or int(value[0][i]) != crc:
            return None
        target = torch.from_numpy(np.array(value[1][i])) if part == "x_hat" else value[1][i]
        return target.to(device, torch.float32).contiguous(memory_format=torch.channels_last)

    def _start(self, chunk: int, out: dict[str, torch.Tensor], missing: set[str]) -> dict[str, Any]:
        """What this chunk will write: its missing parts (``x_hat`` only if kept and the disk has room)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        parts: dict[str, Any] = {part: [] for part in missing if part != "x_hat"}
        room = shutil.disk_usage(self.folder).free > self.chunk * 4 * out["x_hat"].numel() + KEEP_FREE \
            if "x_hat" in missing else False
        if self.keep_x and room:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            parts["x_hat"] = (os.fdopen(fd, "wb"), tmp, list(out["x_hat"].shape))
        return {"chunk": chunk, "crc": [], "parts": parts}

    def _record(self, chunk: int, i: int, crc: int, out: dict[str, torch.Tensor]) -> None:
        pending = self.pending
        if pending is None or pending["chunk"] != chunk or len(pending["crc"]) != i:
            self.close()  # started mid-chunk (a resumed run): not cached
            return
        pending["crc"].append(crc)
        parts = pending["parts"]
        if "y_hat" in parts and out["y_hat"].abs().max() > 32767:  # does not fit int16: not cached
            del parts["y_hat"]
        for part, values in parts.items():
            if part == "x_hat":
                values[0].write(out["x_hat"].detach().cpu().float().contiguous().numpy().tobytes())
            else:
                values.append(out[part].detach().cpu().to(torch.int16 if part == "y_hat" else torch.float32).contiguous())
        if len(pending["crc"]) < self.chunk:
            return
        self.pending, crcs = None, torch.tensor(pending["crc"], dtype=torch.int64)
        for part, values in parts.items():
            if part == "x_hat":
                file, tmp, shape = values
                file.close()
                os.replace(tmp, self.folder / f"{chunk}.x.f32")
                self._save({"crc": crcs, "shape": torch.tensor(shape)}, FILES[part].format(chunk))
            else:
                self._save({"crc": crcs, part: torch.stack(values)}, FILES[part].format(chunk))
            self.loaded.pop(part, None)

    def _save(self, value: dict[str, torch.Tensor], name: str) -> None:
        with atomic(self.folder / name) as tmp:
            torch.save(value, tmp)

    def close(self) -> None:
        """Forget an unfinished chunk (its temporary file is removed)."""
        if self.pending is not None and "x_hat" in self.pending["parts"]:
            file, tmp, _ = self.pending["parts"]["x_hat"]
            file.close()
            Path(tmp).unlink(missing_ok=True)
        self.pending = None
