"""The evaluation report, ``report.html``: the metrics of every method and reference, their
deletion and insertion curves (mean over images with the per-image spread, drawn as inline
SVG by onnxcam: no plotting library), and a grid of the same images explained by each method.
Like the run report, one static file with relative links only."""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import write_atomic
from .report import _CSS

__all__ = ["PALETTE", "curve_svg", "write_evaluation_report"]

PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_METRICS = (
    ("average_drop", "Average Drop %", "lower"),
    ("increase_in_confidence", "Increase in Confidence %", "higher"),
    ("deletion_auc", "Deletion AUC", "lower"),
    ("insertion_auc", "Insertion AUC", "higher"),
    ("road_morf", "ROAD MoRF", "lower"),
    ("road_lerf", "ROAD LeRF", "higher"),
    ("adcc", "ADCC %", "higher"),
    ("pointing_game", "Pointing game %", "higher"),
    ("energy_pointing_game", "Energy in box %", "higher"),
    ("seconds_per_image", "s per image", "lower"),
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def curve_svg(
    title: str, curves: Mapping[str, np.ndarray], *, width: int = 420, height: int = 260
) -> str:
    """Mean curve per method (x: fraction of pixels moved, y: score) with a band of ±1 standard
    deviation across images; ``curves`` maps a method to its (images, steps + 1) curves."""
    left, right, top, bottom = 44, 12, 24, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((float(np.max(c)) for c in curves.values() if np.size(c)), default=1.0)
    y_max = max(1e-9, min(1.0, peak * 1.05) if peak <= 1.0 else peak * 1.05)

    def xy(i: int, n: int, value: float) -> str:
        x = left + plot_w * (i / max(1, n - 1))
        y = top + plot_h * (1 - min(max(value, 0.0), y_max) / y_max)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" class="chart">',
        f'<text x="{left}" y="16" class="t">{_e(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for tick in (0.0, 0.5, 1.0):
        x = left + plot_w * tick
        parts.append(
            f'<text x="{x:.0f}" y="{height - 12}" class="a" text-anchor="middle">{tick:g}</text>'
        )
        y = top + plot_h * (1 - tick)
        label = f"{tick * y_max:.2g}"
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.0f}" class="a" text-anchor="end">{label}</text>'
        )
    for k, values in enumerate(curves.values()):
        data = np.atleast_2d(np.asarray(values, np.float64))
        if data.size == 0:
            continue
        color = PALETTE[k % len(PALETTE)]
        mean, spread = data.mean(axis=0), data.std(axis=0)
        n = mean.shape[0]
        upper = [xy(i, n, float(mean[i] + spread[i])) for i in range(n)]
        lower = [xy(i, n, float(mean[i] - spread[i])) for i in reversed(range(n))]
        parts.append(f'<polygon points="{" ".join(upper + lower)}" fill="{color}" opacity="0.15"/>')
        line = " ".join(xy(i, n, float(mean[i])) for i in range(n))
        parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
    middle = left + plot_w / 2
    parts.append(
        f'<text x="{middle:.0f}" y="{height - 1}" class="a" text-anchor="middle">'
        "fraction of pixels moved</text></svg>"
    )
    return "".join(parts)


def _table(summary: Mapping[str, Mapping[str, float]]) -> str:
    head = "".join(f"<th>{_e(label)} ({better} is better)</th>" for _, label, better in _METRICS)
    best: dict[str, float] = {}
    for key, _, better in _METRICS:
        values = [float(row[key]) for row in summary.values() if row.get(key) is not None]
        if values:
            best[key] = min(values) if better == "lower" else max(values)
    rows = []
    for method, row in summary.items():
        cells = []
        for key, _, _ in _METRICS:
            value = row.get(key)
            shown = "–" if value is None else f"{value:.4g}"
            strong = value is not None and value == best.get(key)
            cells.append(f"<td>{'<b>' + shown + '</b>' if strong else shown}</td>")
        rows.append(
            f"<tr><th>{_e(method)}</th><td>{int(row.get('images', 0))}</td>{''.join(cells)}</tr>"
        )
    return f"<table><tr><th>method</th><th>images</th>{head}</tr>{''.join(rows)}</table>"


def write_evaluation_report(
    folder: Path,
    document: Mapping[str, Any],
    grid: Sequence[tuple[str, Mapping[str, str]]],
) -> Path:
    """Write ``folder/report.html``.

    Args:
        folder: where the report goes (the pictures in ``grid`` are relative to it).
        document: the evaluation's JSON document (``summary``, ``records`` with curves,
            ``model``, ``node``, ``steps``, ``substrate``).
        grid: per image, its source and the picture of each method's map.
    """
    records = document.get("records", [])
    methods = list(document.get("summary", {}))
    charts = []
    for kind in ("deletion", "insertion"):
        curves = {
            m: np.array([r[f"{kind}_curve"] for r in records if r["method"] == m]) for m in methods
        }
        better = "lower" if kind == "deletion" else "higher"
        charts.append(curve_svg(f"{kind} ({better} area is better)", curves))
    legend = " ".join(
        f'<span style="color:{PALETTE[k % len(PALETTE)]}">&#9632; {_e(m)}</span>'
        for k, m in enumerate(methods)
    )
    head = "".join(f"<th>{_e(m)}</th>" for m in methods)
    rows = []
    for source, pictures in grid:
        cells = "".join(
            f'<td><img loading="lazy" width="160" src="{_e(urllib.parse.quote(pictures[m]))}" '
            f'alt="{_e(m)}"></td>'
            if m in pictures
            else "<td>–</td>"
            for m in methods
        )
        rows.append(f"<tr><th>{_e(Path(source).name)}</th>{cells}</tr>")
    model = Path(str(document.get("model", "?"))).name
    images = len({r.get("source") for r in records})
    info = (
        f"model {_e(model)}, node {_e(document.get('node', '?'))}, {images} images, "
        f"{_e(document.get('steps', '?'))} steps, {_e(document.get('substrate', '?'))} substrate"
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>onnxcam evaluation</title>
<style>{_CSS}{_EXTRA_CSS}</style></head>
<body>
<header><h1>onnxcam evaluation</h1><p>{info}</p></header>
<section><h2>Metrics</h2>{_table(document.get("summary", {}))}</section>
<section><h2>Curves</h2><div class="row">{"".join(charts)}</div>
<p class="legend">{legend}</p>
<p class="source">Mean over images; the band is one standard deviation either side.</p></section>
<section><h2>The same images, each method</h2>
<table class="grid-table"><tr><th>image</th>{head}</tr>{"".join(rows)}</table></section>
<footer>made by onnxcam; every link is relative to this folder.</footer>
</body></html>
"""
    path = folder / "report.html"
    write_atomic(path, page.encode("utf-8"))
    return path


_EXTRA_CSS = """
.chart { width: 420px; max-width: 100%; height: auto; background: var(--card); border-radius: 6px; }
.chart .frame { fill: none; stroke: var(--line); } .chart text { fill: var(--fg); }
.chart .a { font-size: 11px; } .chart .t { font-size: 13px; font-weight: 600; }
.grid-table img { max-width: 160px; height: auto; display: block; }
table { overflow-x: auto; display: block; }
"""
