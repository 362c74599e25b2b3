"""The ``kdlib`` command: eval, train, compress, decompress, bench, reproduce, experiment, report.

Each command imports what it uses, inside its function: ``compress`` and ``decompress`` load the codec
alone (no trainer, no CompressAI subpackage they do not use: :mod:`kdlib.lazy`), so that coding one
photo costs little more than importing torch."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import math
import os
import sys
from pathlib import Path

from kdlib.scales import CHECKPOINTS, RECIPES, SCALES, Layout
from kdlib.scales import RUNS as DEFAULT_RUNS

CODEC_COMMANDS = ("compress", "decompress")

RUNS = os.environ.get("KDLIB_RUNS") or str(DEFAULT_RUNS)  # run folders; a path outside the clone outlives it
RESULTS = Layout.of("cpu").results  # the published results: the default folder of the benchmarks' files


DESCRIPTION = ("kdlib: distil small learned image codecs from large ones, evaluate them with real bitstreams, "
               "compress and decompress images with them, and reproduce the paper's experiments "
               "(Allemand et al., 2025). `kdlib COMMAND --help` says more.")


def released_names() -> str:
    """The released models' names, for help texts (read from the manifest alone: no model is loaded)."""
    try:
        return ", ".join(sorted(json.loads((CHECKPOINTS / "manifest.json").read_text())))
    except (OSError, ValueError):
        return "none found"


def image_list(images: str) -> list[Path]:
    from kdlib import data

    return data.kodak_paths() if images == "kodak" else data.image_files(images)


def cmd_eval(args: argparse.Namespace) -> None:
    from kdlib import data
    from kdlib.evaluate import evaluate_to_json
    from kdlib.models import from_spec, resolve, spec_name

    paths, out = image_list(args.images), Path(args.out)
    for spec in args.models:
        name = args.name or spec_name(spec)
        if (out / f"{name}.json").exists() and not args.force:
            raise FileExistsError(errno.EEXIST, "exists", str(out / f"{name}.json"))
        checkpoint = None if spec.startswith(("untrained:", "zoo:")) else data.sha256sum(resolve(spec))
        evaluate_to_json(from_spec(spec), paths, name, out, sha256=checkpoint)


def cmd_reproduce(args: argparse.Namespace) -> None:
    """Make every result file the notebooks read that is missing or stale (:mod:`kdlib.reproduce`)."""
    from kdlib.reproduce import reproduce

    reproduce(Layout.of(args.scale, results_root=args.out, runs=args.runs), train=args.train)


def cmd_report(args: argparse.Namespace) -> None:
    from kdlib.htmlreport import write_html

    notebooks = sorted(Path(args.notebooks).glob("*.ipynb"))
    if not notebooks:
        raise SystemExit(f"No executed notebooks in {args.notebooks}")
    index = write_html(notebooks, args.out, Layout.of("cpu"))
    print(f"{len(notebooks)} notebooks and REPRODUCTION.md -> {index}")


def positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def byte_size(text: str) -> int:
    """An argparse type: bytes, with an optional K, M, G or T suffix (powers of 1024): 512M, 4G."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number, scale = (text[:-1], units[text[-1].upper()]) if text[-1:].upper() in units else (text, 1)
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 512M, 4G)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite size (e.g. 512M, 4G), not {text}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return int(value)


def positive_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers of at least 1 (thread counts)."""
    return [positive(part) for part in text.split(",")]


def not_its_input(source: str, target: str) -> None:
    """Refuse to write ``target`` over ``source`` (``--force`` included): the input would be lost."""
    from kdlib.models import SpecError

    if Path(target).exists() and Path(source).exists() and os.path.samefile(source, target):
        raise SpecError(f"{target} is the input itself; write the output elsewhere")


class SomeFailed(Exception):
    """Some files of a many-file command failed (each said why); the others were written."""


