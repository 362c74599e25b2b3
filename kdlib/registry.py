"""The checkpoint registry: the only reader and writer of a ``manifest.json``, and what puts a trained
run there.

``checkpoints/manifest.json`` lists the released models (T1, T5, S16-S112: file, sha256, config and
its hash, steps, machine, recipe, Kodak means); ``checkpoints/runs/<budget>/manifest.json`` lists the
recorded runs of the grid, whose weights are not released (config hash, weights sha256, how the run
ended). :func:`release` publishes a run, :func:`record` keeps what an unreleased run leaves, and
:func:`release_recorded` publishes a recorded run whose weights were kept (the long tier's).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdlib import data
from kdlib.io import atomic, read_json, write_atomic, write_json
from kdlib.models import CHECKPOINTS, load_model, read_checkpoint, save_checkpoint

if TYPE_CHECKING:
    import pandas as pd
# The trainer (kdlib.train) and pandas are imported where a run is released or recorded, not here: the
# codec reads the manifest (kdlib.bitstream) and must not load the training stack to do so.


class Manifest:
    """The ``manifest.json`` of a checkpoint folder (default: :data:`CHECKPOINTS`, the released
    models'), one entry per name."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else CHECKPOINTS
        self.path = self.folder / "manifest.json"

    def entries(self) -> dict[str, dict[str, Any]]:
        return read_json(self.path, {})

    def get(self, name: str) -> dict[str, Any] | None:
        return self.entries().get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.entries()

    def put(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Set ``name``'s entry (written atomically, keys sorted)."""
        entries = self.entries()
        entries[name] = entry
        write_json(self.path, entries, sort_keys=True)
        return entry

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        """Add or replace fields of ``name``'s existing entry."""
        entry = self.get(name)
        if entry is None:
            raise KeyError(f"{name} has no entry in {self.path}")
        return self.put(name, {**entry, **fields})

    def weights(self, name: str, config_hash: str | None = None) -> Path | None:
        """The released weights of ``name`` (when given, only if trained with that config hash)."""
        entry = self.get(name)
        if entry is None or "file" not in entry or config_hash not in (None, entry.get("config_hash")):
            return None
        return self.folder / entry["file"]


def _machine(meta: dict[str, Any], per_run: str = "") -> str:
    from kdlib.train import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores; {meta['threads']} thread(s){per_run}, device {meta.get('device', 'cpu')}"


def handed_over(earlier: str | Path, checkpoints: Path = CHECKPOINTS) -> tuple[pd.DataFrame, int, float]:
    """(log as a DataFrame, steps, wall seconds) up to the state a continued run started from: a run
    directory's ``last.pth.tar``, or the best step of a checkpoint released in ``checkpoints`` (by name)."""
    import pandas as pd

    from kdlib.train import TrainingError

    if Path(earlier).is_dir():
        state = read_checkpoint(Path(earlier) / "last.pth.tar")["meta"]
        log, steps = pd.read_csv(Path(earlier) / "log.csv"), state["steps"]
        return log[log.step <= steps], steps, state["wall_s"]
    entry = Manifest(checkpoints).get(str(earlier))
    if entry is None:
        raise TrainingError(f"{earlier} is neither a run directory nor a released checkpoint "
                            f"({sorted(Manifest(checkpoints).entries())})")
    log, steps = pd.read_csv(checkpoints / f"{earlier}.log.csv"), entry["steps"]
    log = log[log.step <= steps]
    return log, steps, float(log.wall_s.iloc[-1])


def record(run: str | Path, name: str, folder: str | Path) -> dict[str, Any]:
    """Keep what a run leaves when its weights are not released: ``<folder>/<name>.log.csv.gz`` and an
    entry in ``<folder>/manifest.json`` (config, its hash, the best weights' sha256, steps, hours)."""
    from kdlib.train import Config

    run, folder = Path(run), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    best, last = read_checkpoint(run / "best.pth.tar")["meta"], read_checkpoint(run / "last.pth.tar")["meta"]
    write_atomic(folder / f"{name}.log.csv.gz", gzip.compress((run / "log.csv").read_bytes(), mtime=0), overwrite=True)
    return Manifest(folder).put(name, {
        "config": best["config"], "config_hash": Config(**best["config"]).hash(),
        "sha256": data.sha256sum(run / "best.pth.tar"), "steps": best["steps"], "steps_run": last["steps"],
        "wall_h": round(last["wall_s"] / 3600, 2), "machine": _machine(last), "commit": best.get("commit")})


def release(run: str | Path, name: str, checkpoints: Path, recipe: str = "",
            after: str | Path | list[str | Path] | None = None) -> dict[str, Any]:
    """Publish a run's best checkpoint as ``<checkpoints>/<name>.pth.tar`` (CDF tables updated, no
    optimizer state), its log as ``<name>.log.csv``, and its entry in ``<checkpoints>/manifest.json``.
    ``after``: what this run continues, earliest first (``--continue``): run directories, each
    handing over its ``last.pth.tar``, or the name of a released checkpoint (``--continue T5``),
    handing over its best step with its released log. Their logs come first and steps and
    hours count every run."""
    import pandas as pd

    from kdlib.train import Config

    run = Path(run)
    model = load_model(run / "best.pth.tar")  # updates the CDF tables, as CompressAI's update_model
    meta = dict(model.meta)
    last = read_checkpoint(run / "last.pth.tar")["meta"]
    earlier_runs = [] if after is None else [after] if isinstance(after, (str, Path)) else list(after)
    logs, offset, wall = [], 0, 0.0
    for earlier in earlier_runs:
        part, steps, seconds = handed_over(earlier, checkpoints)
        logs.append(part.assign(step=part.step + offset, wall_s=part.wall_s + wall))
        offset, wall = offset + steps, wall + seconds
    log = pd.read_csv(run / "log.csv")
    log = pd.concat([*logs, log.assign(step=log.step + offset, wall_s=log.wall_s + wall)])
    target = Path(checkpoints) / f"{name}.pth.tar"
    save_checkpoint(target, model, {**meta, "name": name, "commit": meta.get("commit")})
    with atomic(Path(checkpoints) / f"{name}.log.csv") as tmp:
        log.to_csv(tmp, index=False)
    return Manifest(checkpoints).put(name, {
        "file": target.name, "sha256": data.sha256sum(target), "config": meta["config"],
        "config_hash": Config(**meta["config"]).hash(), "lambda": meta["lambda"], "steps": offset + meta["steps"],
        "steps_run": offset + last["steps"], "wall_h": round((wall + last["wall_s"]) / 3600, 2), "data": meta["data"],
        "machine": _machine(meta, " per run"), "recipe": recipe, "commit": meta.get("commit"),
        "init": meta["config"].get("init")})


def release_recorded(name: str, records: str | Path, as_name: str, checkpoints: Path,
                     recipe: str = "") -> dict[str, Any]:
    """Publish recorded run ``name`` whose weights were kept (``<records>/<name>.pth.tar``, the long
    tier's) as ``<checkpoints>/<as_name>.pth.tar`` (CDF tables updated), its log as ``<as_name>.log.csv``,
    and an entry in ``<checkpoints>/manifest.json`` with the record's config, steps, hours, machine and
    how it ended (``end``)."""
    from kdlib.train import TrainingError

    records = Path(records)
    entry = Manifest(records).get(name)
    if entry is None or not (records / f"{name}.pth.tar").exists():
        raise KeyError(f"{name} has no kept weights in {records}")
    if data.sha256sum(records / f"{name}.pth.tar") != entry["sha256"]:
        raise TrainingError(f"{records / name}.pth.tar is not the weights its manifest entry records")
    model = load_model(records / f"{name}.pth.tar")
    meta = dict(model.meta)
    target = Path(checkpoints) / f"{as_name}.pth.tar"
    save_checkpoint(target, model, {**meta, "name": as_name})
    write_atomic(Path(checkpoints) / f"{as_name}.log.csv", gzip.decompress((records / f"{name}.log.csv.gz").read_bytes()),
                 overwrite=True)
    return Manifest(checkpoints).put(as_name, {
        "file": target.name, "sha256": data.sha256sum(target), "config": entry["config"],
        "config_hash": entry["config_hash"], "lambda": meta["lambda"], "steps": entry["steps"],
        "steps_run": entry["steps_run"], "wall_h": entry["wall_h"], "data": meta["data"], "machine": entry["machine"],
        "recipe": recipe, "commit": entry.get("commit"), "init": entry["config"].get("init"), "run": name,
        "end": entry.get("end")})
