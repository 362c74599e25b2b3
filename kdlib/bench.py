"""Benchmarks behind ``kdlib bench``: each prints a table and writes JSON/CSV under ``results/``."""
from __future__ import annotations

import csv
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from kdlib import data
from kdlib import resources as res
from kdlib.codecs import evaluate_codec
from kdlib.io import write_json
from kdlib.losses import KDLoss
from kdlib.models import Hyperprior, from_spec, resolve, save_checkpoint, spec_name
from kdlib.train import Config, optimizers, run_dir, train


def resources(specs: list[str], images: list[Path], passes: int, thread_counts: list[int], out: Path) -> pd.DataFrame:
    """Size, FLOPs, peak memory and throughput of each model: ``<out>/resources/<name>.json`` and a CSV."""
    out = out / "resources"
    rows, notes, threads_before = [], set(), torch.get_num_threads()
    for spec in specs:
        model, name = from_spec(spec), spec_name(spec)
        if not spec.startswith(("untrained:", "zoo:")):  # a checkpoint: its content names the result
            model.meta = {**getattr(model, "meta", {}), "sha256": data.sha256sum(resolve(spec))}
        result = {"name": name, "model": {**getattr(model, "meta", {}), **model.config}, **res.size(model),
                  **res.flops(model), **res.peak_memory(model, images[0]), "throughput": []}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            result["throughput"].append(res.throughput(model, images, passes))
        torch.set_num_threads(threads_before)
        if torch.cuda.is_available():
            result["throughput"].append(res.throughput(model, images, passes, device="cuda"))
        write_json(out / f"{name}.json", result)
        for t in result["throughput"]:
            notes.add(t["energy_note"])
            rows.append({"model": name, "params_M": result["params_M"], "MiB": result["params_MiB"],
                         "GMACs": result["gmacs"], "enc_peak_extra_MiB": result["encode_extra_MiB"],
                         "dec_peak_extra_MiB": result["decode_extra_MiB"], "device": t["device"],
                         "threads": t["threads"], "fwd_fps": t["forward_fps"], "enc_fps": t["encode_fps"],
                         "dec_fps": t["decode_fps"], "fwd_mJ_per_frame": t["forward_mj_per_frame"]})
    table = pd.DataFrame(rows)
    table.to_csv(out / "resources.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for note in notes - {None}:
        print(f"energy: not measured ({note})")
    return table


def chosen_settings(codec: str, settings: int | None = None) -> list[int]:
    """A codec's sweep, or ``settings`` of its settings spread over it."""
    from kdlib.codecs import CODECS

    sweep = CODECS[codec][2]
    return [sweep[round(i * (len(sweep) - 1) / (settings - 1))] for i in range(settings)] if settings else sweep


def codecs(names: list[str], images: list[Path], out: Path, settings: int | None = None) -> None:
    """RD curves and speed of classical codecs: ``<out>/codecs/<codec>.json`` (``settings``: keep
    that many settings of each sweep, spread over it)."""
    for codec in names:
        result = evaluate_codec(codec, images, chosen_settings(codec, settings))
        path = write_json(out / "codecs" / f"{codec}.json", result)
        r = result["results"]
        print(f"{result['name']}: {len(r['bpp'])} settings, bpp {min(r['bpp']):.3f}-{max(r['bpp']):.3f}, "
              f"PSNR {min(r['psnr-rgb']):.2f}-{max(r['psnr-rgb']):.2f} dB, encode {np.mean(r['encode_fps']):.1f} fps, "
              f"decode {np.mean(r['decode_fps']):.1f} fps (mean over settings) -> {path}")


class _Files(Dataset):
    """CompressAI's ImageFolder: opens and decodes the file for every crop."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.files[i]).convert("RGB"))


def plain_loop(model: Hyperprior, teacher: Hyperprior | None, files: list[Path], crop: int, batch: int,
               steps: int, warmup: int) -> float:
    """Steps/s of a loop written like CompressAI's ``examples/train.py`` (DataLoader with 2 workers,
    torchvision RandomCrop, fp32, default threads), with the same loss and optimizers as ours."""
    loader = DataLoader(_Files(files, transforms.Compose([transforms.RandomCrop(crop, pad_if_needed=True),
                                                          transforms.ToTensor()])),
                        batch_size=batch, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    criterion = KDLoss(0.025)
    optimizer, aux_optimizer = optimizers(model, Config(name="plain", lr=1e-4))
    model.train()
    batches = iter(loader)
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        try:
            d = next(batches)
        except StopIteration:
            batches = iter(loader)
            d = next(batches)
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        with torch.no_grad():
            t_out = teacher(d) if teacher is not None else None
        out = model(d)
        loss = criterion(out, d, t_out)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()
    return steps / (time.perf_counter() - start)


def _trainer_steps_per_s(config: Config, runs: Path, warmup: int, compile: bool) -> float:
    """Steps/s of :func:`kdlib.train.train`, from its own log (data loading included, warm-up excluded)."""
    train(config, runs=runs, progress=False, compile=compile)
    with open(run_dir(config, runs) / "log.csv") as f:
        wall = {int(r["step"]): float(r["wall_s"]) for r in csv.DictReader(f)}
    return (config.steps - warmup) / (wall[config.steps] - wall[warmup])


def train_throughput(steps: int = 20, compile_too: bool = True, warmup: int = 5, crop: int = 128,
                     batch: int = 8) -> pd.DataFrame:
    """Training steps/s of our trainer against the plain loop, same model, batch and data, one run.

    Two cases: the N=128 teacher from scratch and an N=64 student distilled from it (weights
    untrained: speed does not depend on them). Warm-up steps (and compilation) are excluded.
    """
    files = data.split(data.image_files(data.train_root()), "train")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_path = tmp / "teacher.pth.tar"
        save_checkpoint(teacher_path, Hyperprior(128, 192), {"trained": False})
        for label, N, teacher in [("teacher N=128, scratch", 128, None), ("student N=64, KD", 64, str(teacher_path))]:
            torch.manual_seed(0)
            t_model = from_spec(teacher) if teacher else None
            plain = plain_loop(Hyperprior(N, 192), t_model, files, crop, batch, steps, warmup)
            rows.append({"case": label, "trainer": "plain loop (CompressAI example)", "steps_per_s": plain, "ratio": 1.0})
            variants = [("kdlib fp32", "fp32", False), ("kdlib bf16 autocast", "bf16", False)]
            if compile_too:
                variants += [("kdlib fp32 + compile", "fp32", True), ("kdlib bf16 + compile", "bf16", True)]
            for name, precision, compile in variants:
                config = Config(name=f"bench-{N}-{precision}-{compile}", N=N, teacher=teacher, precision=precision,
                                crop=crop, batch=batch, steps=warmup + steps, val_every=10**9, val_images=2)
                speed = _trainer_steps_per_s(config, tmp / "runs", warmup, compile)
                rows.append({"case": label, "trainer": name, "steps_per_s": speed, "ratio": speed / plain})
    table = pd.DataFrame(rows)
    print(f"threads={torch.get_num_threads()}, crop={crop}, batch={batch}, {steps} timed steps after {warmup} warm-up")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table


@torch.no_grad()
def teacher_targets(repeats: int = 20, crop: int = 128, batch: int = 8) -> pd.DataFrame:
    """The teacher's share of a KD step: its full forward (what the loss used to get) against
    :class:`kdlib.teachers.TeacherTargets` (``g_a``, round, ``g_s``: what the loss reads) and
    :class:`kdlib.teachers.TargetCache` hits, with ``y_hat`` only (CRC of the batch, the stored
    ``y_hat``, ``g_s``) and with ``x_hat`` too (read through its memory map; the page cache holds
    it here, as it does for two runs of a seed at once), fp32, same batch, interleaved, one run;
    median seconds and ratios."""
    from kdlib.teachers import TargetCache, TeacherTargets

    torch.manual_seed(0)
    teacher = Hyperprior(128, 192).eval()
    x = torch.rand(batch, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        y_only, with_x = [TargetCache(tmp, {"bench": keep}, TeacherTargets(teacher), teacher.g_s, chunk=1, keep_x=keep)
                          for keep in (False, True)]
        y_only(0, x), with_x(0, x)  # computed and written once; read back below
        paths = {"full forward": teacher, "TeacherTargets": TeacherTargets(teacher),
                 "TargetCache hit, y_hat (CRC + g_s)": lambda x: y_only(0, x),
                 "TargetCache hit, y_hat and x_hat": lambda x: with_x(0, x)}
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(repeats + 2):  # the first two passes warm up
            for name, module in paths.items():
                times[name].append(_seconds(lambda: module(x)))
        assert with_x.hits == repeats + 2 and not with_x.decoded and torch.equal(with_x(0, x)["x_hat"], y_only(0, x)["x_hat"])
    seconds = {name: float(np.median(t[2:])) for name, t in times.items()}
    table = pd.DataFrame([{"teacher pass": name, "s_per_batch": s, "speed-up": seconds["full forward"] / s}
                          for name, s in seconds.items()])
    print(f"threads={torch.get_num_threads()}, N=128 teacher, {batch}x{crop}x{crop}, median of {repeats}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return table


def kd_step_ratio(N: int = 16, steps: int = 400, warmup: int = 100, bank: int = 512, compile: bool = True) -> pd.DataFrame:
    """A long-tier KD step against its scratch twin's (issue 26: within 1.2x): both train ``steps``
    steps of the long budget's recipe (bf16 autocast, one thread each, ``compile``) from a bank of
    ``bank`` crops of the training set with T5's stored targets, one after the other in this process;
    seconds per step from each run's log after ``warmup`` steps, and their ratio."""
    from kdlib.grid import BUDGETS
    from kdlib.losses import KD_PRESETS
    from kdlib.train import Config, run_dir, train

    budget = {k: v for k, v in BUDGETS["long"].items() if k not in ("steps", "bank")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arm, teacher in (("kd", "T5"), ("scratch", None)):
            weights = KD_PRESETS["authors"] if teacher else {}
            config = Config(name=f"bench-{arm}", N=N, teacher=teacher, steps=steps, val_every=steps, bank=bank,
                            **weights, **budget)
            train(config, runs=tmp, progress=False, compile=compile)
            log = pd.read_csv(run_dir(config, tmp) / "log.csv")
            timed = log[log.step > warmup]
            rows.append({"arm": arm, "s_per_step": float(timed.wall_s.diff().median())})
    table = pd.DataFrame(rows)
    table["ratio_to_scratch"] = table.s_per_step / table.s_per_step.iloc[-1]
    print(f"N={N}, {steps} steps ({warmup} warm-up), bank of {bank} crops with T5's targets, "
          f"threads={torch.get_num_threads()}, compile={compile}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return table


def _closest_setting(codec: str, bpp: float, results: Path) -> int:
    """The sweep setting of ``codec`` whose mean Kodak bpp is closest to ``bpp``."""
    import json

    from kdlib.codecs import CODECS

    path = results / "codecs" / f"{codec}.json"
    if not path.exists():
        return CODECS[codec][2][len(CODECS[codec][2]) // 2]
    sweep = json.loads(path.read_text())
    return min(zip(sweep["settings"], sweep["results"]["bpp"]), key=lambda sb: abs(sb[1] - bpp))[0]


def _unchecked_symbols(string: bytes, indexes: torch.Tensor, cdfs: list, lengths: list, table, rans_tables=None) -> torch.Tensor:
    """The decoding before the memory-safe one (issue 16): CompressAI's coder on the bare stream, one
    call. Only for timing valid files here: it reads past the buffer of a cut stream."""
    from compressai.ans import RansDecoder

    from kdlib.entropy import _as_tensor

    values = RansDecoder().decode_with_indexes(string, indexes.reshape(-1).tolist(), cdfs, lengths, [0] * len(cdfs))
    return _as_tensor(values).long()


@contextmanager
def _symbol_decoder(decode_symbols):
    """``entropy.decode_symbols`` replaced by ``decode_symbols`` while the block runs."""
    from kdlib import entropy

    inner, entropy.decode_symbols = entropy.decode_symbols, decode_symbols
    try:
        yield inner
    finally:
        entropy.decode_symbols = inner


def _unchecked_decode(bitstream, blobs: list[bytes], model) -> None:
    with _symbol_decoder(_unchecked_symbols):
        bitstream.decompress_batch(blobs, model)


def _coder_seconds(bitstream, blobs: list[bytes], model) -> float:
    """Seconds spent in the entropy decoder (every ``entropy.decode_symbols`` call, z and y, summed
    over the threads) while ``blobs`` are decoded once."""
    from kdlib import entropy

    spent: list[float] = []
    inner = entropy.decode_symbols

    def timed(*args, **kwargs):
        start = time.perf_counter()
        values = inner(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return values

    with _symbol_decoder(timed):
        bitstream.decompress_batch(blobs, model)
    return sum(spent)


def peak_gflops(size: int = 1536, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate at the current thread count (GFLOP/s, the best of
    ``repeats``): the yardstick of a decode's FLOP bound."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    a @ b
    return 2 * size**3 / min(_seconds(lambda: a @ b) for _ in range(repeats)) / 1e9


def _seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def speed_rows(name: str, n: int, pixels: int, seconds: dict[str, float], bytes_: dict[str, int],
               coder_s: float, synthesis_s: float, threads: int) -> list[dict[str, Any]]:
    """:func:`codec_speed`'s rows for one model from its timings: ``seconds`` for the ``n`` images by
    CompressAI's encode / decode (``ce``, ``cd``), ours (``oe``, ``od``) and ours on the bare coder
    (``ud``); ``bytes_`` of CompressAI's strings and of our files; ``coder_s`` spent in the entropy
    decoder (all images, summed over threads); ``synthesis_s`` per image at the FLOP bound."""
    ce, cd, oe, od, ud = (seconds[k] for k in ("ce", "cd", "oe", "od", "ud"))
    coder = coder_s / n  # per image
    bound = 1 / (synthesis_s + coder / threads)  # images/s: synthesis at the threads' rate, coder per core
    ours, compressai = bytes_["ours"], bytes_["compressai"]
    bpp = 8 * ours / pixels
    return [{"model": name, "path": "CompressAI compress/decompress", "bpp": 8 * compressai / pixels,
             "encode_img_s": n / ce, "decode_img_s": n / cd, "bytes": compressai},
            {"model": name, "path": "kdlib (.kdl files)", "bpp": bpp, "encode_img_s": n / oe,
             "decode_img_s": n / od, "bytes": ours, "encode_ratio": ce / oe, "decode_ratio": cd / od,
             "bytes_ratio": ours / compressai, "coder_share": coder_s / (od * threads),
             "bound_img_s": bound, "of_bound": (n / od) / bound},
            {"model": name, "path": "unchecked: kdlib on CompressAI's bare coder (before the safe decoder)",
             "bpp": bpp, "decode_img_s": n / ud, "bytes": ours, "decode_ratio": cd / ud, "safe_decode_ratio": ud / od}]


@torch.no_grad()
def codec_speed(specs: list[str], images: list[Path], out: Path, repeats: int = 3, chunk: int = 4) -> pd.DataFrame:
    """Encode / decode images/s and bytes: our path (kdlib.bitstream, files with header and CRCs,
    one image per core) against CompressAI's default ``compress()`` / ``decompress()`` (one image at
    a time, tensors prepared in advance), same images, one run. This VM's speed drifts within seconds,
    so the paths are interleaved over ``chunk`` images at a time: each path's time on a chunk is its
    best of ``repeats`` passes, within seconds of the other paths', and a path's time is the sum over
    the chunks.
    Pillow JPEG and WebP at a similar bpp for context. For our path, also the entropy decoder's share
    of decode time (``coder_share``) and each model's decode bound (``bound_img_s``: its synthesis
    GMACs at this machine's matrix-product rate, plus the coder's time spread over the threads) with
    the fraction of it reached (``of_bound``)."""
    from kdlib import bitstream
    from kdlib.codecs import roundtrip

    pils = [Image.open(p).convert("RGB") for p in images]
    tensors = [data.pad(data.to_tensor(image)[None])[0] for image in pils]
    pixels = sum(image.width * image.height for image in pils)
    n = len(pils)
    rows = []
    threads, peak = torch.get_num_threads(), peak_gflops()
    for spec in specs:
        model, name = from_spec(spec), spec_name(spec)
        encoded = [model.compress(x) for x in tensors]
        blobs = bitstream.compress_batch(pils, model)
        times = dict.fromkeys(("ce", "cd", "oe", "od", "ud"), 0.0)
        for i in range(0, n, chunk):  # each path's best over the repeats, per chunk of images, summed
            c = slice(i, i + chunk)
            paths = {"ce": lambda: [model.compress(x) for x in tensors[c]],
                     "cd": lambda: [model.decompress(e["strings"], e["shape"]) for e in encoded[c]],
                     "oe": lambda: bitstream.compress_batch(pils[c], model),
                     "od": lambda: bitstream.decompress_batch(blobs[c], model),
                     "ud": lambda: _unchecked_decode(bitstream, blobs[c], model)}
            best = dict.fromkeys(paths, float("inf"))
            for _ in range(repeats):
                for key, path in paths.items():
                    best[key] = min(best[key], _seconds(path))
            times = {key: times[key] + best[key] for key in times}
        synthesis = res.flops(model, *tensors[0].shape[-2:])["gmacs_decoder"] * 2 / peak  # seconds per image
        bytes_ = {"compressai": sum(len(s[0]) for enc in encoded for s in enc["strings"]), "ours": sum(len(b) for b in blobs)}
        rows += speed_rows(name, n, pixels, times, bytes_,
                           _coder_seconds(bitstream, blobs, model), synthesis, threads)
        bpp = rows[-1]["bpp"]
        for codec in ("jpeg", "webp"):
            setting = _closest_setting(codec, bpp, out)
            trips = [roundtrip(image, codec, setting) for image in pils]
            rows.append({"model": name, "path": f"Pillow {codec} setting {setting}",
                         "bpp": 8 * sum(len(t[0]) for t in trips) / pixels,
                         "encode_img_s": n / sum(t[2] for t in trips), "decode_img_s": n / sum(t[3] for t in trips),
                         "bytes": sum(len(t[0]) for t in trips)})
    table = pd.DataFrame(rows)
    (out / "codec_speed").mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "codec_speed" / "codec_speed.csv", index=False)
    print(f"{n} images, threads={threads}, best of {repeats} per {chunk} images; float32 matrix products {peak:.0f} GFLOP/s")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table