def pairs(args: argparse.Namespace, suffix: str) -> list[tuple[str, Path]]:
    """(input, output) of each file: ``IN OUT``, or ``IN... --out-dir D`` (``D/<stem><suffix>`` each)."""
    from kdlib.models import SpecError

    if args.out_dir is None:
        if len(args.files) != 2:
            raise SpecError(f"give one input and its output, or several inputs and --out-dir "
                            f"({len(args.files)} file(s) given without --out-dir)")
        return [(args.files[0], Path(args.files[1]))]
    outputs = [Path(args.out_dir) / (Path(f).stem + suffix) for f in args.files]
    twice = sorted({o.name for o in outputs if outputs.count(o) > 1})
    if twice:
        raise SpecError(f"two inputs would write the same output in {args.out_dir}: {', '.join(twice)}")
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    return list(zip(args.files, outputs))


def each_file(args: argparse.Namespace, suffix: str, code) -> None:
    """``code(input, output) -> summary`` for every file, in one process with one model for all of them. One
    file: its error is the command's. Several: a progress bar; a file that fails says why in one line and
    the others go on (the command then exits 1); the time per image at the end."""
    import time

    from tqdm import tqdm

    jobs = pairs(args, suffix)
    if len(jobs) == 1:
        (source, target), = jobs
        not_its_input(source, str(target))
        print(f"{source} -> {target}: {code(source, target)}")
        return
    failed, start = [], time.perf_counter()
    for source, target in tqdm(jobs, desc=args.command, unit="file", dynamic_ncols=True):
        try:
            not_its_input(source, str(target))
            tqdm.write(f"{source} -> {target}: {code(source, target)}")
        except FileExistsError:
            failed.append(f"{source}: {target} exists; pass --force to replace it")
        except (*user_errors(), MemoryError) as err:
            failed.append(f"{source}: {err}")
    done, seconds = len(jobs) - len(failed), time.perf_counter() - start
    print(f"{done} of {len(jobs)} files in {seconds:.1f} s ({seconds / max(done, 1):.2f} s per image)")
    for line in failed:
        print(f"kdlib {args.command}: error: {line}", file=sys.stderr)
    if failed:
        raise SomeFailed(len(failed))


def cmd_compress(args: argparse.Namespace) -> None:
    from kdlib import bitstream
    from kdlib.io import write_atomic
    from kdlib.models import from_spec

    model = bitstream.use_device(from_spec(args.model), args.device)  # loaded once for every file
    model.name = Path(args.model).name.removesuffix(".pth.tar")
    budget = (args.max_pixels or bitstream.MAX_PIXELS, args.max_memory or bitstream.MAX_MEMORY)

    def one(source: str, target: Path) -> str:
        blob = bitstream.compress(source, model, None, *budget)
        write_atomic(target, blob, overwrite=args.force)
        header = bitstream.read_header(blob)[0]
        return f"{len(blob)} bytes, {8 * len(blob) / (header.width * header.height):.4f} bpp"

    each_file(args, ".kdl", one)


def cmd_decompress(args: argparse.Namespace) -> None:
    import io

    from kdlib import bitstream
    from kdlib.io import write_atomic
    from kdlib.models import from_spec

    given = bitstream.use_device(from_spec(args.model), args.device) if args.model else None
    released: dict[str, object] = {}  # the models the files name, each loaded once
    budget = (args.max_pixels or bitstream.MAX_PIXELS, args.max_memory or bitstream.MAX_MEMORY)

    def one(source: str, target: Path) -> str:
        blob = read_file(source)
        name = bitstream.read_header(blob)[0].model_name
        if given is None and name not in released:
            released[name] = bitstream.use_device(bitstream.released_model(name), args.device)
        image = bitstream.decompress(blob, given or released[name], None, *budget)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        write_atomic(target, buffer.getvalue(), overwrite=args.force)
        return f"{image.width}x{image.height} {image.mode}"

    each_file(args, ".png", one)


