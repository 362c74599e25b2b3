"""Read eval_model JSON results into tables and draw rate-distortion figures."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns

from kdlib.metrics import msssim_db, read_result


def read_curve(path: str | Path, label: str | None = None) -> pd.DataFrame:
    """One eval_model JSON as a table: a row per RD point (label, bpp, psnr, ms-ssim, ms-ssim-db)."""
    result = read_result(path)
    r = result["results"]
    frame = pd.DataFrame({"bpp": r["bpp"], "psnr": r["psnr-rgb"], "ms-ssim": r["ms-ssim-rgb"]})
    frame["ms-ssim-db"] = frame["ms-ssim"].map(msssim_db)
    frame.insert(0, "label", label or result["name"])
    return frame.sort_values("bpp", ignore_index=True)


def rd_figure(curves: pd.DataFrame, title: str = "", xlim: tuple[float, float] | None = None,
              points: pd.DataFrame | None = None) -> plt.Figure:
    """PSNR and MS-SSIM (dB) against bpp, one line per ``label``; ``points`` (``label``, ``bpp``,
    ``psnr``, ``ms-ssim-db``): single models, drawn as labelled black markers."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, metric, ylabel in [(axes[0], "psnr", "PSNR (dB)"), (axes[1], "ms-ssim-db", "MS-SSIM (dB)")]:
        sns.lineplot(data=curves, x="bpp", y=metric, hue="label", marker="o", ax=ax, sort=False)
        if points is not None and len(points):
            ax.scatter(points.bpp, points[metric], color="black", marker="*", s=90, zorder=5, label="ours (Kodak)")
            for label, x, y in zip(points.label, points.bpp, points[metric]):
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -10), fontsize="x-small")
        ax.set(xlabel="bit rate (bpp)", ylabel=ylabel)
        if xlim:
            ax.set_xlim(*xlim)
    for ax in axes:
        ax.get_legend().remove()
    fig.suptitle(title)
    legend_below(fig, axes[0])
    return fig


SIZE_COLORS = dict(zip((16, 32, 64, 96, 112), sns.color_palette("tab10", 10)[2:7]))  # the teacher is orange


def size_color(n: int) -> Any:
    """The colour of student size ``n`` (N) in every figure."""
    return SIZE_COLORS[int(n)]


def legend_below(fig: plt.Figure, ax: plt.Axes, columns: int = 3) -> None:
    """``ax``'s legend under the panels, off the data, and the layout tightened around it."""
    handles, labels = ax.get_legend_handles_labels()
    rows = -(-len(labels) // columns)
    fig.legend(handles, labels, loc="lower center", ncol=min(columns, len(labels)), fontsize="small", frameon=False,
               bbox_to_anchor=(0.5, 0))
    fig.tight_layout(rect=(0, 0.02 + 0.045 * rows, 1, 1))


def zoom(ax: plt.Axes, x: pd.Series, y: pd.Series, pad: float = 0.08) -> None:
    """Limit ``ax`` to the points that matter (``x``, ``y``) with ``pad`` of their span on each side: a
    reference curve reaching far beyond them is cut at the frame instead of shrinking them to a corner."""
    for values, setter in ((x, ax.set_xlim), (y, ax.set_ylim)):
        low, high = float(np.min(values)), float(np.max(values))
        span = (high - low) or abs(high) or 1.0
        setter(low - pad * span, high + pad * span)


def place_labels(ax: plt.Axes, labels: list[tuple[str, float, float, Any]]) -> None:
    """Write each ``(text, x, y, colour)`` beside its point where it overlaps no label already
    written and no other point: the first free offset of a few around the point (in points),
    else the least crowded one."""
    offsets = [(5, -11), (5, 4), (-5, 4), (-5, -11), (5, -20), (5, 13), (-5, 13), (-5, -20)]
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    points = [ax.transData.transform((x, y)) for _, x, y, _ in labels]
    taken: list[Any] = []
    for text, x, y, color in labels:
        best, best_clash = None, None
        for dx, dy in offsets:
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize="x-small",
                                color=color, ha="left" if dx > 0 else "right")
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            clash = sum(box.overlaps(t) for t in taken) + sum(box.contains(px, py) for px, py in points)
            if best_clash is None or clash < best_clash:
                if best is not None:
                    best.remove()
                best, best_clash, best_box = label, clash, box
            else:
                label.remove()
            if clash == 0:
                break
        taken.append(best_box)


