"""Training, read top to bottom: a student from a teacher (KD), or any codec from scratch.

The recipe is CompressAI's example: Adam on the model, a second Adam on the entropy
bottleneck's quantiles (aux loss), gradient clipping at 1.0, learning rate halved when
the validation RD loss plateaus. A run lives in ``<runs>/<name>-<config hash>/``:
``last.pth.tar`` (everything needed to resume), ``best.pth.tar`` (best validation RD
loss), ``log.csv`` and ``done.json`` once finished. A finished run is never recomputed.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from kdlib import data
from kdlib.data import file_digest
from kdlib.bank import open_bank, order
from kdlib.io import write_json
from kdlib.losses import KDLoss
from kdlib.models import Hyperprior, ModelError, load_model, read_checkpoint, resolve, save_checkpoint
from kdlib.precision import student_precision
from kdlib.scales import RECIPES, RUNS
from kdlib.teachers import CHUNK, PARTS, TargetCache, TeacherTargets

class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad configuration)."""


@dataclass
class Config:
    """Everything that defines a run; its hash names the run folder."""

    name: str
    N: int = 128
    M: int = 192
    Z: int | None = None
    lmbda: float = 0.025
    teacher: str | None = None  # checkpoint name or path; None = from scratch
    init: str | None = None  # warm start: "sha256:<hex>" of a checkpoint whose weights start the run
    hyper_teacher: str | None = None  # a second teacher for the z_hat term (hybrid KD)
    w_latent: float = 0.2
    w_hyper: float = 0.0
    w_recon: float = 0.2
    w_rd: float = 0.4
    latent: str = "mse"
    precision: str = "fp32"  # "fp32", or "bf16": transforms under bfloat16 autocast, entropy models fp32
    scale: str = "cpu"
    crop: int | None = None
    batch: int | None = None
    steps: int | None = None
    lr: float | None = None
    val_every: int | None = None
    val_images: int | None = None
    patience: int | None = None
    aux_lr: float = 1e-3
    clip: float = 1.0
    seed: int = 0
    data: str | None = None  # folder of training images; None = <KDLIB_DATA>/train
    dataset: str = "folder"  # "folder" or "vimeo90k" (CompressAI's Vimeo90kDataset layout)
    bank: int | None = None  # draw batches from a fixed bank of this many crops (kdlib.bank), teacher targets stored
    converge_lr: float | None = None  # stop rule (converged()): the plateau schedule has cut lr to this fraction...
    converge_flat: float | None = None  # ...and the best validation RD loss fell by less than this over the last 10 %
    schedule: str | None = None  # None: halve lr on plateau; "wsd": lr constant, then linear to 0 over the last ``decay``
    decay: float | None = None  # fraction of ``steps`` in the decay phase of the "wsd" schedule

    def __post_init__(self) -> None:
        if self.scale not in RECIPES:
            raise TrainingError(f"scale must be one of {sorted(RECIPES)}, not {self.scale!r}")
        for key, value in RECIPES[self.scale].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.precision not in ("fp32", "bf16"):
            raise TrainingError(f"precision must be 'fp32' or 'bf16', not {self.precision!r}")
        if self.crop % 64:
            raise TrainingError(f"crop must be a multiple of 64 (the codec downsamples 64x), not {self.crop}")
        for key in ("lmbda", "lr", "aux_lr", "clip"):  # a rate, a trade-off: finite and positive
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise TrainingError(f"{key} must be a positive number, not {value!r}")
        for key in ("w_latent", "w_hyper", "w_recon", "w_rd"):  # loss weights: finite, not negative
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise TrainingError(f"{key} must be a number of at least 0, not {value!r}")
        if self.schedule not in (None, "wsd"):
            raise TrainingError(f"schedule must be None (plateau) or 'wsd', not {self.schedule!r}")
        if self.schedule and not (self.decay and 0 < self.decay <= 1):
            raise TrainingError(f"the 'wsd' schedule needs 0 < decay <= 1, not {self.decay!r}")
        if self.schedule and self.converge_lr:
            raise TrainingError("a fixed schedule ('wsd') has no stop rule: leave converge_lr unset")
        if self.bank and (self.w_hyper or self.hyper_teacher or self.dataset != "folder"):
            raise TrainingError("a crop bank holds y_hat and x_hat targets of a folder of images: "
                                "no hyper-latent KD, no second teacher, no Vimeo90K")

    @classmethod
    def continuing(cls, checkpoint: str | Path, **changes: Any) -> "Config":
        """The config of a run that continues ``checkpoint`` (e.g. in a new session): its config,
        warm-started from its weights (Adam restarts), at its last learning rate unless changed."""
        meta = load_model(checkpoint).meta
        fields = {**meta["config"], "init": f"sha256:{data.sha256sum(resolve(checkpoint))}",
                  "lr": meta.get("lr", meta["config"]["lr"]), **changes}
        config = cls(**fields)
        config.init_path = str(resolve(checkpoint))
        return config

    def hash(self) -> str:
        """Of every field but the name; fields left at None are left out (so a new optional field
        keeps old runs' hashes), and teachers count by their file's sha256, not their name (a
        re-released teacher makes new student runs)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "name"}
        for key in ("teacher", "hyper_teacher"):
            if key in fields:
                fields[key] = f"sha256:{file_digest(resolve(fields[key]))}"
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def portable_path(path: str | None) -> str | None:
    """A path inside the repository as relative to it (what a checkpoint records), others as they are."""
    from kdlib.models import repo_relative

    return str(repo_relative(path)) if path else path


def run_dir(config: Config, runs: str | Path) -> Path:
    return Path(runs) / f"{config.name}-{config.hash()}"


def training_sets(config: Config) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """(train, validation) datasets for the run."""
    if config.dataset == "vimeo90k":  # CompressAI's loader: <root>/tri_trainlist.txt, sequences/...
        from compressai.datasets import Vimeo90kDataset
        from torchvision import transforms

        root = config.data or (data.mirror_root() or Path(".")) / "vimeo_triplet"
        train_tf = transforms.Compose([transforms.RandomCrop(config.crop), transforms.ToTensor()])
        val_tf = transforms.Compose([transforms.CenterCrop(config.crop), transforms.ToTensor()])
        try:
            train_set = Vimeo90kDataset(root, transform=train_tf, split="train", tuplet=3)
            val_set = Vimeo90kDataset(root, transform=val_tf, split="valid", tuplet=3)
        except FileNotFoundError as err:
            raise data.DataError(f"No Vimeo90K triplets at {root} ({err}); pass --data") from None
        if config.val_images:
            val_set = torch.utils.data.Subset(val_set, range(min(config.val_images, len(val_set))))
        return train_set, val_set
    files = data.image_files(config.data or data.train_root())
    val_files = data.split(files, "val")
    if config.val_images:
        val_files = val_files[: config.val_images]
    return (data.ImageCrops(data.split(files, "train"), config.crop, train=True),
            data.ImageCrops(val_files, config.crop, train=False))


def stable_end(config: Config) -> int:
    """The last step of the constant phase of a "wsd" run: a run of the same config with more steps
    is identical up to here, so shorter budgets branch from it (:func:`branch_from`)."""
    return round(config.steps * (1 - config.decay))


def lr_at(config: Config, step: int) -> float | None:
    """The learning rate of update ``step + 1`` under a fixed schedule ("wsd": ``lr`` until
    :func:`stable_end`, then linear to 0 at ``steps``); None under the plateau schedule, whose rate
    depends on the run's own validation losses."""
    if config.schedule is None:
        return None
    start = stable_end(config)
    return config.lr if step < start else config.lr * (config.steps - step) / (config.steps - start)


