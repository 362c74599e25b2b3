"""The gain of KD with its uncertainty: paired differences over Kodak images, bootstraps, seeds,
and the one verdict rule.

A KD student and its scratch twin are evaluated on the same 24 images, so their difference is
taken image by image (paired); its 95 % interval comes from resampling the images. Seeds give
a second spread: the same difference measured on independently trained pairs.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from compressai.models.vbr import ScaleHyperpriorVbr
from scipy import stats

from kdlib import experiments, grid
from kdlib.metrics import COMPRESSAI_CURVE, bd_metrics, curve_gaps, msssim_db, per_image, read_result
from kdlib.scales import PAPER, SCALES, Layout

PUBLISHED = PAPER / "published"  # the paper's own numbers (kdlib.report and the notebooks read them here too)


def results(number: int, folder: str | Path, budget: str = "cpu") -> pd.DataFrame:
    """Experiment ``number``'s runs as a DataFrame, one row per run: its :class:`Run` fields,
    ``arm``, ``path`` of its result JSON in ``folder``, ``done`` and the JSON's means, MS-SSIM in dB
    too (NaN where missing)."""
    rows = []
    for name in grid.members(number, budget):
        run, path = grid.RUNS[name], Path(folder) / f"{name}.json"
        row = {**dataclasses.asdict(run), "arm": run.arm, "loss_weights": run.loss_weights, "path": str(path), "done": path.exists(),
               **dict.fromkeys(("psnr-rgb", "ms-ssim-rgb", "bpp", "bpp-estimated"), float("nan"))}
        if path.exists():
            row.update({k: v[0] for k, v in json.loads(path.read_text())["results"].items()})
        row["ms-ssim-db"] = msssim_db(row["ms-ssim-rgb"]) if path.exists() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Mean of ``a - b`` over paired items, with a 95 % percentile interval from resampling items."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (samples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "low": float(low), "high": float(high)}


def kd_gain(kd: list[str | Path], scratch: list[str | Path], lmbda: float) -> dict[str, float]:
    """KD minus scratch for one size: each seed's pair, then the per-image means over seeds.

    Returns, per metric (psnr-rgb, bpp, rd_cost): ``d_<metric>`` (mean difference),
    ``d_<metric>_low`` / ``_high`` (paired bootstrap over images of the seed-averaged
    difference), ``d_<metric>_seed_sd`` (standard deviation over seeds of the mean difference)
    and ``d_<metric>_seeds_low`` / ``_high`` (95 % Student-t interval of the mean over seeds: the
    images' interval leaves out how much a seed moves the pair); NaN with one seed."""
    if len(kd) != len(scratch) or not kd:
        raise ValueError(f"KD and scratch need the same seeds: {len(kd)} KD results, {len(scratch)} scratch")
    pairs = [(per_image(k, lmbda), per_image(s, lmbda)) for k, s in zip(kd, scratch)]
    out: dict[str, float] = {"seeds": len(pairs)}
    for metric in ("psnr-rgb", "bpp", "rd_cost"):
        a = np.mean([k[metric].to_numpy() for k, _ in pairs], axis=0)
        b = np.mean([s.loc[k.index, metric].to_numpy() for k, s in pairs], axis=0)
        boot = paired_bootstrap(a, b)
        by_seed = [k[metric].mean() - s[metric].mean() for k, s in pairs]
        sd = float(np.std(by_seed, ddof=1)) if len(by_seed) > 1 else float("nan")
        half = stats.t.ppf(0.975, len(by_seed) - 1) * sd / np.sqrt(len(by_seed)) if len(by_seed) > 1 else float("nan")
        out.update({f"d_{metric}": boot["mean"], f"d_{metric}_low": boot["low"], f"d_{metric}_high": boot["high"],
                    f"d_{metric}_seed_sd": sd, f"d_{metric}_seeds_low": float(np.mean(by_seed) - half),
                    f"d_{metric}_seeds_high": float(np.mean(by_seed) + half)})
    return out


RULE = ("paired bootstrap over the images and, with several seeds, the seeds' t-interval, both excluding zero "
        "on the same side; one seed is never enough")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One comparison decided by the one rule (:data:`RULE`, :func:`verdict`), as a record: ``side`` ("better",
    "worse", "not established", "one seed" or "not measured"), the difference ``d`` (test minus anchor) of
    ``metric`` with the images' 95 % interval, the seeds' interval and sd (None with one seed), and the words
    for each side. ``str()`` is its one rendering, the sentence the notebooks and the report print."""

    side: str
    metric: str = "rd_cost"
    d: float = float("nan")
    images: tuple[float, float] = (float("nan"), float("nan"))
    seeds: int = 1
    seeds_interval: tuple[float, float] | None = None
    seed_sd: float | None = None
    words: tuple[str, str] = ("KD better", "scratch better")  # what "better" and "worse" are called here
    rule: str = RULE

    @property
    def decided(self) -> bool:
        """Whether the rule picked a side."""
        return self.side in ("better", "worse")

    @property
    def headline(self) -> str:
        """Its words without its numbers: "KD lower", "not established", "one seed: not established"."""
        return {"better": self.words[0], "worse": self.words[1], "one seed": "one seed: not established"}.get(
            self.side, self.side)

    def __str__(self) -> str:
        if self.decided or self.side == "not measured":
            return self.headline
        images = f"{self.d:+.4f} [{self.images[0]:+.4f}, {self.images[1]:+.4f}] over the images"
        if self.side == "one seed":
            return f"one seed: not established ({images})"
        low, high = self.seeds_interval
        return f"not established ({images}; seeds' interval [{low:+.4f}, {high:+.4f}], sd {self.seed_sd:.4f})"


def verdict(gain: dict[str, float], better: str = "KD better", worse: str = "scratch better",
            metric: str = "rd_cost") -> Verdict:
    """The one rule behind every "better / worse / not established" of the notebooks and the report,
    read off a :func:`kd_gain` (or :func:`compare`) RD-cost difference, test minus anchor: ``better``
    (negative) or ``worse`` only where the images' paired-bootstrap interval excludes zero and, with
    several seeds, the seeds' t-interval excludes it on the same side. One seed is never enough (the
    seeds' sd of a paired difference, 0.19-0.21 at N = 16 and 64, is as large as every effect here):
    "one seed: not established", with the images' interval. ``metric`` reads another difference of
    :func:`kd_gain` by the same rule ("bpp", "psnr-rgb"; ``better`` then names its negative side)."""
    d, low, high = gain[f"d_{metric}"], gain[f"d_{metric}_low"], gain[f"d_{metric}_high"]
    said = dict(metric=metric, d=d, images=(low, high), words=(better, worse))
    if not np.isfinite(d):
        return Verdict("not measured", **said)
    if gain.get("seeds", 1) < 2:
        return Verdict("one seed", **said)
    seeds = dict(seeds=int(gain["seeds"]), seed_sd=gain[f"d_{metric}_seed_sd"],
                 seeds_interval=(gain[f"d_{metric}_seeds_low"], gain[f"d_{metric}_seeds_high"]))
    side = ("better" if high < 0 and seeds["seeds_interval"][1] < 0 else
            "worse" if low > 0 and seeds["seeds_interval"][0] > 0 else "not established")
    return Verdict(side, **said, **seeds)


def headline(said: Verdict | str) -> str:
    """A :func:`verdict`'s words without its numbers (:attr:`Verdict.headline`); a plain sentence as it is."""
    return said.headline if isinstance(said, Verdict) else str(said)


def verdict_of(row, column: str, better: str = "KD better", worse: str = "scratch better") -> Verdict:
    """:func:`verdict` of one comparison column of an experiment table's row (``column`` and its
    ``_low`` / ``_high`` interval, as :func:`compare` writes them; a one-seed comparison)."""
    return verdict({"d_rd_cost": getattr(row, column), "d_rd_cost_low": getattr(row, f"{column}_low"),
                    "d_rd_cost_high": getattr(row, f"{column}_high")}, better, worse)


def mean_rd_cost(paths: list[str | Path], lmbda: float) -> float:
    """The mean over runs of each run's mean Kodak RD cost."""
    return float(np.mean([per_image(p, lmbda)["rd_cost"].mean() for p in paths]))


def run_spread(paths: list[str | Path], lmbda: float) -> float:
    """Standard deviation over independently seeded runs of one config of their mean Kodak RD cost
    (NaN with fewer than two): how far apart two single-seed runs land by chance alone."""
    costs = [per_image(p, lmbda)["rd_cost"].mean() for p in paths]
    return float(np.std(costs, ddof=1)) if len(costs) > 1 else float("nan")


def seed_noise(runs: pd.DataFrame, N: int, lmbda: float = 0.025) -> dict[str, float]:
    """How far two single-seed runs land apart by chance at size ``N``, from experiment 1's seeded
    KD/scratch pairs (``runs``: :func:`results` of experiment 1): ``paired_sd``,
    the seeds' sd of the paired KD - scratch RD cost (what a paired comparison of two variants at
    one seed can still move by), ``run_sd``, the seeds' sd of the KD run's own RD cost (what an
    unpaired one moves by), ``paired_rel``, ``paired_sd`` over the scratch runs' mean RD cost (to
    carry the spread to another lambda, whose RD costs have another scale, assuming it scales with
    them), and the ``seeds`` used. NaN with fewer than two seeded pairs."""
    rows = runs[runs.done & (runs.N == N)]
    seeds = sorted(set(rows[rows.arm == "kd"].seed) & set(rows[rows.arm == "scratch"].seed))
    kd, scratch = ([rows[(rows.arm == a) & (rows.seed == s)].path.iloc[0] for s in seeds] for a in ("kd", "scratch"))
    paired = kd_gain(kd, scratch, lmbda)["d_rd_cost_seed_sd"] if seeds else float("nan")
    scale = mean_rd_cost(scratch, lmbda) if seeds else float("nan")
    return {"paired_sd": paired, "run_sd": run_spread(kd, lmbda), "paired_rel": paired / scale, "seeds": seeds}


def family_bd(rows: pd.DataFrame, anchor: str, test: str, by: str = "arm") -> dict[str, float]:
    """BD-rate and BD-PSNR of the curve of ``rows[by] == test`` against that of ``anchor`` (points
    sorted by bpp; one point per size or lambda; seed 0); NaN, with a ``note``, where a curve is
    not monotonic."""
    curves = {}
    for arm in (anchor, test):
        points = rows[(rows[by] == arm) & (rows.seed == 0)].sort_values("bpp")
        curves[arm] = {"bpp": list(points.bpp), "psnr-rgb": list(points["psnr-rgb"])}
    if min(len(c["bpp"]) for c in curves.values()) < 2:
        return {"bd_rate_pct": float("nan"), "bd_psnr_db": float("nan"), "overlap_pct": 0.0}
    try:
        return bd_metrics(curves[anchor], curves[test])
    except ValueError as err:  # bjontegaard needs PSNR rising with rate along each curve
        return {"bd_rate_pct": float("nan"), "bd_psnr_db": float("nan"), "overlap_pct": float("nan"),
                "note": f"no BD metric: a curve is not monotonic (PSNR falls where the rate rises; {err})"}


def compare(done: pd.DataFrame, test: str, anchor: str) -> dict[str, float]:
    """Run ``test`` minus run ``anchor`` (names in ``done``'s ``name`` column, both at the same
    lambda), image by image: the :func:`kd_gain` columns for one seed. NaN where either run has
    no result yet."""
    rows = done.set_index("name")
    if test not in rows.index or anchor not in rows.index:
        return {f"d_{m}{s}": float("nan") for m in ("psnr-rgb", "bpp", "rd_cost") for s in ("", "_low", "_high")}
    if rows.loc[test, "lmbda"] != rows.loc[anchor, "lmbda"]:
        raise ValueError(f"{test} and {anchor} are trained at different lambdas; their RD costs do not compare")
    gain = kd_gain([rows.loc[test, "path"]], [rows.loc[anchor, "path"]], rows.loc[test, "lmbda"])
    return {k: v for k, v in gain.items() if k != "seeds" and not k.endswith("_seed_sd")}


def family_curve(rows: pd.DataFrame) -> dict[str, list[float]]:
    """A family of runs (or of published points) as eval_model ``results``, sorted by real bpp."""
    points = rows.sort_values("bpp")
    return {k: list(points[k]) for k in ("bpp", "bpp-estimated", "psnr-rgb") if k in points}


def bd_two_ways(anchor: dict[str, list[float]], test: dict[str, list[float]]) -> dict[str, float]:
    """BD-rate (%) and BD-PSNR (dB) of ``test`` against ``anchor`` two ways: the authors' (cubic
    polynomial fit on the estimated bpp; an anchor without estimates, like CompressAI's published
    curve, keeps its bpp) and the ``bjontegaard`` package's recommended Akima on real bpp. NaN
    where a curve has fewer than two points or is not monotonic."""
    keys = ("authors_bd_rate_pct", "authors_bd_psnr_db", "akima_bd_rate_pct", "akima_bd_psnr_db", "overlap_pct")
    if min(len(anchor.get("bpp", [])), len(test.get("bpp", []))) < 2:
        return dict.fromkeys(keys, float("nan"))
    def estimated(c):
        return {"bpp": c.get("bpp-estimated", c["bpp"]), "psnr-rgb": c["psnr-rgb"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's RankWarning: a cubic through 2-3 points
            authors = bd_metrics(estimated(anchor), estimated(test), method="cubic")
        akima = bd_metrics(anchor, test, method="akima")
    except ValueError:  # a curve whose PSNR falls where its rate rises has no BD metric
        return dict.fromkeys(keys, float("nan"))
    values = (authors["bd_rate_pct"], authors["bd_psnr_db"], akima["bd_rate_pct"], akima["bd_psnr_db"], akima["overlap_pct"])
    return dict(zip(keys, values))


def learning_curves(names: list[str], layout: Layout) -> pd.DataFrame:
    """Validation RD loss against steps of runs of the grid at ``layout``'s scale, from their committed logs
    (:func:`kdlib.experiments.log_path`): one row per validation, with the run's ``name``, ``arm``,
    ``N``, ``seed``, ``budget`` and ``finished`` (False: a parked run, still training). Runs without
    a log are left out."""
    frames, budget = [], layout.scale.name
    for name in names:
        path, finished = experiments.log_path(name, layout)
        if path is None:
            continue
        log = pd.read_csv(path, usecols=["step", "lr", "val_rd_loss"]).dropna(subset=["val_rd_loss"])
        run = grid.RUNS[name]
        frames.append(log.assign(name=name, arm=run.arm, N=run.N, seed=run.seed, budget=budget, finished=finished))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["step", "lr", "val_rd_loss", "name", "arm", "N", "seed", "budget", "finished"])


def paired_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """KD minus scratch validation RD loss at the steps both runs of a seed's pair logged: one row per
    (budget, N, seed, step), with ``d_val_rd_loss``, ``rel`` (over the scratch loss) and ``finished``
    (both runs of the pair have finished)."""
    keys = ["budget", "N", "seed", "step"]
    kd = curves[curves.arm == "kd"].set_index(keys).val_rd_loss
    scratch = curves[curves.arm == "scratch"].set_index(keys).val_rd_loss
    both = pd.concat({"kd": kd, "scratch": scratch}, axis=1).dropna().reset_index()
    both = both.join(curves.groupby(keys[:3]).finished.all(), on=keys[:3])
    return both.assign(d_val_rd_loss=both.kd - both.scratch, rel=(both.kd - both.scratch) / both.scratch)


def _against(done: pd.DataFrame, name: str, reference: str | None, prefix: str,
             d: dict[str, float] | None = None) -> dict[str, float]:
    """``name`` against ``reference`` (:func:`compare`, or ``d`` where already compared) as ``<prefix>``,
    ``<prefix>_low``, ``<prefix>_high`` (RD cost), NaN where there is no reference."""
    d = d if d is not None else compare(done, name, reference) if reference else {}
    return {prefix: d.get("d_rd_cost", np.nan), f"{prefix}_low": d.get("d_rd_cost_low", np.nan),
            f"{prefix}_high": d.get("d_rd_cost_high", np.nan)}


def weights_table(folder: str | Path) -> pd.DataFrame:
    """Experiment 3 (notebook e3_kd_weights), from the results under ``folder``: each KD weighting at N = 64 with
    its mean RD cost and rank, against the scratch twin (``vs_scratch``) and experiment 1's KD run
    (``vs_main``), paired over the images."""
    runs = results(3, Path(folder) / "experiments")
    done = runs[runs.done]
    rows = []
    for r in runs[runs.arm == "kd"].itertuples():
        run = grid.RUNS[r.name]
        rows.append({"name": r.name, "weights": run.loss_weights.label, "psnr": runs.loc[r.Index, "psnr-rgb"],
                     "bpp": r.bpp, "rd_cost": per_image(r.path, run.lmbda)["rd_cost"].mean() if r.done else np.nan,
                     **_against(done, r.name, grid.twin(r.name), "vs_scratch"),
                     **_against(done, r.name, grid.main_run(r.name), "vs_main")})
    table = pd.DataFrame(rows)
    return table.assign(rank=table.rd_cost.rank())


def hyper_table(folder: str | Path) -> pd.DataFrame:
    """Experiment 4 (notebook e4_hyper), from the results under ``folder``: each KD variant with the small
    entropy model (Z = 128) against its scratch twin, experiment 1's KD run of its N (``vs_main``, at
    lambda = 0.025) and the run that lacks only the term it tests (``without``: the run's
    ``reference`` in the grid), paired over the images."""
    runs = results(4, Path(folder) / "experiments")
    done = runs[runs.done]
    rows = []
    for r in runs[(runs.arm == "kd") & (runs.Z == 128)].itertuples():
        without = grid.RUNS[r.name].reference
        w = compare(done, r.name, without) if without else {}
        rows.append({"name": r.name, "N": r.N, "lambda": r.lmbda, "psnr": runs.loc[r.Index, "psnr-rgb"], "bpp": r.bpp,
                     **_against(done, r.name, grid.twin(r.name), "vs_scratch"),
                     **_against(done, r.name, grid.main_run(r.name), "vs_main"),
                     "without": without, **_against(done, r.name, without, "vs_without", w),
                     "d_psnr_vs_without": w.get("d_psnr-rgb", np.nan), "d_bpp_vs_without": w.get("d_bpp", np.nan)})
    return pd.DataFrame(rows)


def kld_table(folder: str | Path) -> pd.DataFrame:
    """Experiment 5 (notebook e5_kld), from the results under ``folder``: each KLD-latent student against
    its scratch twin (``vs_scratch``) and experiment 1's MSE-latent KD run of its N (``vs_mse``, and
    its bpp difference ``d_bpp_vs_mse``), paired over the images."""
    runs = results(5, Path(folder) / "experiments")
    done = runs[runs.done]
    rows = []
    for r in runs[runs.name.map(lambda n: grid.RUNS[n].experiment == 5)].itertuples():
        mse = grid.main_run(r.name)
        m = compare(done, r.name, mse) if mse else {}
        rows.append({"name": r.name, "N": r.N, "latent": r.latent, "psnr": runs.loc[r.Index, "psnr-rgb"], "bpp": r.bpp,
                     "d_bpp_vs_mse": m.get("d_bpp", np.nan), "d_bpp_vs_mse_low": m.get("d_bpp_low", np.nan),
                     "d_bpp_vs_mse_high": m.get("d_bpp_high", np.nan),
                     **_against(done, r.name, grid.twin(r.name), "vs_scratch"), **_against(done, r.name, mse, "vs_mse", m)})
    return pd.DataFrame(rows)


def size_table(folder: str | Path) -> pd.DataFrame:
    """Experiment 1 (notebook e1_size), from the results under ``folder``: per N, KD against its scratch
    twin over the seeds both arms have (:func:`kd_gain`), each seed's RD-cost difference, the
    paper's point and the verdict (:func:`verdict`)."""
    runs = results(1, Path(folder) / "experiments")
    done = runs[runs.done]
    published = pd.read_csv(PUBLISHED / "compute.csv").set_index("channels_N")
    rows = []
    for N in grid.SIZES:
        arms = {arm: done[(done.N == N) & (done.arm == arm)].sort_values("seed") for arm in ("kd", "scratch")}
        seeds = sorted(set(arms["kd"].seed) & set(arms["scratch"].seed))
        if not seeds:
            continue
        kd, scratch = (arms[a][arms[a].seed.isin(seeds)] for a in ("kd", "scratch"))
        lmbda = grid.RUNS[kd.name.iloc[0]].lmbda
        gain = kd_gain(list(kd.path), list(scratch.path), lmbda)
        by_seed = [kd_gain([k], [s], lmbda)["d_rd_cost"] for k, s in zip(kd.path, scratch.path)]
        rows.append({"N": N, "seeds": len(seeds), "kd_psnr": kd["psnr-rgb"].mean(), "kd_bpp": kd.bpp.mean(),
                     "scratch_psnr": scratch["psnr-rgb"].mean(), "scratch_bpp": scratch.bpp.mean(),
                     **{k: v for k, v in gain.items() if k != "seeds"},
                     "d_rd_cost_by_seed": " ".join(f"{d:+.3f}" for d in by_seed),
                     "paper_psnr": published.loc[N, "psnr_db"], "paper_bpp": published.loc[N, "bpp"],
                     "verdict": verdict(gain)})
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["N", "seeds", "verdict"])


def resources(folder: str | Path) -> dict[int, dict]:
    """Experiment 6's measurements (``folder/resources/*.json``, ``kdlib bench resources``) per N: the
    released model's where one is, else the untrained architecture's (size and FLOPs only)."""
    found = [read_result(p) for p in sorted((Path(folder) / "resources").glob("*.json"))]
    return {r["model"]["N"]: r for r in sorted(found, key=lambda r: r["model"].get("trained", True))}


def architecture_table(folder: str | Path) -> pd.DataFrame:
    """Experiment 6 (notebook e6_resources), per N from the teacher down: parameters, float32 parameter
    MiB and multiply-adds (encoder, hyperprior, decoder) beside the paper's, with the differences in %."""
    size = pd.read_csv(PUBLISHED / "size.csv").set_index("channels_N")
    compute = pd.read_csv(PUBLISHED / "compute.csv").set_index("channels_N")
    measured = resources(folder)
    table = pd.DataFrame([{"N": n, "params_M": r["params_M"], "paper_params_M": size.loc[n, "params_M"],
                           "MiB": r["params_MiB"], "paper_MB": size.loc[n, "memory_MB"],
                           "GMACs": r["gmacs"], "paper_GMACs": compute.loc[n, "gflops_per_frame"],
                           "GMACs_encoder": r["gmacs_encoder"], "GMACs_hyperprior": r["gmacs_hyperprior"],
                           "GMACs_decoder": r["gmacs_decoder"]}
                          for n, r in sorted(measured.items(), reverse=True)])
    if not table.empty:
        table["params_diff_pct"] = 100 * (table.params_M / table.paper_params_M - 1)
        table["GMACs_diff_pct"] = 100 * (table.GMACs / table.paper_GMACs - 1)
    return table


def trained_table(folder: str | Path) -> pd.DataFrame:
    """Experiment 6 for the released models (T5 and the students), from the teacher down: size, FLOPs,
    CPU speed at one and all threads, energy where a meter was found, Kodak PSNR and bpp
    (``folder/<name>.json``), and each against the teacher in %."""
    rows = []
    for n, r in sorted(resources(folder).items(), reverse=True):
        if not r["model"].get("trained", True):
            continue
        kodak = read_result(Path(folder) / f"{r['name']}.json")["results"]
        cpu = {t["threads"]: t for t in r["throughput"] if t["device"] == "cpu"}
        top = max(cpu)
        rows.append({"model": "teacher" if n == 128 else "student", "name": r["name"], "channels_N": n,
                     "params_M": r["params_M"], "memory_MB": r["params_buffers_MiB"] * 2**20 / 1e6,
                     "gflops_per_frame": r["gmacs"], "encode_fps_1t": cpu[1]["encode_fps"],
                     "decode_fps_1t": cpu[1]["decode_fps"], f"encode_fps_{top}t": cpu[top]["encode_fps"],
                     f"decode_fps_{top}t": cpu[top]["decode_fps"],
                     "ms_per_frame_1t": 1000 / cpu[1]["encode_fps"] + 1000 / cpu[1]["decode_fps"],
                     "energy_mj_per_frame": cpu[1]["encode_mj_per_frame"],
                     "psnr_db": kodak["psnr-rgb"][0], "bpp": kodak["bpp"][0]})
    table = pd.DataFrame(rows)
    if rows and rows[0]["channels_N"] == 128:
        for column in ("params_M", "memory_MB", "gflops_per_frame", "encode_fps_1t", "decode_fps_1t", "psnr_db", "bpp"):
            table[f"{column}_delta_pct"] = 100 * (table[column] / table[column].iloc[0] - 1)
    return table


def paper_layout(trained: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``trained`` (:func:`trained_table`) in the layout of one of the paper's tables: model, N, the
    ``columns`` and their changes against the teacher, then PSNR and bpp."""
    keep = (["model", "channels_N"] + [c for c in columns if c in trained]
            + [f"{c}_delta_pct" for c in columns if f"{c}_delta_pct" in trained]
            + [c for c in ("psnr_db", "psnr_db_delta_pct", "bpp", "bpp_delta_pct") if c in trained])
    return trained[list(dict.fromkeys(keep))].round(4)


def quality_table() -> pd.DataFrame:
    """The paper's quality -> lambda table beside the lambdas in CompressAI's own code (the training
    lambdas of its variable-rate hyperprior, the same qualities 1-8)."""
    table = pd.read_csv(PUBLISHED / "quality_lambda.csv")
    table["compressai_lambda"] = ScaleHyperpriorVbr(8, 8).lmbda[:len(table)]
    return table


FINISHED = ("stopped (plateau rule)", "step cap", "finished")  # kdlib.experiments.training_states


# What the long tier's seeds can tell (issue 26, revised by issue 40). Its rule also stopped adding seeds
# once their sd was <= 0.05; an sd from three pairs is itself noisy (N = 32: 0.046, its own 95 % interval
# [0.024, 0.29]), so that branch is gone: the seeds are enough only when their interval excludes zero or
# bounds the effect within +-BOUND_REL of scratch's RD cost, and otherwise the rule says how many pairs
# that would take at the measured sd. New tiers declare their seeds before training (EQUAL_SEEDS).
BOUND_REL, MIN_SEEDS, MAX_SEEDS = 0.02, 3, 5


def pairs_needed(sd: float, bound: float, power: float = 0.5) -> int:
    """Pairs whose seeds' 95 % interval (t) has a half-width of at most ``bound`` at this ``sd``; with
    ``power`` above 0.5, pairs that detect an effect of ``bound`` that often (:func:`detectable`)."""
    n = 2
    while detectable(sd, n, power) > bound:
        n += 1
    return n


def detectable(sd: float, n: int, power: float = 0.5) -> float:
    """The smallest effect ``n`` pairs detect at this seeds' ``sd`` with the given power: at 0.5, the seeds'
    interval's half-width (an effect that large is found half the time); at 0.8, (t_0.975 + t_0.8) sd / sqrt(n)."""
    return (stats.t.ppf(0.975, n - 1) + (stats.t.ppf(power, n - 1) if power > 0.5 else 0)) * sd / np.sqrt(n)


def seed_rule(gain: dict[str, float], scratch_cost: float) -> str:
    """What the seeds of a :func:`kd_gain` can tell: enough, or how many pairs a +-BOUND_REL answer needs."""
    n, low, high, sd = (gain["seeds"], gain["d_rd_cost_seeds_low"], gain["d_rd_cost_seeds_high"],
                        gain["d_rd_cost_seed_sd"])
    if n < MIN_SEEDS:
        return f"add seeds: {n} of the {MIN_SEEDS} pairs declared"
    if low > 0 or high < 0:
        return "enough: the seeds' interval excludes zero"
    if max(-low, high) <= BOUND_REL * scratch_cost:
        return f"enough: the seeds' interval bounds the effect within +-{BOUND_REL:.0%} of the RD cost"
    return (f"not enough: the seeds' interval spans zero and is wider than +-{BOUND_REL:.0%} of the RD cost; "
            f"an interval that narrow takes about {pairs_needed(sd, BOUND_REL * scratch_cost)} pairs at their sd "
            f"({sd:.3f}, itself from {n} pairs: a rough count), 80 % power against a {BOUND_REL:.0%} effect "
            f"about {pairs_needed(sd, BOUND_REL * scratch_cost, 0.8)}")


def converged_table(status: pd.DataFrame, sizes: tuple[int, ...] = (16, 32)) -> pd.DataFrame:
    """The long tier's verdict (notebook e1b_converged; plateau-stopped runs, not converged), per N: KD against
    its scratch twin over the seeds whose two arms have both finished (``status``: :func:`results` merged with
    :func:`kdlib.experiments.training_states`), with the smallest effect these seeds can detect (absolute and
    in % of scratch's RD cost), what :func:`seed_rule` says, and PSNR and bpp with their intervals and
    :func:`verdict` ("KD lower" / "KD higher": where KD moves the operating point, whatever the RD cost)."""
    rows = []
    for n in sizes:
        done = status[(status.N == n) & status.done & status.state.isin(FINISHED)]
        seeds = sorted(set(done[done.arm == "kd"].seed) & set(done[done.arm == "scratch"].seed))
        if not seeds:
            rows.append({"N": n, "seeds": 0, "verdict": "no pair has finished yet"})
            continue
        kd = [done[(done.arm == "kd") & (done.seed == s)].path.iloc[0] for s in seeds]
        scratch = [done[(done.arm == "scratch") & (done.seed == s)].path.iloc[0] for s in seeds]
        lmbda = grid.RUNS[done.name.iloc[0]].lmbda
        gain = kd_gain(kd, scratch, lmbda)
        half = (gain["d_rd_cost_seeds_high"] - gain["d_rd_cost_seeds_low"]) / 2
        cost = mean_rd_cost(scratch, lmbda)
        rows.append({"N": n, "seeds": len(seeds), **{k: gain[k] for k in (
            "d_rd_cost", "d_rd_cost_low", "d_rd_cost_high", "d_rd_cost_seeds_low", "d_rd_cost_seeds_high",
            "d_rd_cost_seed_sd")}, "detectable": half, "detectable_pct": 100 * half / cost,
            "detectable_80_pct": 100 * detectable(gain["d_rd_cost_seed_sd"], len(seeds), 0.8) / cost,
            "verdict": verdict(gain), "seed_rule": seed_rule(gain, cost),
            **{f"d_{m}{k}": gain[f"d_{m}{k}"] for m in ("psnr-rgb", "bpp")
               for k in ("", "_low", "_high", "_seeds_low", "_seeds_high")},
            "psnr_verdict": verdict(gain, "KD lower", "KD higher", "psnr-rgb"),
            "bpp_verdict": verdict(gain, "KD lower", "KD higher", "bpp")})
    return pd.DataFrame(rows)


def tier_releases(layout: Layout) -> pd.DataFrame:
    """The long and equal tiers' releases (:data:`kdlib.grid.TIER_RELEASES`, declared in advance) beside the
    paper grid's release of the same size: steps, how the run ended, Kodak PSNR, bpp and RD cost (real
    bitstreams), and whether it is released (:func:`kdlib.experiments.release_student`'s rule), under
    ``layout``'s root."""
    from kdlib.registry import Manifest

    manifest, rows = Manifest(layout.checkpoints), []
    for tier, releases in grid.TIER_RELEASES.items():
        for name, as_name in releases.items():
            run = grid.RUNS[name]
            config, end = run.config(tier), (manifest.get(as_name) or {}).get("end") or {}
            ended = ("stop rule" if config.converge_lr else "every step") if experiments.ended_by_rule(config, end) else "step cap"
            for release, budget, path, how in (
                    (run.release, "cpu", layout.at("cpu").results / f"{run.release}.json", "budget spent"),
                    (as_name, tier, layout.at(tier).experiments / f"{name}.json", ended)):
                entry = manifest.get(release) or {}
                means = per_image(path, run.lmbda).mean() if path.exists() else {}
                rows.append({"N": run.N, "name": release, "budget": budget, "released": bool(entry),
                             "steps": entry.get("steps"), "ended": how if entry else None,
                             **{k: means.get(k) for k in ("psnr-rgb", "bpp", "rd_cost")}})
    return pd.DataFrame(rows).astype({"steps": "Int64"})  # whole steps, <NA> where not released


def training_status(number: int, layout: Layout) -> pd.DataFrame:
    """Experiment ``number``'s runs at ``layout``'s scale (:func:`results`) with how far each has trained
    (:func:`kdlib.experiments.training_states`: state, steps, last learning rate)."""
    runs = results(number, layout.experiments, layout.scale.name)
    return runs.merge(experiments.training_states(runs.name, layout), on="name")


LAMBDA_COMPARISONS = [("KD from T5", "CompressAI q1-q5"), ("KD from T1", "CompressAI q1-q5"), ("scratch", "CompressAI q1-q5"),
                      ("KD from T5", "scratch"), ("KD from T1", "scratch"), ("KD from T1", "KD from T5")]


def lambda_families(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Experiment 2's runs (:func:`results`) as its three families across lambda."""
    return {"KD from T5": runs[runs.teacher == "T5"], "KD from T1": runs[runs.teacher == "T1"],
            "scratch": runs[runs.arm == "scratch"]}


def lambda_curves(runs: pd.DataFrame) -> dict[str, dict[str, list[float]]]:
    """Each family's RD curve over its finished runs (:func:`family_curve`), and CompressAI's published
    q1-q5 curve (the five lowest rates of its bmshj2018-hyperprior JSON)."""
    curves = {name: family_curve(rows[rows.done]) for name, rows in lambda_families(runs).items()}
    r = read_result(COMPRESSAI_CURVE)["results"]
    points = sorted(zip(r["bpp"], r["psnr-rgb"]))[:5]
    curves["CompressAI q1-q5"] = {"bpp": [b for b, _ in points], "psnr-rgb": [p for _, p in points]}
    return curves


def lambda_table(folder: str | Path) -> pd.DataFrame:
    """Experiment 2 (notebook e2_lambda), from the results under ``folder``: BD-rate and BD-PSNR of each
    family against CompressAI's curve and against each other (:func:`bd_two_ways`), beside the
    paper's (``paper/published/bd_lambda.csv``)."""
    curves = lambda_curves(results(2, Path(folder) / "experiments"))
    published = {(r.test, r.anchor): (r.bd_rate_pct, r.bd_psnr_db)
                 for r in pd.read_csv(PUBLISHED / "bd_lambda.csv").itertuples()}
    return pd.DataFrame([{"test": test, "anchor": anchor,
                          "points": f"{len(curves[test].get('bpp', []))} vs {len(curves[anchor]['bpp'])}",
                          **bd_two_ways(curves[anchor], curves[test]),
                          "paper_bd_rate_pct": published.get((test, anchor), (np.nan, np.nan))[0],
                          "paper_bd_psnr_db": published.get((test, anchor), (np.nan, np.nan))[1]}
                         for test, anchor in LAMBDA_COMPARISONS])


def lambda_seed_sensitivity(folder: str | Path) -> pd.DataFrame:
    """Experiment 2's BD of each KD family against the scratch family with each seed's experiment-1 pair
    at lambda = 0.025 (N = 64) in place of seed 0's, which the grid's families share (KD from T5 both
    of its points, KD from T1 the scratch one): how far one seed moves the BD (one row per seed whose
    pair landed and family)."""
    folder = Path(folder) / "experiments"
    own, e1 = results(2, folder), results(1, folder)
    rest = own[~own.name.isin(e1.name)]
    rows = []
    for seed in sorted(e1[(e1.N == 64) & e1.done].seed.unique()):
        pair = e1[(e1.N == 64) & (e1.seed == seed) & (e1.lmbda == 0.025)]
        if len(pair) == 2 and pair.done.all():
            curves = lambda_curves(pd.concat([rest, pair], ignore_index=True))
            rows += [{"seed": int(seed), "test": test, **bd_two_ways(curves["scratch"], curves[test])}
                     for test in ("KD from T5", "KD from T1")]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["seed", "test", "authors_bd_rate_pct"])


def released_against_codecs(results_folder: str | Path, models: list[str], codecs: list[str]) -> pd.DataFrame:
    """Each released model on Kodak (real bitstreams: ``<results>/<model>.json``) against the classical
    codecs' curves (``<results>/codecs/<codec>.json``) at the model's own rate: its PSNR minus the codec's
    there (dB, interpolated in log bpp; NaN where the model's rate is outside the codec's sweep).
    One row per model: model, bpp, psnr and ``<codec>_db`` per codec."""
    from kdlib.metrics import gap_to_curve

    folder = Path(results_folder)
    curves = {c: pd.DataFrame(read_result(folder / "codecs" / f"{c}.json")["results"])[["bpp", "psnr-rgb"]]
              .rename(columns={"psnr-rgb": "psnr"}).sort_values("bpp") for c in codecs}
    rows = []
    for model in models:
        means = read_result(folder / f"{model}.json")["results"]
        bpp, psnr = means["bpp"][0], means["psnr-rgb"][0]
        rows.append({"model": model, "bpp": bpp, "psnr": psnr,
                     **{f"{c}_db": gap_to_curve(curve, bpp, psnr)["psnr_gap_db"] for c, curve in curves.items()}})
    return pd.DataFrame(rows)


def budget_curve(results_folder: str | Path, sizes: tuple[int, ...] = (16, 64)) -> pd.DataFrame:
    """The equal-step tier's budget curve (issue 40): per N and budget (its branches and full length), KD
    minus scratch over the seeds whose two arms both have a Kodak result in ``results_folder`` (the tier's
    ``experiments/``): RD cost, PSNR and bpp with the images' and seeds' intervals (:func:`kd_gain`), and
    the one rule's :func:`verdict` (of PSNR and bpp too, in :data:`MOVE_WORDS`); each arm's mean Kodak PSNR
    and bpp over those seeds (``kd_psnr``, ``kd_bpp``, ``scratch_psnr``, ``scratch_bpp``, as :func:`size_table`
    names them: the student against its teacher); and once scratch's lambda ends of that budget have
    landed, :func:`equal_rate`'s two readings (``verdict_at_rate``: PSNR at KD's rate; ``verdict_at_psnr``:
    rate at KD's PSNR). Every point is a decayed model; the seeds counted are those declared
    (:data:`kdlib.grid.EQUAL_SEEDS`) that have landed."""
    folder, rows = Path(results_folder), []
    tier = [grid.RUNS[n] for n in grid.EQUAL]
    for n in sizes:
        for fraction in (*sorted(SCALES["equal"].branches), 1.0):
            kd = [r for r in tier if r.arm == "kd" and r.N == n and r.fraction == fraction]
            pairs = [(folder / f"{r.name}.json", folder / f"{grid.twin(r.name)}.json") for r in kd]
            pairs = [(k, s) for k, s in pairs if k.exists() and s.exists()]
            if not pairs:
                continue
            gain = kd_gain([k for k, _ in pairs], [s for _, s in pairs], kd[0].lmbda)
            rate = equal_rate(folder, n, fraction=fraction)
            means = {f"{arm}_{m.split('-')[0]}": np.mean([per_image(files[i], kd[0].lmbda)[m].mean() for files in pairs])
                     for i, arm in enumerate(("kd", "scratch")) for m in ("psnr-rgb", "bpp")}  # each arm's Kodak means
            rows.append({"N": n, "steps": kd[0].config("equal").steps, "seeds": len(pairs), **means,
                         **{k: v for k, v in gain.items() if k.startswith("d_")}, "verdict": verdict(gain),
                         "rate_seeds": rate["seeds"], "ends_outside_pct": rate.get("ends_outside_pct", np.nan),
                         **{k: v for k, v in rate.items() if k.startswith(("d_psnr_at", "d_rate_at"))},
                         **{column: verdict(rate, *EQUAL_RATE_WORDS[m], m) if rate["seeds"] else ""
                            for m, column in zip(EQUAL_RATE, ("verdict_at_rate", "verdict_at_psnr"))},
                         **{f"{m.split('-')[0]}_verdict": verdict(gain, *words, m) for m, words in MOVE_WORDS.items()}})
    return pd.DataFrame(rows)


MOVE_WORDS = {"psnr-rgb": ("KD lower (worse)", "KD higher (better)"),  # the budget curve's PSNR and bpp verdicts
              "bpp": ("KD lower (fewer bits)", "KD higher (more bits)")}
EQUAL_RATE = ("psnr_at_rate", "rate_at_psnr")  # equal_rate's two readings: dB at KD's rate, % at KD's PSNR
EQUAL_RATE_WORDS = {"psnr_at_rate": ("KD under scratch's curve", "KD above scratch's curve"),  # negative, positive
                    "rate_at_psnr": ("KD fewer bits", "KD more bits")}


def equal_rate(results_folder: str | Path, N: int = 16, samples: int = 10_000, seed: int = 0,
               fraction: float = 1.0, interpolation: str = "linear", ends_draws: int = 2_000) -> dict[str, Any]:
    """KD's points of the equal tier read against scratch's own RD curve (issue 40, item 4): the full-length
    ones, or with ``fraction`` those of a branch (every point of the curve then at that budget).

    Each seed's curve joins scratch at lambda 0.013 and 0.0483 (:data:`kdlib.grid.EQUAL_LAMBDAS`, seed 0: one
    seed, as declared) and the seed's own scratch twin at 0.025, piecewise linear in log bpp over Kodak means
    (``interpolation="pchip"``: a shape-preserving cubic instead, :func:`curve_gaps`). Per seed:
    ``psnr_at_rate``, KD's PSNR minus the curve's at KD's rate (dB), and ``rate_at_psnr``, KD's rate against
    the rate the curve needs for KD's PSNR (%), each seed's in ``<metric>_by_seed``. Returned as :func:`kd_gain`
    returns its metrics (``d_<metric>``, the images' 95 % interval from resampling the same images for every
    point, the seeds' sd and t-interval), for :func:`verdict`. The seeds' interval holds the spread of each seed's KD point and twin with the one-seed
    ends held fixed: the ends' own training noise, which weighs on every seed alike, and the straight lines
    between the points (under a concave RD curve, in KD's favour; the PCHIP reading measures how much) are in
    neither interval. A sensitivity reading, not the rule's, allows for the ends' noise: ``d_<metric>_ends_sd``,
    the sd of the mean reading when the ends move by draws from the twins' seed-to-seed spread
    (:func:`_ends_moved`; ``ends_outside_pct``: the draws that left a curve, left out), and
    ``d_<metric>_wide_low`` / ``_high``, the seeds' t-interval widened by it (half-widths added in quadrature).
    ``outside``: the seeds whose KD point lies outside its curve, or whose curve does not rise in both rate and
    PSNR (no reading; the means are then NaN), and
    ``outside_pct``: the share of the images' resamples where any does (the images' interval is then NaN).
    ``seeds`` is 0, with ``missing`` naming the results not landed, until the curve can be drawn."""
    ends, pairs, missing = equal_rate_files(results_folder, N, fraction)
    if missing:
        return {"seeds": 0, "missing": missing}
    lmbda = grid.RUNS[pairs[0][0].stem].lmbda
    low, high = (per_image(p, lm) for p, lm in zip(ends, grid.EQUAL_LAMBDAS))
    images = low.index
    table = lambda path: per_image(path, lmbda).loc[images, ["bpp", "psnr-rgb"]].to_numpy()  # noqa: E731
    kd_points = np.stack([table(k) for k, _ in pairs])  # seeds x images x (bpp, psnr)
    curves = np.stack([np.stack([low.loc[images, ["bpp", "psnr-rgb"]].to_numpy(), table(s),
                                 high.loc[images, ["bpp", "psnr-rgb"]].to_numpy()]) for _, s in pairs])

    def read(k: np.ndarray, c: np.ndarray) -> np.ndarray:  # seeds x 2: each seed's readings of KD means k, curves c
        return np.array([curve_gaps(c[i, :, 0], c[i, :, 1], *k[i], interpolation) if _rising(c[i])
                         else (np.nan, np.nan) for i in range(len(k))])

    def gaps(rows: np.ndarray) -> np.ndarray:  # the readings over these images' means
        return read(kd_points[:, rows].mean(axis=1), curves[:, :, rows].mean(axis=2))

    by_seed = gaps(np.arange(len(images)))
    rng = np.random.default_rng(seed)
    boot = np.array([gaps(rng.integers(0, len(images), len(images))).mean(axis=0) for _ in range(samples)])
    moved = _ends_moved(kd_points.mean(axis=1), curves.mean(axis=2), read, rng, ends_draws)
    out: dict[str, Any] = {"seeds": len(pairs), "outside_pct": float(100 * np.isnan(boot).any(axis=1).mean()),
                           "outside": [grid.RUNS[k.stem].seed for (k, _), g in zip(pairs, by_seed) if np.isnan(g).any()],
                           "ends_outside_pct": float(100 * np.isnan(moved).any(axis=1).mean() if len(moved) else np.nan)}
    for j, metric in enumerate(EQUAL_RATE):
        values = by_seed[:, j]
        sd = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
        half = stats.t.ppf(0.975, len(values) - 1) * sd / np.sqrt(len(values)) if len(values) > 1 else float("nan")
        b_low, b_high = np.percentile(boot[:, j], [2.5, 97.5])  # NaN where any resample leaves the curve
        landed = moved[~np.isnan(moved[:, j]), j]  # the draws that kept every curve
        ends_sd = float(np.std(landed, ddof=1)) if len(landed) > 1 else float("nan")
        wide = float(np.hypot(half, stats.norm.ppf(0.975) * ends_sd))
        out.update({f"d_{metric}": float(values.mean()), f"d_{metric}_low": float(b_low),
                    f"d_{metric}_high": float(b_high), f"d_{metric}_seed_sd": sd,
                    f"d_{metric}_seeds_low": float(values.mean() - half), f"d_{metric}_seeds_high": float(values.mean() + half),
                    f"d_{metric}_ends_sd": ends_sd, f"d_{metric}_wide_low": float(values.mean() - wide),
                    f"d_{metric}_wide_high": float(values.mean() + wide), f"{metric}_by_seed": values.tolist()})
    return out


def _ends_moved(kd: np.ndarray, curves: np.ndarray, read: Callable[[np.ndarray, np.ndarray], np.ndarray],
                rng: np.random.Generator, draws: int) -> np.ndarray:
    """:func:`equal_rate`'s mean readings (draws x 2) with the two one-seed ends moved, each by its own draw
    from the twins' seed-to-seed covariance of (log bpp, PSNR), the same in every seed's curve (they share the
    ends): how far the ends' own training noise, if it is the size of the twins', could move the reading.
    Empty with fewer than three seeds or no draws."""
    if len(kd) < 3 or not draws:
        return np.empty((0, 2))
    spread = np.cov(np.log(curves[:, 1, 0]), curves[:, 1, 1])
    out = []
    for shift in rng.multivariate_normal(np.zeros(2), spread, size=(draws, 2)):  # per draw: one shift per end
        c = curves.copy()
        c[:, [0, 2], 0] *= np.exp(shift[:, 0])
        c[:, [0, 2], 1] += shift[:, 1]
        out.append(read(kd, c).mean(axis=0))
    return np.array(out)


def _rising(points: np.ndarray) -> bool:
    """Whether RD points (rows of bpp, PSNR, in lambda order) rise in both: a curve to read a point against."""
    return bool(np.all(np.diff(points[:, 0]) > 0) and np.all(np.diff(points[:, 1]) > 0))


def equal_rate_files(results_folder: str | Path, N: int = 16, fraction: float = 1.0
                     ) -> tuple[list[Path], list[tuple[Path, Path]], list[str]]:
    """The results behind :func:`equal_rate`: scratch's one-seed ends of the curve (lambda 0.013 and 0.0483), the
    landed (KD, scratch twin) pairs of the equal tier at size ``N``, all at ``fraction`` of the tier's length
    (1: full length; else a branch), and the names still missing."""
    folder, tier = Path(results_folder), [grid.RUNS[n] for n in grid.EQUAL if grid.RUNS[n].fraction == fraction]
    ends = [folder / f"{r.name}.json" for lmbda in grid.EQUAL_LAMBDAS for r in tier
            if r.teacher is None and r.N == N and r.lmbda == lmbda]
    kd = [r for r in tier if r.arm == "kd" and r.N == N]
    pairs = [(folder / f"{r.name}.json", folder / f"{grid.twin(r.name)}.json") for r in kd]
    pairs = [(k, s) for k, s in pairs if k.exists() and s.exists()]
    missing = [p.stem for p in ends if not p.exists()]
    if len(ends) < len(grid.EQUAL_LAMBDAS):
        missing.append(f"scratch at lambda {', '.join(map(str, grid.EQUAL_LAMBDAS))} (declared at N = 16 only)")
    length = "full-length" if fraction == 1 else f"{fraction:g}-length"
    return ends, pairs, missing + ([] if pairs else [f"a {length} KD pair of the equal tier at N = {N}"])


def equal_rate_points(results_folder: str | Path, N: int = 16) -> pd.DataFrame:
    """The Kodak means of :func:`equal_rate`'s points, one row each: name, role ("end": scratch's one-seed ends,
    "twin", "kd"), seed, lambda, bpp, psnr-rgb (empty until the curve can be drawn)."""
    ends, pairs, missing = equal_rate_files(results_folder, N)
    if missing:
        return pd.DataFrame(columns=["name", "role", "seed", "lambda", "bpp", "psnr-rgb"])
    rows = []
    for role, path in [("end", p) for p in ends] + [r for k, s in pairs for r in (("kd", k), ("twin", s))]:
        run = grid.RUNS[path.stem]
        means = per_image(path, run.lmbda)[["bpp", "psnr-rgb"]].mean()
        rows.append({"name": run.name, "role": role, "seed": run.seed, "lambda": run.lmbda, **means.to_dict()})
    return pd.DataFrame(rows)
