"""The reproduction report: ``report.md`` with one PNG per study, and ``report.html``.

``report.html`` is self-contained: the same content, each figure embedded as a base64 PNG data URI
and the CSS inline, so it opens offline in any browser. At the top: when and how the run was
made (runtime, load, quick or full) and the summary table (study, checked number, simulated
+- s.e., reference, distance in s.e., verdict); then per study: the command that reproduces it
alone, its figure (the simulated curve with its band, the closed form dashed), its checks with
their sources, and notes.
"""

from __future__ import annotations

import base64
import html
import os
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from collapse_jax.files import atomic_path, write_text  # noqa: E402
from collapse_jax.reproduce.verdict import THRESHOLD  # noqa: E402

SUMMARY_HEADER = ("study", "checked number", "simulated (+- s.e.)", "reference", "distance (s.e.)",
                  "verdict")

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:1em 0;font-size:0.9em}td,th{border:1px solid
#bbb;padding:3px 8px;text-align:left}th{background:#eee}.PASS{color:#0a6e0a;font-weight:bold}
.DIFFERS{color:#b00000;font-weight:bold}code,pre{background:#f4f4f4}pre{padding:.6em;
white-space:pre-wrap}img{max-width:100%}.note{color:#555}"""


def fmt(x: float) -> str:
    """A number in 4 significant digits.

    >>> fmt(2388.123), fmt(0.000123456), fmt(float("nan"))
    ('2388', '0.0001235', 'nan')
    """
    return f"{x:.4g}"


def verdict_text(check, verdict) -> str:
    """``PASS`` / ``DIFFERS``, with ``(expected)`` where the study expects it to differ."""
    return verdict.status + (" (expected)" if check.expect == "DIFFERS" and
                             verdict.status == "DIFFERS" else "")


def summary_rows(outcomes) -> list[tuple[str, ...]]:
    """One row per checked number of every study (skipped studies: one row saying so)."""
    rows = []
    for o in outcomes:
        if o.skipped:
            rows.append((o.study.name, o.skipped, "-", "-", "-", "not run"))
        for c, v in o.checks:
            rows.append((o.study.name, c.label,
                         f"{fmt(c.estimate.value)} +- {fmt(c.estimate.se)}",
                         _reference(c), fmt(v.z), verdict_text(c, v)))
    return rows


def _reference(c) -> str:
    bound = {"at_most": "<= ", "at_least": ">= ", "greater": "> "}.get(c.mode, "")
    tol = f" (tol {c.rel_tol:.0%})" if c.rel_tol else ""
    return f"{bound}{fmt(c.reference)}{tol}"


def draw(outcome, path: Path) -> Path | None:
    """The study's figure: a panel per quantity, mean (or median) with its band, theory dashed."""
    panels: dict[str, list] = {}
    for c in outcome.curves:
        panels.setdefault(c.panel, []).append(c)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for i, c in enumerate(curves):
            color = f"C{i}"
            ax.plot(c.generation, c.center, color=color, label=c.label)
            ax.fill_between(c.generation, c.lo, c.hi, color=color, alpha=0.2, linewidth=0)
            if c.theory is not None:
                ax.plot(c.generation, c.theory, "--", color="black", linewidth=1,
                        label="closed form" if i == 0 else None)
            if c.log and np.all(c.center[np.isfinite(c.center)] > 0):
                ax.set_yscale("log")
        ax.set_title(panel, fontsize=10)
        ax.set_xlabel("generation g (papers' t = g + 1)")
        ax.legend(fontsize=8)
    bands = sorted({c.band for c in outcome.curves})
    title = f"{outcome.study.name}: band = " + "; ".join(bands)
    fig.suptitle(textwrap.fill(title, 60 * len(panels)), fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def _header(outcomes, quick: bool, seconds: float) -> list[str]:
    load = os.getloadavg()
    run = sum(o.seconds for o in outcomes)
    skipped = [o.study.name for o in outcomes if o.skipped]
    lines = [
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; mode: {'--quick' if quick else 'full'}; "
        f"{len(outcomes)} studies; measured runtime {seconds:.1f} s (studies {run:.1f} s); "
        f"load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on "
        f"{os.cpu_count()} cores.",
        f"Verdicts: PASS within {THRESHOLD:g} standard errors of a closed form (or within a "
        f"stated relative tolerance of an approximate or published figure; a bound passes unless "
        f"the simulation is more than {THRESHOLD:g} s.e. beyond it; a 'greater' claim needs more "
        f"than {THRESHOLD:g} s.e.), else DIFFERS with the distance in standard errors.",
    ]
    if skipped:
        lines.append("Not run: " + ", ".join(skipped) + ".")
    return lines


def markdown(outcomes, figures: dict[str, str], quick: bool, seconds: float) -> str:
    """``report.md``: header, summary table, a section per study."""
    out = ["# collapse-jax reproduce: the literature beside the simulation", ""]
    out += [*_header(outcomes, quick, seconds), "", "## Summary", ""]
    out.append("| " + " | ".join(SUMMARY_HEADER) + " |")
    out.append("|" + "---|" * len(SUMMARY_HEADER))
    out += ["| " + " | ".join(r) + " |" for r in summary_rows(outcomes)]
    for o in outcomes:
        s = o.study
        out += ["", f"## {s.name}: {s.title}", "", f"Source: {s.source}", "",
                "Reproduce alone:", "", "```bash", o.command, "```", ""]
        if o.skipped:
            out += [f"*{o.skipped}.*"]
            continue
        out.append(f"Runtime: {o.seconds:.1f} s.")
        if s.note:
            out += ["", s.note]
        if s.name in figures:
            out += ["", f"![{s.name}]({figures[s.name]})"]
        out += ["", "| checked number | simulated (+- s.e.) | reference | source | distance "
                "(s.e.) | verdict |", "|---|---|---|---|---|---|"]
        for c, v in o.checks:
            out.append(f"| {c.label} | {fmt(c.estimate.value)} +- {fmt(c.estimate.se)} "
                       f"({c.estimate.how}) | {_reference(c)} | {c.source} | {fmt(v.z)} | "
                       f"{verdict_text(c, v)} |")
    return "\n".join(out) + "\n"


def _table(header: Sequence[str], rows, verdict_col: int, cls: str = "") -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for r in rows:
        cells = []
        for j, x in enumerate(r):
            klass = f' class="{x.split()[0]}"' if j == verdict_col and x.split() else ""
            cells.append(f"<td{klass}>{e(x)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{cls}"><tr>{head}</tr>' + "".join(body) + "</table>"


def html_report(outcomes, figures: dict[str, Path], quick: bool, seconds: float) -> str:
    """``report.html``: the markdown's content with figures as data URIs and inline CSS."""
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             "<title>collapse-jax reproduce</title>", f"<style>{CSS}</style></head><body>",
             "<h1>collapse-jax reproduce: the literature beside the simulation</h1>"]
    parts += [f"<p>{e(line)}</p>" for line in _header(outcomes, quick, seconds)]
    parts += ["<h2>Summary</h2>",
              _table(SUMMARY_HEADER, summary_rows(outcomes), 5, "summary")]
    for o in outcomes:
        s = o.study
        parts += [f"<h2 id='{e(s.name)}'>{e(s.name)}: {e(s.title)}</h2>",
                  f"<p>Source: {e(s.source)}</p>", "<p>Reproduce alone:</p>",
                  f"<pre><code>{e(o.command)}</code></pre>"]
        if o.skipped:
            parts.append(f"<p class='note'><em>{e(o.skipped)}.</em></p>")
            continue
        parts.append(f"<p>Runtime: {o.seconds:.1f} s.</p>")
        if s.note:
            parts.append(f"<p class='note'>{e(s.note)}</p>")
        if s.name in figures:
            data = base64.b64encode(figures[s.name].read_bytes()).decode("ascii")
            parts.append(f"<img alt='{e(s.name)}' src='data:image/png;base64,{data}'>")
        rows = [(c.label, f"{fmt(c.estimate.value)} +- {fmt(c.estimate.se)} ({c.estimate.how})",
                 _reference(c), c.source, fmt(v.z), verdict_text(c, v)) for c, v in o.checks]
        parts.append(_table(("checked number", "simulated (+- s.e.)", "reference", "source",
                             "distance (s.e.)", "verdict"), rows, 5, "checks"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_reports(outcomes, out: Path, *, quick: bool, seconds: float) -> tuple[Path, Path]:
    """Draw every study's figure into ``out`` and write ``report.md`` and ``report.html``."""
    figures = {}
    for o in outcomes:
        if not o.skipped:
            path = draw(o, out / f"{o.study.name}.png")
            if path is not None:
                figures[o.study.name] = path
    md, page = out / "report.md", out / "report.html"
    write_text(md, markdown(outcomes, {k: p.name for k, p in figures.items()}, quick, seconds))
    write_text(page, html_report(outcomes, figures, quick, seconds))
    return md, page