def state_path(folder: Path, step: int) -> Path:
    """A run's full resume state kept at ``step`` (``keep_states`` of :func:`train`)."""
    return folder / f"state-{step}.pth.tar"


def branch_from(config: Config, out: Path, longer: Config, runs: str | Path) -> Path | None:
    """Start ``config`` (a "wsd" run, no state yet) from the state that run ``longer`` kept at this
    run's :func:`stable_end`: ``longer`` is the same config with more steps (any name), so both runs
    are the same up to there and this one continues with its own decay. Returns the state used, or
    None where it is not there yet (the run then starts from step 0, the same run at more cost)."""
    if config.schedule is None or (out / "last.pth.tar").exists():
        return None
    if dataclasses.replace(longer, name=config.name, steps=config.steps) != config or longer.steps <= config.steps:
        raise TrainingError(f"{config.name} cannot branch from {longer.name}: not the same config with more steps")
    step, source = stable_end(config), run_dir(longer, runs)
    if not state_path(source, step).exists():
        return None
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", dataclasses.asdict(config))  # its own config: parked and resumed as itself
    shutil.copy2(state_path(source, step), out / "last.pth.tar")
    with open(source / "log.csv") as f:
        lines = f.read().splitlines(keepends=True)
    kept = [lines[0]] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= step]
    (out / "log.csv").write_text("".join(kept))
    return state_path(source, step)