MAX_FILE = 1 << 30  # a .kdl file of a 32768^2 image at 8 bpp is 1 GiB


def read_file(path: str) -> bytes:
    """A .kdl file's bytes; a device or a file over :data:`MAX_FILE` is refused before reading."""
    from kdlib.bitstream import BitstreamError

    file = Path(path)
    if file.exists() and not file.is_file():
        raise BitstreamError(f"{path} is not a regular file")
    if file.exists() and file.stat().st_size > MAX_FILE:
        raise BitstreamError(f"{path} is {file.stat().st_size} bytes, larger than any .kdl file ({MAX_FILE})")
    return file.read_bytes()


def cmd_bench(args: argparse.Namespace) -> None:
    from kdlib import bench, data

    paths = data.kodak_paths()[: args.images] if args.bench not in ("train", "teacher", "kd-step") else None
    if args.bench == "resources":
        bench.resources(args.models, paths, args.passes, args.thread_counts, Path(args.out))
    elif args.bench == "codecs":
        from kdlib.codecs import CODECS

        bench.codecs(args.codecs or list(CODECS), paths, Path(args.out))
    elif args.bench == "codec":
        bench.codec_speed(args.models, paths, Path(args.out), args.repeats)
    elif args.bench == "teacher":
        bench.teacher_targets(args.repeats)
    elif args.bench == "kd-step":
        bench.kd_step_ratio(args.N, args.steps)
    else:
        bench.train_throughput(args.steps, args.compile_too)