def speed_figure(speed: pd.DataFrame, title: str = "") -> plt.Figure:
    """Encode and decode frames/s against bpp, one line per ``codec`` (log scale)."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, column in zip(axes, ["encode", "decode"]):
        sns.lineplot(data=speed, x="bpp", y=column, hue="codec", marker="o", ax=ax, sort=False)
        ax.set(yscale="log", xlabel="bit rate (bpp)", ylabel="frames per second", title=column)
    axes[1].get_legend().remove()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def codec_speed_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Encode and decode images/s of our path and CompressAI's, per model, from ``kdlib bench
    codec``'s CSV; the ratio is written above our bars."""
    sns.set_theme(style="whitegrid", context="notebook")
    ours = table.path.str.startswith("kdlib")
    rows = table[ours | table.path.str.startswith("CompressAI")].assign(path=lambda t: t.path.str.split(" ").str[0])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, column in zip(axes, ["encode", "decode"]):
        sns.barplot(data=rows, x="model", y=f"{column}_img_s", hue="path", ax=ax)
        for bar, ratio in zip(ax.containers[-1], table.loc[ours, f"{column}_ratio"]):
            ax.annotate(f"{ratio:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize="small")
        ax.set(xlabel=None, ylabel="images per second", title=column)
    axes[1].get_legend().remove()
    axes[0].legend(title=None, fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def students_rd_figure(points: pd.DataFrame, curve: pd.DataFrame, title: str = "") -> plt.Figure:
    """The paper's student figures: PSNR and MS-SSIM (dB) against bpp for labelled points over a
    dashed reference curve (``curve``: bpp, psnr, ms-ssim-db, label). ``points``: label, bpp,
    psnr, ms-ssim-db, ``kind`` ("teacher", "kd" or "scratch"; scratch points are hollow in
    their KD twin's colour) and ``color_key`` (the size or lambda that pairs a KD point with
    its twin). Repeated labels (seeds) are drawn each time, named once; an optional ``tag`` (e.g. the
    seed) is written beside each point. The panels are zoomed on the points (:func:`zoom`)."""
    sns.set_theme(style="whitegrid", context="notebook")
    keys = list(dict.fromkeys(points.loc[points.kind != "teacher", "color_key"]))
    colors = {**dict(zip(keys, sns.color_palette("tab10", 10)[2:] * 2)),  # blue and orange: curve and teacher
              **{k: size_color(k) for k in keys if k in SIZE_COLORS}}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, metric, ylabel in [(axes[0], "psnr", "PSNR (dB)"), (axes[1], "ms-ssim-db", "MS-SSIM (dB)")]:
        ax.plot(curve.bpp, curve[metric], "o--", color="tab:blue", lw=1, ms=4, label=curve.label.iloc[0])
        named = set()
        for _, row in points.iterrows():
            color = "tab:orange" if row.kind == "teacher" else colors[row.color_key]
            style = dict(marker="s" if row.kind == "teacher" else "o", ms=8, ls="none", color=color,
                         mfc="none" if row.kind == "scratch" else color, mew=1.5)
            ax.plot(row.bpp, row[metric], label=None if row.label in named else row.label, **style)
            named.add(row.label)
        ax.set(xlabel="bit rate (bpp)", ylabel=ylabel)
        zoom(ax, points.bpp, points[metric])
    fig.suptitle(title)
    legend_below(fig, axes[0], columns=4)
    if "tag" in points:  # after the layout: labels are placed in display space
        tagged = points[points.tag.fillna("").astype(bool)]
        for ax, metric in zip(axes, ("psnr", "ms-ssim-db")):
            place_labels(ax, [(r.tag, r.bpp, r[metric], colors.get(r.color_key, "black")) for _, r in tagged.iterrows()])
    return fig


def families_figure(points: pd.DataFrame, curve: pd.DataFrame, title: str = "") -> plt.Figure:
    """The paper's RD figures of experiments 2-5: PSNR and MS-SSIM (dB) against bpp, each
    ``family`` of points (a lambda sweep, a size sweep, or one variant) joined by a dashed line
    in its own colour, teachers (``kind == "teacher"``) as squares, over the dashed reference
    ``curve`` (bpp, psnr, ms-ssim-db, label). ``points``: family, kind, bpp, psnr, ms-ssim-db and
    an optional ``tag`` written beside each point (e.g. its N or lambda)."""
    sns.set_theme(style="whitegrid", context="notebook")
    families = list(dict.fromkeys(points.loc[points.kind != "teacher", "family"]))
    colors = dict(zip(families, sns.color_palette("tab10", 10)[2:] + sns.color_palette("Dark2", 8)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, metric, ylabel in [(axes[0], "psnr", "PSNR (dB)"), (axes[1], "ms-ssim-db", "MS-SSIM (dB)")]:
        ax.plot(curve.bpp, curve[metric], "o--", color="tab:blue", lw=1, ms=4, label=curve.label.iloc[0])
        for family in families:
            rows = points[(points.family == family) & (points.kind != "teacher")].sort_values("bpp")
            ax.plot(rows.bpp, rows[metric], "o--", lw=1, ms=7, color=colors[family], label=family)
        teachers = points[points.kind == "teacher"]
        for (label, row), color in zip(teachers.set_index("family").iterrows(), ("tab:orange", "tab:brown", "tab:pink")):
            ax.plot(row.bpp, row[metric], "s", ms=8, color=color, label=label)
        ax.set(xlabel="bit rate (bpp)", ylabel=ylabel)
        zoom(ax, points.bpp, points[metric], pad=0.12)  # room for the labels of the outer points
    fig.suptitle(title)
    legend_below(fig, axes[0])
    if "tag" in points:  # after the layout: labels are placed in display space
        tagged = points[(points.kind != "teacher") & points.tag.astype(bool)]
        for ax, metric in zip(axes, ("psnr", "ms-ssim-db")):
            place_labels(ax, [(r.tag, r.bpp, r[metric], colors[r.family]) for _, r in tagged.iterrows()])
    return fig


def resource_figure(points: pd.DataFrame, resource: str, xlabel: str, curve: pd.DataFrame | None = None,
                    note: str = "", published: pd.DataFrame | None = None, published_label: str = "",
                    title: str = "") -> plt.Figure:
    """PSNR and bit rate against one resource (the paper's ``kd_lic_parameters`` .. ``_energy``).

    ``points``: label, kind ("teacher" or a student arm), ``resource``, psnr, bpp. ``curve``:
    CompressAI's q1-q5 (psnr, bpp), drawn at the teacher's resource (one architecture). With no
    finite resource value (e.g. energy without a meter) the panels say ``note`` instead.
    ``published``: the paper's own points (``resource``, psnr, bpp), drawn as black crosses."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    finite = points[np.isfinite(points[resource].astype(float))]
    colors = dict(zip(finite.label, sns.color_palette("tab10", 10)[2:] * 2))
    if "channels_N" in finite:  # one colour per size in every figure
        colors.update({label: size_color(n) for label, n in zip(finite.label, finite.channels_N) if n in SIZE_COLORS})
    for ax, metric, ylabel in [(axes[0], "psnr", "PSNR (dB)"), (axes[1], "bpp", "bit rate (bpp)")]:
        ax.set(xlabel=xlabel, ylabel=ylabel)
        if finite.empty:
            ax.text(0.5, 0.5, textwrap.fill(note, 45), ha="center", va="center", fontsize="small", transform=ax.transAxes)
            continue
        teacher = finite[finite.kind == "teacher"]
        if curve is not None and len(teacher):
            ax.plot([teacher[resource].iloc[0]] * len(curve), curve[metric], "o--", color="tab:blue", lw=1, ms=4,
                    label="CompressAI q1-q5")
        for _, row in finite.iterrows():
            teacher_row = row.kind == "teacher"
            ax.plot(row[resource], row[metric], "s" if teacher_row else "o", ms=8,
                    color="tab:orange" if teacher_row else colors[row.label], label=row.label)
        if published is not None and not finite.empty:
            ax.plot(published[resource], published[metric], "kx", ms=8, mew=2, label=published_label)
    fig.suptitle(title)
    if finite.empty:
        fig.tight_layout()
        return fig
    legend_below(fig, axes[0], columns=4)
    if published is not None and "channels_N" in published:  # after the layout: which of the paper's points is which
        for ax, metric in zip(axes, ("psnr", "bpp")):
            place_labels(ax, [(f"N={n}" if n != 128 else "teacher", x, y, "black") for n, x, y in
                              zip(published.channels_N, published[resource], published[metric])])
    return fig


def mse_figure(table: pd.DataFrame, teacher_mse: float, x: str = "N", title: str = "") -> plt.Figure:
    """Kodak MSE (images in [0, 1]) against ``x`` for each ``arm`` (mean and, where there are
    several seeds, each seed), with the teacher's as a square: the paper's ``kd_lic_mse``."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (arm, group), color in zip(table.groupby("arm", sort=False), ("tab:red", "tab:gray", "tab:green")):
        means = group.groupby(x)["mse"].mean()
        ax.plot(means.index, means.values, "o--", color=color, label=f"{arm} (mean over seeds)")
        ax.plot(group[x], group["mse"], ".", color=color, alpha=0.5)
    ax.plot([128], [teacher_mse], "s", color="tab:orange", ms=8, label="teacher T5 (N=128)")
    ax.set(xlabel="number of channels N", ylabel="MSE", title=title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def reconstructions_figure(panels: list[tuple[str, np.ndarray]], columns: int = 3) -> plt.Figure:
    """A grid of image crops, each with its title (the paper's ``kd_lic_kodak_14``)."""
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, image) in zip(axes.flat, panels):
        ax.imshow(image)
        ax.set_title(title, fontsize="small")
    fig.tight_layout()
    return fig


def learning_curves_figure(curves: pd.DataFrame, paired: pd.DataFrame, panels: list[tuple[str, int]]) -> plt.Figure:
    """Validation RD loss against steps, KD and scratch, every seed (top row), and the paired
    difference KD - scratch per seed, in % of scratch's loss (bottom row), with the band between the
    extremes and the mean of the seeds whose two arms finished, at the steps all of them logged; one
    column per (budget, N) of ``panels``. A run, or a pair, still training is dashed."""
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False, sharex="col")
    colors = {"kd": "tab:blue", "scratch": "tab:orange"}
    for column, (budget, n) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        rows = curves[(curves.budget == budget) & (curves.N == n)]
        labelled = set()
        for (arm, seed), run in rows.groupby(["arm", "seed"]):
            top.plot(run.step, run.val_rd_loss, color=colors[arm], alpha=0.85, lw=1.2,
                     ls="-" if run.finished.iloc[0] else "--", label=None if arm in labelled else f"{arm}, every seed")
            labelled.add(arm)
        top.set(title=f"N = {n}, {budget} budget", ylabel="validation RD loss", yscale="log")
        plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")  # 40, not 4x10^1
        top.yaxis.set_major_formatter(plain)
        top.yaxis.set_minor_formatter(plain)
        if len(rows):
            top.legend(fontsize="small", loc="upper right")
        pair = paired[(paired.budget == budget) & (paired.N == n)]
        done = set(pair[pair.finished].seed)
        pair = pair.assign(pct=100 * pair.rel)
        for seed, run in pair.groupby("seed"):
            bottom.plot(run.step, run.pct, lw=1, alpha=0.8, ls="-" if seed in done else "--",
                        label=f"seed {seed}" + ("" if seed in done else " (training)"))
        if len(done) > 1:
            band = pair[pair.seed.isin(done)].groupby("step").pct.agg(["min", "max", "mean", "count"])
            band = band[band["count"] == len(done)]
            bottom.fill_between(band.index, band["min"], band["max"], color="grey", alpha=0.25, label="seeds' range")
            bottom.plot(band.index, band["mean"], color="black", lw=1.5, label=f"mean of the {len(done)} finished pairs")
        bottom.axhline(0, color="black", lw=0.6)
        bottom.set(xlabel="training step", ylabel="KD - scratch, % of scratch's loss")
        if len(pair):
            bottom.legend(fontsize="x-small", loc="best", framealpha=0.6)
        if not len(rows):
            top.text(0.5, 0.5, "no run logged yet", ha="center", transform=top.transAxes)
    fig.tight_layout()
    return fig


def resources_cpu_figure(arch: pd.DataFrame, speed: pd.DataFrame, memory: pd.DataFrame) -> plt.Figure:
    """Experiment 6 on this CPU, four panels: parameters and multiply-adds per N beside the paper's
    (``arch``: :func:`kdlib.analysis.architecture_table`), frames/s per pass and thread count (``speed``: N,
    threads, device, forward, encode, decode), and the peak memory rise of one frame (``memory``: N, encode,
    decode)."""
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    axes[0].bar(arch.N.astype(str), arch.params_M, label="ours")
    axes[0].plot(arch.N.astype(str), arch.paper_params_M, "k_", markersize=20, label="paper")
    axes[0].set(title="parameters (M)", xlabel="N")
    axes[0].legend()
    arch.set_index(arch.N.astype(str))[["GMACs_encoder", "GMACs_hyperprior", "GMACs_decoder"]].plot.bar(stacked=True, ax=axes[1], rot=0)
    axes[1].plot(arch.N.astype(str), arch.paper_GMACs, "k_", markersize=20, label="paper")
    axes[1].set(title="GMACs per 768x512 frame", xlabel="N")
    axes[1].legend(["paper", "encoder", "hyperprior", "decoder"], fontsize="small")
    long = speed.melt(id_vars=["N", "threads", "device"], var_name="pass", value_name="fps")
    long["setting"] = long["pass"] + ", " + long.threads.astype(str) + " thr"
    sns.lineplot(data=long[long.device == "cpu"], x="N", y="fps", hue="setting", marker="o", ax=axes[2])
    axes[2].set(title="CPU frames/s (Kodak)", yscale="log")
    axes[2].legend(fontsize="x-small")
    memory.sort_values("N").set_index("N").plot.bar(ax=axes[3], rot=0)
    axes[3].set(title="peak memory rise (MiB), one frame")
    fig.tight_layout()
    return fig


def gpu_runs_figure(runs: pd.DataFrame, gpu_table: pd.DataFrame) -> plt.Figure:
    """Each committed GPU run's students against the same run's teacher, frames/s and NVML energy per
    forward pass, in % (``runs``: :func:`kdlib.gpu.forward_runs`), with the paper's RTX 3090 changes
    (``gpu_table``: :func:`kdlib.gpu.table`) as crosses."""
    paper = gpu_table.set_index("channels_N")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, quantity, label in [(axes[0], "fps", "frames/s"), (axes[1], "mj", "energy (NVML mJ/frame)")]:
        students = runs[runs.model != "T5"]
        sns.stripplot(students, x="channels_N", y=f"{quantity}_vs_teacher_pct", hue="run", ax=ax, size=7,
                      dodge=True, jitter=False)  # runs side by side: no random jitter, the same image every run
        changes = paper[f"paper_{'fps' if quantity == 'fps' else 'mj_per_frame'}_rtx3090"]
        changes = 100 * (changes / changes[128] - 1)
        ax.scatter([str(n) for n in sorted(students.channels_N.unique())],
                   [changes.get(n) for n in sorted(students.channels_N.unique())],
                   marker="x", color="black", s=60, zorder=3, label="paper (RTX 3090)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set(xlabel="student N", ylabel=f"{label}\nvs the same run's teacher (%)")
        ax.legend(fontsize=7, title="GPU run (date, card)", title_fontsize=7)
    plt.tight_layout()
    return fig


def save(fig: plt.Figure, name: str, folder: str | Path) -> Path:
    """Write ``<folder>/<name>.png`` (and .pdf); ``folder``: a :class:`kdlib.scales.Layout`'s ``figures``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    fig.savefig(folder / f"{name}.png", dpi=150, bbox_inches="tight")
    return shown(folder / f"{name}.png")


def write_table(frame: pd.DataFrame, name: str, folder: str | Path) -> Path:
    """Write a table as ``<name>.csv`` and ``<name>.tex``; ``folder``: a :class:`kdlib.scales.Layout`'s ``tables``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}.csv", index=False)
    (folder / f"{name}.tex").write_text(frame.to_latex(index=False, float_format="%.4g"))
    return shown(folder / f"{name}.csv")


def shown(path: Path) -> Path:
    """``path`` relative to the repository when it is inside it: what notebooks print, the same on
    every machine."""
    from kdlib.models import repo_relative

    return repo_relative(path)


def budget_figure(curve: pd.DataFrame) -> plt.Figure:
    """KD minus scratch against the training budget (:func:`kdlib.analysis.budget_curve`): RD cost, PSNR at the
    same lambda and PSNR at equal rate (against scratch's own curve at that budget: N = 16, once its ends have
    landed), one line per N, each point a decayed model; bars: the seeds' 95 % interval where there are two
    seeds or more, else the images' (hollow markers: one seed, no verdict); at equal rate, a pale wide bar
    widens it by the noise of the curve's one-seed ends (:func:`kdlib.analysis.equal_rate`)."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    rated = curve[curve.rate_seeds > 0].assign(seeds=lambda rows: rows.rate_seeds)
    for ax, metric, label, rows_of in (
            (axes[0], "rd_cost", "RD cost, KD - scratch", curve),
            (axes[1], "psnr-rgb", "PSNR (dB), KD - scratch\n(same lambda, not the same rate)", curve),
            (axes[2], "psnr_at_rate", "PSNR at KD's rate (dB),\nKD - scratch's own RD curve", rated)):
        for n, rows in rows_of.groupby("N"):
            several = rows.seeds > 1
            low = rows[f"d_{metric}_seeds_low"].where(several, rows[f"d_{metric}_low"])
            high = rows[f"d_{metric}_seeds_high"].where(several, rows[f"d_{metric}_high"])
            color = size_color(n)
            ax.errorbar(rows.steps, rows[f"d_{metric}"], yerr=[rows[f"d_{metric}"] - low, high - rows[f"d_{metric}"]],
                        color=color, capsize=4, ls="--", marker="none", lw=1)
            if f"d_{metric}_wide_low" in rows and rows[f"d_{metric}_wide_low"].notna().any():  # the ends' noise too
                ax.errorbar(rows.steps, rows[f"d_{metric}"], yerr=[rows[f"d_{metric}"] - rows[f"d_{metric}_wide_low"],
                                                                   rows[f"d_{metric}_wide_high"] - rows[f"d_{metric}"]],
                            color=color, alpha=0.35, lw=5, ls="none", label="with the curve's one-seed ends' noise")
            for s, y, k in zip(rows.steps, rows[f"d_{metric}"], rows.seeds):
                ax.plot(s, y, "o", ms=8, color=color, mfc=color if k > 1 else "none", mew=1.5)
            ax.plot([], [], "o--", color=color, label=f"N = {n} ({int(rows.seeds.max())} seed(s))")
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xlabel="training steps (each point decayed to lr 0)", ylabel=label, xscale="log")
        ax.set_xticks(sorted(curve.steps.unique()), [f"{s // 1000}k" for s in sorted(curve.steps.unique())])
        ax.minorticks_off()
        if rows_of.empty:
            ax.set(xlim=axes[0].get_xlim(), ylim=(-1, 1), yticks=[])
            ax.text(0.5, 0.75, "waits for scratch N = 16 at lambda\n0.013 and 0.0483 (the curve's ends)",
                    ha="center", va="center", transform=ax.transAxes, color="0.4")
        else:
            ax.legend(fontsize="small")
    fig.suptitle("KD against its scratch twin at equal steps: when does the teacher help? (bars: seeds' 95 %, "
                 "or the images' where one seed)", fontsize="medium")
    fig.tight_layout()
    return fig


def equal_rate_figure(points: pd.DataFrame) -> plt.Figure:
    """KD's full-length points against scratch's own RD curve (:func:`kdlib.analysis.equal_rate_points`): each
    seed's curve joins scratch's one-seed ends (lambda 0.013, 0.0483) through that seed's scratch twin at 0.025."""
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ends, kd, twins = (points[points.role == role] for role in ("end", "kd", "twin"))
    for i, twin in enumerate(twins.itertuples()):  # a seed's curve and its KD point share a colour
        curve = pd.concat([ends, points.loc[[twin.Index]]]).sort_values("bpp")
        ax.plot(curve.bpp, curve["psnr-rgb"], "-", color=f"C{i % 10}", lw=1, alpha=0.6, marker=".")
        mine = kd[kd.seed == twin.seed]
        ax.plot(mine.bpp, mine["psnr-rgb"], "o", color=f"C{i % 10}", ms=7, mec="black", mew=0.5)
    ax.plot([], [], "-", marker=".", color="0.5", label="scratch: lambda 0.013 and 0.0483 (seed 0) through the seed's 0.025")
    ax.plot([], [], "o", color="0.5", mec="black", mew=0.5,
            label="KD (T5 teacher), lambda 0.025: one per seed, its curve's colour")
    ax.set(xscale="log", xlabel="bpp (Kodak mean, real bitstreams)", ylabel="PSNR (dB)",
           title=f"KD against scratch's own RD curve (N = 16, 64k steps, {len(kd)} seed(s))")
    plain = mticker.FuncFormatter(lambda v, _: f"{v:g}")  # 0.4, not 4x10^-1
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