def converged(history: list[tuple[int, float]], lr: float, config: Config) -> bool:
    """The stop rule of a run with ``converge_lr`` set: the plateau schedule has cut the learning rate
    to at most ``converge_lr`` of its start, and the best validation RD loss improved by less than
    ``converge_flat`` (relative) over the last 10 % of the steps run. ``history``: (step, validation
    RD loss) of every validation so far."""
    if not config.converge_lr or not history or lr > config.lr * config.converge_lr * (1 + 1e-9):
        return False
    step = history[-1][0]
    before = [v for s, v in history if s <= 0.9 * step]
    if not before:
        return False
    then, now = min(before), min(v for _, v in history)
    return (then - now) / then < config.converge_flat


def val_history(log: Path, until: int) -> list[tuple[int, float]]:
    """(step, validation RD loss) of a run's ``log.csv`` up to step ``until``."""
    if not log.exists():
        return []
    with open(log) as f:
        return [(int(r["step"]), float(r["val_rd_loss"])) for r in csv.DictReader(f)
                if r.get("val_rd_loss") and int(r["step"]) <= until]


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "np_keys": torch.from_numpy(keys.astype(np.int64)),
            "np_pos": int(pos), "np_has_gauss": int(has_gauss), "np_gauss": float(gauss)}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["np_keys"].numpy().astype(np.uint32), state["np_pos"],
                         state["np_has_gauss"], state["np_gauss"]))


def optimizers(model: Hyperprior, config: Config) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """Adam on the network, and Adam on the entropy bottleneck's quantiles (CompressAI's split)."""
    named = dict(model.named_parameters())
    main = [p for n, p in named.items() if not n.endswith(".quantiles")]
    aux = [p for n, p in named.items() if n.endswith(".quantiles")]
    return torch.optim.Adam(main, lr=config.lr), torch.optim.Adam(aux, lr=config.aux_lr)