def cmd_train(args: argparse.Namespace) -> None:
    from kdlib.losses import KD_PRESETS
    from kdlib.train import Config, train

    fields = {f.name for f in dataclasses.fields(Config)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if args.kd is None and args.teacher and not any(k.startswith("w_") for k in given):
        args.kd = "authors"  # the experiment grid's KD loss, not Config's paper-text default
    if args.kd:  # a preset's weights, unless a weight is given explicitly
        given = {**KD_PRESETS[args.kd], **given}
    if args.continue_from:  # a new run warm-started from a checkpoint's weights (e.g. in a new session)
        given.pop("name")
        config = Config.continuing(args.continue_from, **given)
    else:
        config = Config(**given)
    best = train(config, runs=args.runs, threads=args.threads, stop_after=args.stop_after,
                 compile=args.compile, progress=not args.quiet, teacher_cache=args.teacher_cache)
    print(best)


def cmd_experiment(args: argparse.Namespace) -> None:
    from kdlib.experiments import park, run_experiment

    if args.park:
        parked = park(Layout.of(args.scale, runs=args.runs), args.only)
        print(f"parked {len(parked)} unfinished run(s) in checkpoints/: {', '.join(parked) or 'none'}")
        return
    run_experiment(args.number, Layout.of(args.scale, runs=args.runs), args.jobs, compile=not args.no_compile,
                   dry_run=args.dry_run, only=args.only)


def cmd_gpu_check(args: argparse.Namespace) -> None:
    from kdlib import gpu

    gpu.require_cuda(args.device)  # at once, before any image or model is read
    images = image_list(args.images)[: args.count]
    path = gpu.run_check(Path(args.out), images, args.models or gpu.available_models(), args.passes, args.steps,
                         budget_s=args.budget, device=args.device)
    print(f"wrote {path}")


def codec_name(name: str) -> str:
    """An argparse type: one of the classical codecs (``choices`` fails on an empty ``nargs="*"``)."""
    from kdlib.codecs import CODECS

    if name not in CODECS:
        raise argparse.ArgumentTypeError(f"invalid codec {name!r} (choose from {', '.join(CODECS)})")
    return name


def parser(codec_only: bool = False) -> argparse.ArgumentParser:
    """The command line; ``codec_only``: with ``compress`` and ``decompress`` alone, whose options need
    nothing imported (the other commands' options are read from the trainer, the grid and the losses)."""
    p = argparse.ArgumentParser(prog="kdlib", description=DESCRIPTION)
    p.add_argument("--threads", type=positive, help="torch CPU threads (default: torch's)")
    sub = p.add_subparsers(dest="command", required=True)
    if not codec_only:
        _eval_command(sub)
    _codec_commands(sub)
    if not codec_only:
        _other_commands(sub)
    return p


def _eval_command(sub) -> None:
    e = sub.add_parser("eval", help="evaluate codecs with real bitstreams, write eval_model JSON")
    e.add_argument("models", nargs="+", help="checkpoint name or path, or zoo:Q[=FILE] for CompressAI's pretrained")
    e.add_argument("--images", default="kodak", help="'kodak' (verified) or a folder of images")
    e.add_argument("--out", default="eval-results", help="folder for <name>.json (the committed results/ only when "
                   "named: `kdlib reproduce` keeps those)")
    e.add_argument("--force", action="store_true", help="replace an existing <name>.json")
    e.add_argument("--name", help="result name (one model only)")
    e.set_defaults(func=cmd_eval)


def _codec_commands(sub) -> None:
    c = sub.add_parser("compress", help="compress images to .kdl files",
                       description="kdlib compress IMAGE OUT.kdl, or kdlib compress IMAGE... --out-dir DIR (one process, "
                                   "the model loaded once: the same bytes as one at a time)")
    c.add_argument("files", nargs="+", metavar="FILE", help="an image Pillow reads and the .kdl to write; or images, "
                   "with --out-dir")
    c.add_argument("--out-dir", help="write <DIR>/<name>.kdl for every image given")
    c.add_argument("--model", required=True, help=f"a released model ({released_names()}; S16-long is the best "
                   "small one) or a checkpoint's path")
    c.add_argument("--force", action="store_true", help="replace an existing output")
    c.add_argument("--device", help="run the transforms there, e.g. cuda (the hyperprior stays on the CPU)")
    c.add_argument("--max-pixels", type=positive, default=None, help="refuse larger images (default: Pillow's "
                   "decompression-bomb limit, 89478485)")
    c.add_argument("--max-memory", type=byte_size, default=None, help="refuse an image whose coding would need more "
                   "working memory, e.g. 4G (default: 2G; estimate: kdlib.bitstream.working_memory)")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help="decode .kdl files to PNG",
                       description="kdlib decompress IN.kdl OUT.png, or kdlib decompress IN.kdl... --out-dir DIR")
    d.add_argument("files", nargs="+", metavar="FILE", help="a .kdl file and the PNG to write; or .kdl files, with "
                   "--out-dir")
    d.add_argument("--out-dir", help="write <DIR>/<name>.png for every file given")
    d.add_argument("--model", help=f"a released model ({released_names()}) or a checkpoint's path (default: the "
                   "released model named in the file)")
    d.add_argument("--force", action="store_true", help="replace an existing output")
    d.add_argument("--max-pixels", type=positive, default=None, help="refuse larger images (default: Pillow's "
                   "decompression-bomb limit, 89478485)")
    d.add_argument("--max-memory", type=byte_size, default=None, help="refuse an image whose coding would need more "
                   "working memory, e.g. 4G (default: 2G; estimate: kdlib.bitstream.working_memory)")
    d.add_argument("--device", help="run the transforms there, e.g. cuda (the hyperprior stays on the CPU)")
    d.set_defaults(func=cmd_decompress)


