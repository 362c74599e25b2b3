"""``paper/REPRODUCTION.md``: each of the paper's figures and tables, the published number, ours, and
a one-line verdict, written from the result files by :mod:`kdlib.claims`, whose claims the notebooks render
too (never by hand, and never from a table a notebook wrote, so never stale)."""
from __future__ import annotations

import pandas as pd

from kdlib import claims
from kdlib.claims import CLAIMS
from kdlib.scales import PAPER, Layout


def _measured(layout: Layout) -> list[tuple[str, str, str]]:
    """(the paper, ours, verdict) of every row of :data:`CLAIMS`: each claim computed once
    (:data:`kdlib.claims.CLASSES`), each of its measures rendered once."""
    made: dict[type, claims.Claim] = {}
    done: dict[tuple[str, str], tuple[str, str, str]] = {}
    for c in CLAIMS:
        key = (c["measure"], c["claim"])
        if key in done:
            continue
        if c["measure"] == "stated":
            done[key] = (c["claim"], c["ours"], c["verdict"])
        else:
            kind = claims.CLASSES[c["measure"]]
            if kind not in made:
                made[kind] = kind(layout)
            done[key] = made[kind].row(c["measure"], c["claim"])
    return [done[(c["measure"], c["claim"])] for c in CLAIMS]


def reproduction(layout: Layout) -> str:
    """The markdown of ``paper/REPRODUCTION.md`` from ``layout``'s result files (every number) and the
    figures drawn there (links)."""
    figures = layout.figures
    rows = {(c["kind"], c["name"]): cells for c, cells in zip(CLAIMS, _measured(layout))}
    lines = ["# The paper, figure by figure, beside ours", "",
             "Written by `kdlib.report.reproduction` from `results/` and `figures/` (notebook "
             "`reproduction`); do not edit. Published figures are in the data mirror "
             "(`$KDLIB_DATA/reference/paper-figures/`), published tables in `paper/published/`.", "",
             "## Figures", "", "| figure | the paper | ours | verdict |", "|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[str]] = {}  # figures that share a claim share a row
    for (kind, name), cells in rows.items():
        if kind == "figure":
            groups.setdefault(cells, []).append(name)
    for (paper, ours, verdict), names in groups.items():
        links = ", ".join(f"[{name}](../figures/{name}.png)" if (figures / f"{name}.png").exists()
                          else f"{name} (not drawn)" for name in names)
        lines.append(f"| {links} | {paper} | {ours} | {verdict} |")
    lines += ["", "## Tables", "", "| table | the paper | ours | verdict |", "|---|---|---|---|"]
    for (kind, name), (paper, ours, verdict) in rows.items():
        if kind == "table":
            lines.append(f"| [{name}](tables/{name}) | {paper} | {ours} | {verdict} |")
    deviations = pd.read_csv(PAPER / "deviations.csv")
    lines += ["", "## Deviations from the authors' protocol", "",
              "From `paper/deviations.csv`; the authors' code and logbook (FABallemand/PRIM) decide where the paper's "
              "text is ambiguous.", "", "| what | the authors | ours | why |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['the authors']} | {r['ours']} | {r['why']} |" for r in deviations.to_dict("records")]
    return "\n".join(lines) + "\n"