def load_teacher(name: str | None, device: torch.device) -> Hyperprior | None:
    if name is None:
        return None
    teacher = load_model(name).to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def validate(model: Hyperprior, dataset: torch.utils.data.Dataset, criterion: KDLoss, batch: int,
             device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Mean RD loss, bpp and PSNR on the fixed validation crops (eval mode: rounded latents)."""
    model.eval()
    totals = {"rd_loss": 0.0, "bpp_loss": 0.0, "mse_loss": 0.0}
    n = len(dataset)
    for start in range(0, n, batch):
        x = torch.stack([dataset[i] for i in range(start, min(start + batch, n))]).to(device)
        terms = criterion(model(x), x)
        for key in totals:
            totals[key] += terms[key].item() * len(x)
    model.train()
    result = {key: value / n for key, value in totals.items()}
    result["psnr"] = -10 * math.log10(max(result["mse_loss"], 1e-12))
    return result


def distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether we joined the group); joins it when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    joined = world > 1 and not dist.is_initialized()
    if joined:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, joined


def teacher_cache_key(config: Config, rank: int = 0, teacher: str | None = None) -> dict[str, Any]:
    """The key of a :class:`TargetCache` of ``teacher`` (the run's own by default): the teacher's
    weights and what decides the crops it sees at each step."""
    return {"teacher": file_digest(resolve(teacher or config.teacher)), "seed": config.seed, "rank": rank,
            "crop": config.crop, "batch": config.batch, "data": str(config.data or data.train_root()),
            "dataset": config.dataset, "chunk": CHUNK}


def train(config: Config, runs: str | Path = RUNS, threads: int | None = None,
          progress: bool = True, stop_after: int | None = None, compile: bool = False,
          teacher_cache: str | Path | None = None, keep_states: tuple[int, ...] = (),
          longer: Config | None = None) -> Path:
    """Train (or resume, or return the cached result of) ``config``; returns the best checkpoint.

    ``stop_after`` ends this call after that many steps (the run stays resumable).
    ``keep_states``: steps at which the full resume state is also kept (:func:`state_path`), for shorter
    "wsd" budgets to branch from; ``longer``: the run of this config with more steps to branch from
    (:func:`branch_from`). ``compile`` runs the forward passes through ``torch.compile`` (same numbers up to float
    reassociation; pays after a few hundred steps on CPU). ``teacher_cache``: a folder where the
    teachers' targets of each batch are kept for later runs that draw the same crops
    (:class:`kdlib.teachers.TargetCache`; the same targets, not part of the config). Under ``torchrun`` each process
    trains on its own batches of ``config.batch`` with DDP (gloo on CPU, NCCL on GPUs); rank 0
    validates and writes.
    """
    out = run_dir(config, runs)
    if (out / "done.json").exists():
        return out / "best.pth.tar"
    if "RANK" not in os.environ and not (out / "last.pth.tar").exists():
        if longer is None or branch_from(config, out, longer, runs) is None:
            extend_shorter(config, out)
    rank, world, joined = distributed()
    try:
        return _train(config, out, rank, world, threads, progress, stop_after, compile, teacher_cache,
                      tuple(keep_states))
    finally:
        if joined:  # leaving gloo's threads to interpreter exit aborts the process
            dist.destroy_process_group()


def extend_shorter(config: Config, out: Path) -> Path | None:
    """Start ``out`` from the furthest run of the same config with fewer steps (same name, every
    field but ``steps`` equal), if any: more ``steps`` extends a run instead of starting over. The
    shorter run's folder is left as it is (copies of its checkpoints and log are taken). The
    extended run equals one trained to the new length from the start when the old length was a
    multiple of ``val_every`` (a run validates at its last step too)."""
    found = []
    for folder in out.parent.glob(f"{config.name}-*"):
        try:
            other = Config(**json.loads((folder / "config.json").read_text()))
        except (OSError, TypeError, ValueError):
            continue
        if (folder / "last.pth.tar").exists() and other.steps < config.steps \
                and dataclasses.replace(other, steps=config.steps).hash() == config.hash():
            found.append((other.steps, folder))
    if not found:
        return None
    steps, folder = max(found)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("last.pth.tar", "best.pth.tar", "log.csv"):
        if (folder / name).exists():
            shutil.copy2(folder / name, out / name)
    print(f"{config.name}: extending {folder} ({steps} steps) to {config.steps} steps in {out}")
    return folder


def _train(config: Config, out: Path, rank: int, world: int, threads: int | None, progress: bool,
           stop_after: int | None, compile: bool, teacher_cache: str | Path | None,
           keep_states: tuple[int, ...] = ()) -> Path:
    """The training loop of :func:`train`, for one process."""
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", dataclasses.asdict(config))
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)  # same initial weights on every rank
    np.random.seed(config.seed + rank)  # different crops on every rank
    # Pairing: the student is built first, and the teachers are built inside a forked RNG, so a
    # KD run and its scratch twin share initial weights, crops, noise draws and validation crops.
    model = Hyperprior(config.N, config.M, config.Z).to(device).train()
    with torch.random.fork_rng(devices=[]):
        teacher, hyper_teacher = load_teacher(config.teacher, device), load_teacher(config.hyper_teacher, device)
    if config.init:
        start = getattr(config, "init_path", None)
        if start is None or f"sha256:{data.sha256sum(start)}" != config.init:
            raise TrainingError(f"Config.init is {config.init}; build the config with Config.continuing(checkpoint)")
        model.load_state_dict(load_model(start).state_dict())
    criterion = KDLoss(config.lmbda, config.w_latent, config.w_hyper, config.w_recon, config.w_rd, config.latent)
    optimizer, aux_optimizer = optimizers(model, config)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min", factor=0.5, patience=config.patience)
    train_set, val_set = training_sets(config)
    bank = None
    if config.bank:  # batches and the teacher's targets from a fixed bank of crops, built once (forked RNG: paired)
        with torch.random.fork_rng(devices=[]):
            bank = open_bank(config.bank, config.crop, config.data or data.train_root(),
                             resolve(config.teacher) if config.teacher else None, progress=progress and rank == 0)
    step, best, wall, segments = 0, math.inf, 0.0, []
    if (out / "last.pth.tar").exists():  # resume the same run exactly where it stopped
        try:
            state = read_checkpoint(out / "last.pth.tar")
        except ModelError as err:
            raise TrainingError(f"Cannot resume {out}: {err}. To recover, move {out / 'last.pth.tar'} aside and "
                                "run again (the run restarts from step 0); best.pth.tar keeps the best weights "
                                "so far, without the optimiser state a resume needs") from None
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        aux_optimizer.load_state_dict(state["aux_optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"][rank])
        step, best, wall = state["meta"]["steps"], state["best"], state["meta"]["wall_s"]
        # states saved before segments were recorded: the machine and bank before this resume are unknown
        segments = state["meta"].get("segments", [{"from_step": 0, "machine": None, "bank": None}])
    segments = with_segment(segments, step, bank.digest if bank is not None else None, rank == 0)
    history = val_history(out / "log.csv", step)
    log = RunLog(out / "log.csv", keep_until=step) if rank == 0 else None

    # channels-last suits oneDNN convolutions; autocast only when asked (config.precision).
    model = model.to(memory_format=torch.channels_last)
    forward = model
    if world > 1:  # the quantiles get their own (aux) backward: DDP skips them, we average them below
        quantiles = [n for n, _ in model.named_parameters() if n.endswith(".quantiles")]
        DDP._set_params_and_buffers_to_ignore_for_model(model, quantiles)
        forward = DDP(model)
    forward = torch.compile(forward) if compile else forward
    # Teachers give only what the loss reads; the hyper-latent target comes from the hyper teacher if any.
    parts = PARTS + (("z_hat",) if config.w_hyper > 0 and hyper_teacher is None else ())
    targets = [teacher and TeacherTargets(teacher, parts), hyper_teacher and TeacherTargets(hyper_teacher, ("z_hat",))]
    t_forward, h_forward = [t and (torch.compile(t) if compile else t) for t in targets]
    t_cache = h_cache = None
    if bank is not None:
        t_forward = None
    elif teacher_cache and teacher is not None:  # targets of the same crops, shared by the runs of a seed
        decode = torch.compile(teacher.g_s) if compile else teacher.g_s
        t_cache = TargetCache(teacher_cache, teacher_cache_key(config, rank), t_forward, decode, parts)
    if teacher_cache and hyper_teacher is not None:
        h_cache = TargetCache(teacher_cache, teacher_cache_key(config, rank, config.hyper_teacher), h_forward, None,
                              ("z_hat",))
    native = native_bf16()
    if config.precision == "bf16" and device.type == "cpu" and not native and rank == 0:
        print(f"{config.name}: {EMULATED_BF16}", flush=True)
    aux_params = aux_optimizer.param_groups[0]["params"]

    def checkpoint(path: Path, with_state: bool) -> None:
        rngs = [rng_state()]
        if world > 1:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng_state())
        if rank != 0:
            return
        meta = {"lambda": config.lmbda, "steps": step, "data": str(config.data or "KDLIB_DATA/train"),
                "seed": config.seed, "config": dataclasses.asdict(config), "config_hash": config.hash(),
                "wall_s": wall, "threads": torch.get_num_threads(), "world_size": world, "compiled": compile,
                "lr": optimizer.param_groups[0]["lr"], "init_path": portable_path(getattr(config, "init_path", None)),
                "device": str(device), "segments": segments}
        extra = {"optimizer": optimizer.state_dict(), "aux_optimizer": aux_optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": rngs, "best": best} if with_state else None
        save_checkpoint(path, model, meta, extra)

    end = config.steps if stop_after is None else min(config.steps, step + stop_after)
    bar = tqdm(total=config.steps, initial=step, disable=not progress or rank != 0, desc=config.name, dynamic_ncols=True)
    started = time.perf_counter() - wall
    stopped = False
    while step < end and not stopped:
        if bank is not None:
            x, t_out = bank.batch(order(config.seed, step, config.batch, len(bank), rank))
            t_out = t_out and {k: v.to(device).contiguous(memory_format=torch.channels_last) for k, v in t_out.items()}
            h_out = None
        else:
            x = torch.stack([train_set[i] for i in np.random.randint(len(train_set), size=config.batch)])
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():  # teachers: float32 targets (never autocast), once per batch, never in backward
            if bank is None:
                t_out = (t_cache(step, x) if t_cache else t_forward(x)) if teacher is not None else None
                h_out = (h_cache(step, x) if h_cache else h_forward(x)) if hyper_teacher is not None else None
        with student_precision(device, config.precision, native):
            out_s = forward(x)
        terms = criterion(out_s, x, t_out, h_out)
        if not torch.isfinite(terms["loss"]):
            raise TrainingError(f"{config.name}: loss is {terms['loss'].item()} at step {step + 1}; "
                                f"stopped. The last good state is {out / 'last.pth.tar'} (step {step - step % config.val_every}).")
        optimizer.zero_grad(set_to_none=True)
        aux_optimizer.zero_grad(set_to_none=True)
        if (lr := lr_at(config, step)) is not None:  # a fixed schedule: the same rate at every step for any run
            for group in optimizer.param_groups:
                group["lr"] = lr
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        aux_loss = model.aux_loss()
        aux_loss.backward()
        if world > 1:
            for p in aux_params:
                dist.all_reduce(p.grad)
                p.grad /= world
        aux_optimizer.step()
        step += 1
        wall = time.perf_counter() - started
        psnr = -10 * math.log10(max(terms["mse_loss"].item(), 1e-12))
        bar.update(1)
        bar.set_postfix(loss=f"{terms['loss'].item():.3f}", bpp=f"{terms['bpp_loss'].item():.3f}", psnr=f"{psnr:.2f}")
        row = {"step": step, "wall_s": round(wall, 2), "lr": optimizer.param_groups[0]["lr"], "aux_loss": aux_loss.item(),
               **{k: v.item() for k, v in terms.items()}}
        if step % config.val_every == 0 or step == config.steps:
            val = validate(model, val_set, criterion, config.batch, device)  # same on every rank
            row.update({f"val_{k}": v for k, v in val.items()})
            if config.schedule is None:
                scheduler.step(val["rd_loss"])
            history.append((step, val["rd_loss"]))
            stopped = converged(history, optimizer.param_groups[0]["lr"], config)
            # a fixed schedule keeps its last weights (the decayed model), not the best validation's
            if (config.schedule is None and val["rd_loss"] < best) or (config.schedule and step == config.steps):
                best = val["rd_loss"]
                checkpoint(out / "best.pth.tar", with_state=False)
            checkpoint(out / "last.pth.tar", with_state=True)
        if step in keep_states:
            checkpoint(state_path(out, step), with_state=True)
        if log:
            log.write(row)
    bar.close()
    for cache in (t_cache, h_cache):
        if cache:
            cache.close()
    if log:
        log.close()
    if world > 1:
        check_in_sync(model)
    if (step >= config.steps or stopped) and rank == 0:
        done = {"steps": step, "wall_s": wall, "best_val_rd_loss": best}
        if config.converge_lr:  # which end the run met: the stop rule, or the step cap
            done.update(converged=stopped, lr=optimizer.param_groups[0]["lr"])
        if bank is not None:
            done["bank"] = bank.digest
        if len(segments) > 1:  # resumed on another machine or bank: each part's, from the step it began
            done["segments"] = segments
        write_json(out / "done.json", done, indent=None)
    return out / "best.pth.tar"


def check_in_sync(model: Hyperprior) -> None:
    """Raise unless every rank holds rank 0's weights."""
    for name, p in model.state_dict().items():
        reference = p.clone()
        dist.broadcast(reference, 0)
        if not torch.equal(reference, p):
            raise TrainingError(f"DDP ranks diverged at {name}")


class RunLog:
    """Append-only CSV of per-step terms, and TensorBoard scalars in the same folder when
    tensorboard is installed; on resume, rows and events past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_until: int):
        self.path, self.fields, self.board = path, None, None
        if path.exists():
            with open(path) as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
            path.unlink()
            for r in rows:  # before TensorBoard opens: its files already hold these rows
                self.write(r)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self.board = SummaryWriter(str(path.parent), purge_step=keep_until + 1)

    def write(self, row: dict[str, Any]) -> None:
        if self.board:
            for key, value in row.items():
                if key != "step":
                    self.board.add_scalar(key, value, row["step"])
        new = self.fields is None
        if new:
            self.fields = list(row) + [k for k in ("val_rd_loss", "val_bpp_loss", "val_mse_loss", "val_psnr") if k not in row]
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new and f.tell() == 0:
                writer.writeheader()
            writer.writerow(row)

    def close(self) -> None:
        if self.board:
            self.board.close()


def with_segment(segments: list[dict[str, Any]], step: int, bank: str | None, say: bool = True) -> list[dict[str, Any]]:
    """The run's segments (the machine and crop bank each part trained on, from the step it began) with
    this one added where the machine or the bank differs from the last's; says so when it does."""
    here = {"from_step": step, "machine": machine_kind(), "bank": bank}
    if segments and (segments[-1]["machine"], segments[-1]["bank"]) == (here["machine"], here["bank"]):
        return segments
    if segments and say:
        print(f"resuming at step {step} on {here['machine']} (bank {bank}); its last part ran on "
              f"{segments[-1]['machine'] or 'a machine not recorded'} (bank {segments[-1]['bank'] or 'not recorded'}): "
              "recorded as a new segment in its checkpoint and done.json", flush=True)
    return [*segments, here]


def _cpuinfo(field: str) -> str | None:
    """A field of the first CPU in /proc/cpuinfo (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def machine_kind() -> str:
    """The CPU's model name with its ATen capability and how it computes bfloat16, e.g. "AMD EPYC (AVX2, emulated
    bf16)" or "AMD EPYC (AVX512, native bf16)": the same model name covers kinds that train at different rates.
    Segments recorded before the emulation (2026-12-07) name a CPU without native bfloat16 with no suffix, e.g.
    "AMD EPYC (AVX2)": their bf16 steps ran PyTorch's fallback kernels."""
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {'native' if native_bf16() else 'emulated'} bf16)"


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (the avx512_bf16 or amx_bf16 flag): without it bf16 training is
    emulated (:class:`kdlib.precision.EmulatedBf16`; docs/training.md, "Precision")."""
    flags = (_cpuinfo("flags") or "").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


EMULATED_BF16 = ("bf16 autocast on a CPU without native bfloat16 (no avx512_bf16 or amx_bf16 flag): its convolutions "
                 "run in float32 on bfloat16 operands and round their outputs to bfloat16 (kdlib.precision.EmulatedBf16;"
                 " PyTorch's own bf16 path was measured about 8x slower than fp32 on an AVX2 EPYC: docs/training.md, \"Precision\")")