def _other_commands(sub) -> None:
    import torch

    from kdlib.grid import EXPERIMENTS
    from kdlib.losses import KD_PRESETS, LATENT_LOSSES
    from kdlib.train import Config

    r = sub.add_parser("reproduce", help="make every result file the notebooks read that is missing or stale")
    r.add_argument("--scale", default="cpu", choices=list(RECIPES),
                   help="; ".join(f"{name}: {SCALES[name].about}" for name in RECIPES) + " (default: cpu)")
    r.add_argument("--out", default=str(RESULTS), help="folder of the result files, the experiments' included "
                   "(written to <out> at cpu, <out>/<scale> otherwise; default: the repository's results/)")
    r.add_argument("--train", action="store_true", help="also train the experiments' missing runs (hours at cpu scale)")
    r.add_argument("--runs", default=RUNS, help="folder of run directories, a cache by config hash (default: $KDLIB_RUNS, else the repository's runs/)")
    r.set_defaults(func=cmd_reproduce)
    rp = sub.add_parser("report", help="static HTML of the executed notebooks and paper/REPRODUCTION.md")
    rp.add_argument("--notebooks", default="notebooks", help="folder of executed notebooks (default: notebooks, "
                                                              "which carry the last cpu run's outputs)")
    rp.add_argument("--out", default="build/report", help="output folder (default: build/report)")
    rp.set_defaults(func=cmd_report)

    b = sub.add_parser("bench", help="benchmarks: resources of codecs, classical codecs")
    bsub = b.add_subparsers(dest="bench", required=True)
    br = bsub.add_parser("resources", help="size, FLOPs, peak memory, throughput (and energy where metered)")
    br.add_argument("models", nargs="+", help="as for eval, or untrained:N[,M] for architecture-only figures")
    br.add_argument("--passes", type=positive, default=1, help="passes over the images (the paper: 50 on a GPU)")
    br.add_argument("--images", type=positive, default=24, help="first K Kodak images")
    br.add_argument("--cpu-threads", dest="thread_counts",
                    default=[1, torch.get_num_threads()], type=positive_list,
                    help="CPU thread counts, comma-separated (default: 1 and all)")
    br.add_argument("--out", default=str(RESULTS), help="results folder: writes <out>/resources/ (default: the repository's results/)")
    br.set_defaults(func=cmd_bench)
    bc = bsub.add_parser("codecs", help="RD curves and speed of JPEG, WebP, JPEG 2000, AVIF on Kodak")
    bc.add_argument("codecs", nargs="*", type=codec_name, help="jpeg, webp, jpeg2000 or avif (default: all)")
    bc.add_argument("--images", type=positive, default=24, help="first K Kodak images")
    bc.add_argument("--out", default=str(RESULTS), help="results folder: writes <out>/codecs/ (default: the repository's results/)")
    bc.set_defaults(func=cmd_bench)
    bk = bsub.add_parser("codec", help="our compress/decompress against CompressAI's default path, plus JPEG/WebP")
    bk.add_argument("models", nargs="+", help="as for eval")
    bk.add_argument("--images", type=positive, default=24, help="first K Kodak images")
    bk.add_argument("--repeats", type=positive, default=5, help="passes per path over each 4 images; each timing is the best")
    bk.add_argument("--out", default=str(RESULTS), help="results folder: writes <out>/codec_speed/ (default: the repository's results/)")
    bk.set_defaults(func=cmd_bench)
    bte = bsub.add_parser("teacher", help="a KD step's teacher pass: full forward vs the targets the loss reads")
    bte.add_argument("--repeats", type=positive, default=20, help="timed batches per path (median)")
    bte.set_defaults(func=cmd_bench)
    bks = bsub.add_parser("kd-step", help="a long-tier KD step (targets from the crop bank) against its scratch twin's")
    bks.add_argument("--N", type=positive, default=16, help="student channels")
    bks.add_argument("--steps", type=positive, default=400, help="steps per arm (the first 100 are warm-up)")
    bks.set_defaults(func=cmd_bench)
    bt = bsub.add_parser("train", help="training steps/s: our trainer against a plain CompressAI-style loop")
    bt.add_argument("--steps", type=positive, default=20, help="timed steps per configuration (after warm-up)")
    bt.add_argument("--no-compile", dest="compile_too", action="store_false", help="skip the torch.compile rows")
    bt.set_defaults(func=cmd_bench)

    g = sub.add_parser("gpu-check", help="what only a CUDA GPU measures, in one JSON (docs/codec.md, \"GPU check\")",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--images", default="kodak", help="a folder of images, or kodak")
    g.add_argument("--count", type=positive, default=24, help="first K of those images")
    g.add_argument("--models", nargs="+", help="released models to time (default: those of T5, S16..S112 in checkpoints/)")
    g.add_argument("--passes", type=positive, default=10, help="passes over the images per timing")
    g.add_argument("--steps", type=positive, default=300, help="timed training steps per arm (after 30 of warm-up)")
    g.add_argument("--budget", type=positive, default=420, help="seconds; parts not started by then are skipped")
    g.add_argument("--device", default="cuda", help="the CUDA device")
    g.add_argument("--out", default=str(RESULTS / "gpu"), help="folder of gpu_check.json")
    g.set_defaults(func=cmd_gpu_check)

    x = sub.add_parser("experiment", help="train (what is missing) and evaluate one of the paper's experiments")
    x.add_argument("number", type=int, choices=sorted(EXPERIMENTS), help="experiment number (the paper's order)")
    x.add_argument("--scale", default="cpu", choices=list(SCALES), help="training budget (kdlib.scales.SCALES; default: cpu)")
    x.add_argument("--runs", default=RUNS, help="folder of run directories, a cache by config hash (default: $KDLIB_RUNS, else the repository's runs/)")
    x.add_argument("--jobs", type=positive, default=2, help="runs trained at a time, cores split between them (default: 2)")
    x.add_argument("--only", nargs="+", metavar="RUN", help="only these runs of the experiment")
    x.add_argument("--dry-run", action="store_true", help="say what would be evaluated and trained, do nothing")
    x.add_argument("--no-compile", action="store_true", help="no torch.compile (slower; for debugging)")
    x.add_argument("--park", action="store_true",
                   help="keep the resume state of unfinished runs in checkpoints/runs/<scale>/parked/, where a later "
                        "`kdlib experiment` resumes them even if the run folders are gone; then exit")
    x.set_defaults(func=cmd_experiment)

    t = sub.add_parser("train", help="train a codec from scratch or distil it from a teacher",
                       description="Train a scale-hyperprior codec (kdlib.train). Flags left unset take the "
                                   "scale's recipe (kdlib.scales.RECIPES) or kdlib.train.Config's default.")
    t.add_argument("--name", required=True, help="run name (the run folder is <runs>/<name>-<config hash>)")
    t.add_argument("--continue", dest="continue_from", metavar="CHECKPOINT",
                   help="continue a released checkpoint's training: its config, Adam restarts (default: a new run)")
    t.add_argument("--scale", default="cpu", choices=list(RECIPES), help="recipe (kdlib.scales.RECIPES; default: cpu)")
    t.add_argument("--runs", default=RUNS, help="folder of run directories, a cache by config hash (default: $KDLIB_RUNS, else the repository's runs/)")
    t.add_argument("--stop-after", type=positive, help="stop after this many steps, resumable (default: run to --steps)")
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    flags = [("N", int, "channels of the transforms"), ("M", int, "channels of the latent y"),
             ("Z", int, "channels of the hyper-latent z (None: N)"), ("lmbda", float, "RD trade-off lambda"),
             ("teacher", str, "teacher checkpoint name or path (None: from scratch)"),
             ("hyper_teacher", str, "second teacher for the z_hat term (hybrid KD)"),
             ("w_latent", float, "weight of the latent KD term"), ("w_hyper", float, "weight of the z_hat KD term"),
             ("w_recon", float, "weight of the reconstruction KD term"), ("w_rd", float, "weight of the RD term"),
             ("crop", int, "training crop side (multiple of 64)"), ("batch", int, "crops per step"),
             ("steps", int, "training steps"), ("lr", float, "Adam learning rate"),
             ("val_every", int, "steps between validations and checkpoints"), ("seed", int, "random seed"),
             ("data", str, "folder of training images (None: $KDLIB_DATA/train)")]
    positive_flags = {"N", "M", "Z", "crop", "batch", "steps", "val_every"}
    for name, kind, text in flags:
        default = defaults[name]
        kind = positive if name in positive_flags else kind
        where = "the scale's recipe" if default is None and name in RECIPES["cpu"] else default
        t.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, help=f"{text} (default: {where})")
    t.add_argument("--kd", choices=list(KD_PRESETS),
                   help="named KD weights (kdlib.losses.KD_PRESETS); explicit --w-* flags win (default: with --teacher "
                        "and no --w-* flag, authors: the weights of the experiment grid's KD runs)")
    t.add_argument("--latent", choices=list(LATENT_LOSSES),
                   help="latent KD distance: MSE, KL per position, or KL at the authors' scale (default: mse)")
    t.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: the student's transforms under bfloat16 autocast, emulated with float32 "
                   "convolutions on a CPU without native bfloat16 (default: fp32)")
    t.add_argument("--teacher-cache", metavar="DIR", help="keep the teachers' targets per batch there, for later runs "
                   "drawing the same crops: about 2 GB per seed, 16 GB more for x_hat while 16 GB of disk stay free "
                   "(kdlib experiment: ~/.cache/kdlib/teacher-targets) (default: none)")
    t.add_argument("--compile", action="store_true", help="torch.compile the forward passes (default: off)")
    t.add_argument("--quiet", action="store_true", help="no progress bar (default: a progress bar)")
    t.add_argument("--dataset", choices=["folder", "vimeo90k"], help="training set layout (default: folder)")
    t.set_defaults(func=cmd_train)


