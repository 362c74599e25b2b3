"""A fixed bank of training crops, and a teacher's float32 targets for it, computed once.

Long runs (the ``long`` budget) draw their batches from a bank instead of fresh random crops, so
that a KD step costs what its scratch twin's does: the teacher's ``y_hat`` and ``x_hat`` of every
crop are computed once per bank and read from memory-mapped files, never recomputed per step.
The bank is the same for every run and seed (drawn with :data:`BANK_SEED`); a run's seed decides
its initial weights, its noise and the order in which it cycles through the bank (one seeded
permutation per pass, :func:`order`), so a KD run and its scratch twin see the same crops in the
same order. Departure from the authors' protocol: a finite set of crops revisited, not a fresh
random crop at every step.

Layout, under ``<KDLIB_CACHE>/banks/<key>/`` (``key`` hashes the crop size, count and the data
folder's file list): ``crops.u8`` (N x 3 x crop x crop, uint8) and ``crops.json``; per teacher,
``<teacher sha256[:16]>/y_hat.i16`` (int16: ``y_hat`` is rounded), ``x_hat.f32`` and
``targets.json``. Each JSON holds the sha256 of its arrays and is written last: a bank missing
it, or whose arrays do not match it, is rebuilt.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from kdlib import data
from kdlib.io import atomic, write_json

BANK_SEED = 20250  # the bank's own seed: the same crops whatever the run's seed
BUILD_BATCH = 16  # crops per teacher pass while building (targets do not depend on it beyond float rounding)


class BankError(RuntimeError):
    """A bank cannot be built or read."""


def bank_folder(size: int, crop: int, root: str | Path, cache: str | Path | None = None) -> Path:
    """Where the bank of ``size`` crops of ``crop`` pixels drawn from the images under ``root`` lives."""
    files = [p.relative_to(root).as_posix() for p in data.split(data.image_files(root), "train")]
    key = json.dumps({"size": size, "crop": crop, "seed": BANK_SEED, "files": files}, sort_keys=True)
    return Path(cache or data.cache_root()) / "banks" / hashlib.sha256(key.encode()).hexdigest()[:16]


def order(seed: int, step: int, batch: int, size: int, rank: int = 0) -> np.ndarray:
    """Bank indices of batch ``step`` of a run of ``seed`` (and DDP ``rank``): pass ``p`` visits the
    bank in the permutation ``default_rng((seed, rank, p))`` draws; batches run on across passes.
    Stateless, so a resumed run continues exactly."""
    start = step * batch
    positions = np.arange(start, start + batch)
    out = np.empty(batch, dtype=np.int64)
    for p in np.unique(positions // size):
        where = positions // size == p
        out[where] = np.random.default_rng((seed, rank, int(p))).permutation(size)[positions[where] % size]
    return out


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (two runs starting together build a bank once)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _valid(folder: Path, meta_name: str) -> dict[str, Any] | None:
    """The metadata of ``folder/meta_name`` when every array it names has its recorded sha256."""
    meta_path = folder / meta_name
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    for name, digest in meta["sha256"].items():
        if not (folder / name).exists() or data.file_digest(folder / name) != digest:
            return None
    return meta


def _write_array(path: Path, array: np.ndarray) -> str:
    with atomic(path) as tmp:
        array.tofile(tmp)
    return data.file_digest(path)


def build_crops(size: int, crop: int, root: str | Path, cache: str | Path | None = None,
                progress: bool = True) -> Path:
    """The bank's crops (built if missing or damaged): ``size`` training crops of ``root``'s
    training split, drawn as :class:`kdlib.data.ImageCrops` draws (random position and flips)."""
    folder = bank_folder(size, crop, root, cache)
    with _locked(folder):
        if _valid(folder, "crops.json"):
            return folder
        array = draw_crops(data.split(data.image_files(root), "train"), size, crop, progress)
        digest = _write_array(folder / "crops.u8", array)
        meta = {"size": size, "crop": crop, "seed": BANK_SEED, "root": str(root), "sha256": {"crops.u8": digest}}
        write_json(folder / "crops.json", meta)
    return folder


def draw_crops(files: list[Path], size: int, crop: int, progress: bool = True) -> np.ndarray:
    """``size`` crops (N x 3 x crop x crop, uint8) exactly as :class:`kdlib.data.ImageCrops` draws
    them from ``files`` under the global numpy seed :data:`BANK_SEED` (image, position, horizontal
    then vertical flip), with one decoded image in memory at a time: the draws are made first from
    the images' sizes (their headers), then each image is decoded once and cut."""
    from PIL import Image

    sizes = []
    for path in files:
        with Image.open(path) as image:
            sizes.append((max(image.height, crop), max(image.width, crop)))
    state = np.random.get_state()
    np.random.seed(BANK_SEED)
    try:
        images = np.random.randint(len(files), size=size)
        plan = []
        for index in images:
            h, w = sizes[index]
            top, left = np.random.randint(0, h - crop + 1), np.random.randint(0, w - crop + 1)
            plan.append((int(index), top, left, np.random.rand() < 0.5, np.random.rand() < 0.5))
    finally:
        np.random.set_state(state)
    array = np.empty((size, 3, crop, crop), dtype=np.uint8)
    by_image: dict[int, list[int]] = {}
    for i, (index, *_) in enumerate(plan):
        by_image.setdefault(index, []).append(i)
    for index, members in tqdm(sorted(by_image.items()), desc="bank crops", disable=not progress, dynamic_ncols=True):
        source = data.ImageCrops([files[index]], crop, train=False, cache=False)._array(0)
        h, w = source.shape[:2]
        if h < crop or w < crop:
            source = np.pad(source, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
        for i in members:
            _, top, left, flip_x, flip_y = plan[i]
            patch = source[top:top + crop, left:left + crop]
            patch = patch[:, ::-1] if flip_x else patch
            patch = patch[::-1] if flip_y else patch
            array[i] = patch.transpose(2, 0, 1)
    return array


@torch.no_grad()
def build_targets(folder: Path, teacher_path: str | Path, progress: bool = True) -> Path:
    """The float32 ``y_hat`` and ``x_hat`` of the teacher at ``teacher_path`` for every crop of the
    bank in ``folder`` (built if missing or damaged); returns their folder."""
    from kdlib.models import load_model

    meta = _valid(folder, "crops.json")
    if meta is None:
        raise BankError(f"{folder} holds no valid crops; build them first (kdlib.bank.build_crops)")
    teacher_digest = data.sha256sum(teacher_path)
    out = folder / teacher_digest[:16]
    with _locked(out):
        if _valid(out, "targets.json"):
            return out
        size, crop = meta["size"], meta["crop"]
        teacher = load_model(teacher_path).eval().to(memory_format=torch.channels_last)
        crops = np.memmap(folder / "crops.u8", np.uint8, "r", shape=(size, 3, crop, crop))
        files = {"y_hat": out / "y_hat.i16.tmp", "x_hat": out / "x_hat.f32.tmp"}
        with open(files["y_hat"], "wb") as y_file, open(files["x_hat"], "wb") as x_file:
            shape = None
            for start in tqdm(range(0, size, BUILD_BATCH), desc="bank teacher targets", disable=not progress,
                              dynamic_ncols=True):
                x = torch.from_numpy(np.array(crops[start:start + BUILD_BATCH])).float().div_(255)
                y_hat = torch.round(teacher.g_a(x.contiguous(memory_format=torch.channels_last)))
                x_hat = teacher.g_s(y_hat)
                if y_hat.abs().max() > 32767:
                    raise BankError("the teacher's y_hat does not fit int16")
                shape = tuple(y_hat.shape[1:])
                y_file.write(y_hat.to(torch.int16).contiguous().numpy().tobytes())
                x_file.write(x_hat.float().contiguous().numpy().tobytes())
        digests = {}
        for part, tmp in files.items():
            final = tmp.with_suffix("")
            os.replace(tmp, final)
            digests[final.name] = data.file_digest(final)
        targets = {"teacher_sha256": teacher_digest, "y_shape": list(shape), "threads": torch.get_num_threads(),
                   "sha256": digests}
        write_json(out / "targets.json", targets)
    return out


class Bank:
    """A built bank, memory-mapped: ``batch(indices)`` gives the crops in [0, 1] and, with a
    teacher's targets folder, its float32 ``y_hat`` and ``x_hat``. ``digest`` identifies the
    content (crops and targets), for the run's record."""

    def __init__(self, folder: str | Path, targets: str | Path | None = None):
        folder = Path(folder)
        meta = _valid(folder, "crops.json")
        if meta is None:
            raise BankError(f"{folder} holds no valid bank (crops.json missing or its arrays changed)")
        self.size, self.crop = meta["size"], meta["crop"]
        self.crops = np.memmap(folder / "crops.u8", np.uint8, "r", shape=(self.size, 3, self.crop, self.crop))
        parts = [meta["sha256"]["crops.u8"]]
        self.y_hat = self.x_hat = None
        if targets is not None:
            tmeta = _valid(Path(targets), "targets.json")
            if tmeta is None:
                raise BankError(f"{targets} holds no valid teacher targets")
            self.y_hat = np.memmap(Path(targets) / "y_hat.i16", np.int16, "r", shape=(self.size, *tmeta["y_shape"]))
            self.x_hat = np.memmap(Path(targets) / "x_hat.f32", np.float32, "r", shape=(self.size, 3, self.crop, self.crop))
            parts += [tmeta["sha256"][k] for k in sorted(tmeta["sha256"])]
        self.digest = hashlib.sha256("".join(parts).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return self.size

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        x = torch.from_numpy(self.crops[indices]).float().div_(255)
        if self.y_hat is None:
            return x, None
        return x, {"y_hat": torch.from_numpy(self.y_hat[indices].astype(np.float32)),
                   "x_hat": torch.from_numpy(np.ascontiguousarray(self.x_hat[indices]))}


def open_bank(size: int, crop: int, root: str | Path, teacher: str | Path | None,
              cache: str | Path | None = None, progress: bool = True) -> Bank:
    """The bank of a run, built first where missing (crops; then the teacher's targets if any)."""
    folder = build_crops(size, crop, root, cache, progress)
    targets = build_targets(folder, teacher, progress) if teacher is not None else None
    return Bank(folder, targets)
