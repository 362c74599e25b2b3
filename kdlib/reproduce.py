"""What the notebooks read, declared once: every result file, what makes it, what it depends on.

``kdlib reproduce`` (and ``make reproduce``) walks :func:`products`: a product whose recorded
inputs (checkpoint sha256, settings, image count, code) differ from the current ones is stale
and is made again; the others are kept. Each product records its inputs in itself (the
``model.sha256`` of a result JSON, the settings of a codec sweep) or, where the file has no room
for them (a CSV), in ``<file>.inputs.json`` beside it. Experiments keep their own record (the
config hash in each run's result; :mod:`kdlib.experiments`).
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL
import torch
from tqdm import tqdm

from kdlib import data
from kdlib.io import write_json
from kdlib.models import spec_name
from kdlib.scales import Layout

# Models whose coding speed notebook e7_codecs draws: the teacher, the recommended and the smallest student.
SPEED_MODELS = ("T5", "S64", "S16")
RESOURCE_MODELS = ("T5", "S16", "S32", "S64", "S96", "S112")
UNTRAINED_SIZES = (128, 112, 96, 64, 32, 16)  # size and FLOPs of every architecture, trained or not


@dataclass
class Product:
    """One result file (``path``, under the results folder), read by ``notebooks``."""

    path: Path
    notebooks: str
    inputs: dict[str, Any]  # what it must have been made from
    recorded: Callable[[Path], dict[str, Any] | None]  # what it was made from (None: unknown)
    make: Callable[[], Any]

    def stale(self, out: Path) -> bool:
        return not (out / self.path).exists() or self.recorded(out / self.path) != self.inputs


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _sidecar(path: Path) -> dict[str, Any] | None:
    side = path.with_name(path.name + ".inputs.json")
    return _json(side) if side.exists() else None


def checkpoint_digest(name: str, checkpoints: Path) -> str:
    from kdlib.train import file_digest

    return file_digest(checkpoints / f"{name}.pth.tar")


def _model_inputs(path: Path) -> dict[str, Any]:
    result = _json(path)
    return {"sha256": result["model"].get("sha256"), "images": len(result["per_image"]), "code": result["model"].get("code")}


def _codec_inputs(path: Path) -> dict[str, Any]:
    result = _json(path)
    return {"pillow": result["description"].split("Pillow ")[1].split(",")[0], "settings": result["settings"],
            "options": result.get("options"), "images": len(result["per_setting"][0]["per_image"])}


def _resource_inputs(path: Path) -> dict[str, Any]:
    result = _json(path)
    return {"sha256": result["model"].get("sha256"),
            "threads": [t["threads"] for t in result["throughput"] if t["device"] == "cpu"]}


def released(checkpoints: Path) -> list[str]:
    return sorted(p.name.removesuffix(".pth.tar") for p in checkpoints.glob("*.pth.tar"))


def products(layout: Layout, images: list[Path]) -> list[Product]:
    """Every result file the notebooks read, at ``layout``'s scale, into its results folder (experiments
    apart), of the models released in its checkpoints."""
    from kdlib import bench
    from kdlib.evaluate import evaluate_to_json, evaluation_code
    from kdlib.codecs import CODECS
    from kdlib.models import load_model

    this, out, checkpoints = layout.scale, layout.results, layout.checkpoints
    n, settings, repeats = len(images), this.codec_settings, this.repeats
    items = []
    for name in released(checkpoints):  # our checkpoints on Kodak: notebooks 01_teachers, e1_size, e6_resources
        items.append(Product(
            Path(f"{name}.json"), "01_teachers, e1_size to e5_kld (teachers), e6_resources",
            {"sha256": checkpoint_digest(name, checkpoints), "images": n, "code": evaluation_code()}, _model_inputs,
            lambda name=name: evaluate_to_json(load_model(checkpoints / f"{name}.pth.tar"), images, name, out,
                                               sha256=checkpoint_digest(name, checkpoints))))
    for codec in CODECS:  # classical codecs: notebooks 00_baselines, e7_codecs
        chosen = bench.chosen_settings(codec, settings)
        items.append(Product(
            Path("codecs") / f"{codec}.json", "00_baselines, e7_codecs",
            {"pillow": PIL.__version__, "settings": chosen, "options": CODECS[codec][1]("SETTING"), "images": n},
            _codec_inputs,
            lambda codec=codec: bench.codecs([codec], images, out, settings)))
    speed = [m for m in SPEED_MODELS if (checkpoints / f"{m}.pth.tar").exists()]
    items.append(Product(  # encode/decode speed against CompressAI's path: notebook e7_codecs
        Path("codec_speed") / "codec_speed.csv", "e7_codecs",
        {"models": {m: checkpoint_digest(m, checkpoints) for m in speed}, "code": data.code_digest("entropy", "bitstream", "rans", "rans.c", "bench"),
         "images": n, "repeats": repeats},
        _sidecar, lambda: bench.codec_speed(speed, images, out, repeats=repeats)))
    specs = [f"untrained:{size}" for size in UNTRAINED_SIZES]
    specs += [m for m in RESOURCE_MODELS if (checkpoints / f"{m}.pth.tar").exists()]
    if this.quick:  # each costs two fresh processes (peak memory): every architecture, the teacher, S16
        specs = [s for s in specs if s.startswith("untrained:") or s in ("T5", "S16")]
    threads = [1] if this.quick else [1, torch.get_num_threads()]
    for spec in specs:  # resources of experiment 6: notebook e6_resources
        trained = not spec.startswith("untrained:")
        items.append(Product(
            Path("resources") / f"{spec_name(spec)}.json", "e6_resources",
            {"sha256": checkpoint_digest(spec, checkpoints) if trained else None, "threads": threads}, _resource_inputs,
            lambda spec=spec: bench.resources([spec], images, 1, threads, out)))
    return items


def reproduce(layout: Layout, train: bool = False) -> list[Path]:
    """Make every stale product at ``layout``'s scale (into its results folder) and every experiment's
    results (training only with ``train``); returns the products made. ``paper`` needs a GPU and
    Vimeo90K, and says which is missing."""
    from kdlib.experiments import run_experiment
    from kdlib.grid import EXPERIMENTS

    chosen, out = layout.scale, layout.results
    if chosen.gpu:
        missing = [what for what, ok in (("a CUDA GPU", torch.cuda.is_available()),
                                         ("Vimeo90K (KDLIB_DATA/vimeo_triplet)", vimeo_present())) if not ok]
        if missing:
            raise SystemExit(f"kdlib reproduce --scale {chosen.name} runs the published protocol (millions of steps "
                             f"on Vimeo90K); missing here: {' and '.join(missing)}. Use --scale cpu on this machine.")
    images = layout.images()
    train = train or chosen.quick  # a quick scale trains the grid for a few steps: a run of the whole pipeline
    items = products(layout, images)
    stale = [p for p in items if p.stale(out)]
    print(f"reproduce ({chosen.name}): {len(items) - len(stale)} of {len(items)} result files up to date, {len(stale)} to make")
    for product in tqdm(stale, desc="result files", unit="file", dynamic_ncols=True):
        product.make()
        side = out / product.path.with_name(product.path.name + ".inputs.json")
        if product.recorded is _sidecar:
            write_json(side, product.inputs, indent=1, newline=True)
        if product.stale(out):
            raise RuntimeError(f"{product.path} was made but does not record its inputs {product.inputs}")
    if not chosen.quick:
        for number in EXPERIMENTS:  # evaluate what has weights; train only when asked
            run_experiment(number, layout, train=train)
        return [p.path for p in stale]
    # a run of the pipeline: its few-step runs train in a temporary folder, removed once evaluated
    with tempfile.TemporaryDirectory(prefix=f"kdlib-{chosen.name}-runs-") as scratch:
        for number in EXPERIMENTS:
            run_experiment(number, dataclasses.replace(layout, runs=Path(scratch)), train=train)
        size = sum(f.stat().st_size for f in Path(scratch).rglob("*") if f.is_file())
    print(f"reproduce ({chosen.name}): removed what it trained ({size / 1e6:.0f} MB of run folders in {scratch}); "
          f"its results are in {out}")
    return [p.path for p in stale]


def vimeo_present() -> bool:
    root = data.mirror_root()
    return root is not None and (Path(root) / "vimeo_triplet" / "tri_trainlist.txt").exists()