class _Never(Exception):
    """Stands for an error class whose module the command never loaded: it cannot have been raised."""


def _loaded(module: str, name: str) -> type[Exception]:
    return getattr(sys.modules.get(module), name, _Never)


def user_errors() -> tuple[type[Exception], ...]:
    """The errors of a bad input or a full disk (one line, exit 1), from the kdlib modules the command loaded."""
    return (OSError, *(_loaded(m, n) for m, n in (("kdlib.data", "DataError"), ("kdlib.models", "ModelError"),
                                                  ("kdlib.entropy", "RoundTripError"), ("kdlib.train", "TrainingError"),
                                                  ("kdlib.bitstream", "BitstreamError"))))


def _command(argv: list[str]) -> str | None:
    """The command ``argv`` names: its first word that is neither an option nor ``--threads``' value."""
    words = iter(argv)
    for word in words:
        if word == "--threads":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    codec = _command(argv) in CODEC_COMMANDS
    if codec:
        from kdlib.lazy import defer_compressai

        defer_compressai()
    args = parser(codec_only=codec).parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "eval" and args.name and len(args.models) > 1:
        parser().error("--name takes one model only")
    try:
        args.func(args)
    except SomeFailed:
        return 1
    except KeyboardInterrupt:  # outputs are written atomically: nothing partial is left
        print(f"kdlib {args.command}: interrupted", file=sys.stderr)
        return 130
    except _loaded("kdlib.models", "SpecError") as err:  # bad usage, as argparse's own errors
        print(f"kdlib {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileExistsError as err:
        print(f"kdlib {args.command}: error: {err.filename or err} exists; pass --force to replace it", file=sys.stderr)
        return 1
    except user_errors() as err:
        print(f"kdlib {args.command}: error: {err}", file=sys.stderr)  # OSError: a read-only or full disk too
        return 1
    except _loaded("kdlib.gpu", "NoGPU") as err:
        print(f"kdlib {args.command}: {err}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"kdlib {args.command}: error: out of memory; lower --max-memory's budget or free memory", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
