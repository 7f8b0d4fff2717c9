"""The run report: ``OUT/index.html`` and ``OUT/contact_sheet.png``, built from the run's own
``run.json`` and ``results.jsonl`` (so it can be rebuilt at any time, e.g. after a Ray run).

The page is one static file: a header with the run, a contact sheet of thumbnails (sortable
by name, class or score and filterable by class with a few lines of plain JavaScript; the
thumbnails are small JPEGs written once and loaded lazily, so a run of thousands of images
stays fast), a detail view per image (the original, each target's overlay and map, top-5,
notes) and the failed images with their reasons. Every link is relative to ``OUT``; nothing
is fetched from anywhere, so the folder works offline, from a share or zipped. Every string
that came from a model or a file is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .files import write_atomic
from .overlay import Mark, overlay
from .sheet import ORIGINAL_SIDE, SHEET_CAP, THUMB_SIDE, contact_sheet, thumbnail, write_jpeg

__all__ = ["REPORT", "SHEET", "build_report", "report_files", "write_thumbnails"]

REPORT = "index.html"
SHEET = "contact_sheet.png"


def report_files(stem: str) -> dict[str, str]:
    """The report's own pictures of one image, relative to the output folder."""
    return {"thumb": f"{THUMBS}/{stem}.jpg", "original": f"{THUMBS}/{stem}_original.jpg"}


def write_thumbnails(
    out_dir: Path,
    stem: str,
    image: np.ndarray | None,
    saliency: np.ndarray,
    *,
    alpha: float,
    marks: Sequence[Mark] = (),
) -> None:
    """The contact-sheet thumbnail (the first target's overlay, small, with its boxes) and the
    original for the detail view, made from the arrays in memory (no file is read back)."""
    names = report_files(stem)
    if image is None:  # a tensor explained without its image: the map alone
        small_map = thumbnail(cv2.cvtColor((saliency * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB))
        write_jpeg(out_dir / names["thumb"], small_map)
        return
    if max(image.shape[:2]) > THUMB_SIDE:  # a small image's overlay is its own thumbnail
        small = np.ascontiguousarray(thumbnail(image))
        small_map = cv2.resize(
            saliency, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA
        )
        sx, sy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        shrunk: list[Mark] = [
            ((x0 * sx, y0 * sy, x1 * sx, y1 * sy), text) for (x0, y0, x1, y1), text in marks
        ]
        picture = overlay(small, small_map, alpha=alpha, marks=shrunk)
        write_jpeg(out_dir / names["thumb"], picture)
    write_jpeg(out_dir / names["original"], np.ascontiguousarray(thumbnail(image, ORIGINAL_SIDE)))


def _read(out_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    settings: dict[str, Any] = {}
    manifest = out_dir / "run.json"
    if manifest.is_file():
        try:
            settings = json.loads(manifest.read_text(encoding="utf-8")).get("settings", {})
        except (OSError, ValueError):
            settings = {}
    records = []
    results = out_dir / "results.jsonl"
    if results.is_file():
        for line in results.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                records.append(value)
    latest: dict[str, dict[str, Any]] = {}
    for record in records:  # a resumed run may have retried an image: its last line wins
        latest[str(record.get("source"))] = record
    return settings, list(latest.values())


def _stem(record: Mapping[str, Any]) -> str:
    name = str((record.get("files") or {}).get("json", "image.json"))
    return name[: -len(".json")] if name.endswith(".json") else name


def _pictures(out_dir: Path) -> set[str]:
    """The report pictures already in ``OUT/thumbs``, as paths relative to ``OUT`` (one walk of
    the folder rather than a file-system call per image and picture)."""
    found: set[str] = set()
    for folder, _, files in os.walk(out_dir / THUMBS):
        relative = Path(folder).relative_to(out_dir).as_posix()
        found.update(f"{relative}/{name}" for name in files)
    return found


def _ensure_thumbnail(out_dir: Path, record: Mapping[str, Any], present: set[str]) -> None:
    """Make a missing thumbnail from the overlay file (a rebuild after a run that did not
    write them)."""
    names = report_files(_stem(record))
    size = record.get("image_size") or [THUMB_SIDE + 1]
    if max(size) <= THUMB_SIDE or names["thumb"] in present:
        return  # a small image's overlay is its own thumbnail
    targets = record.get("targets") or [{}]
    overlay_name = (targets[0].get("files") or {}).get("overlay")
    if not overlay_name:
        return
    picture = cv2.imread(str(out_dir / overlay_name), cv2.IMREAD_COLOR)
    if picture is None or max(picture.shape[:2]) <= THUMB_SIDE:
        return
    write_jpeg(out_dir / names["thumb"], thumbnail(cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)))
    present.add(names["thumb"])


def _href(path: str) -> str:
    return html.escape(urllib.parse.quote(path), quote=True)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _score(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "–"


MARKER = ".onnxcam-report"  # the report's own file names, so no one else's file is replaced
THUMBS = "thumbs"


def report_names(out_dir: Path) -> list[str]:
    """The files an onnxcam report wrote in ``out_dir`` (from its marker)."""
    try:
        names = json.loads((out_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _free_names(out_dir: Path) -> tuple[str, str]:
    """``index.html`` and ``contact_sheet.png``, unless files of those names are there that
    an onnxcam report did not write: then ``onnxcam_index.html`` and so on."""
    ours = set(report_names(out_dir))
    names = []
    for name in (REPORT, SHEET):
        names.append(name if name in ours or not (out_dir / name).exists() else f"onnxcam_{name}")
    return names[0], names[1]


def build_report(out_dir: Path) -> Path:
    """Write ``OUT/index.html`` and ``OUT/contact_sheet.png`` from ``OUT``'s records."""
    settings, records = _read(out_dir)
    done = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") == "error"]
    present = _pictures(out_dir)
    for record in done:
        _ensure_thumbnail(out_dir, record, present)
    page_name, sheet_name = _free_names(out_dir)
    page = _page(present, settings, done, failed, sheet_name)
    write_atomic(out_dir / MARKER, json.dumps([page_name, sheet_name]).encode())
    write_atomic(out_dir / page_name, page.encode("utf-8"))
    _write_sheet(out_dir, present, done, sheet_name)
    return out_dir / page_name


def _write_sheet(
    out_dir: Path, present: set[str], done: Sequence[Mapping[str, Any]], name: str
) -> None:
    thumbs, captions = [], []
    for record in done[:SHEET_CAP]:
        picture = cv2.imread(str(out_dir / _thumb(present, record)), cv2.IMREAD_COLOR)
        if picture is None:
            continue
        thumbs.append(picture)  # BGR in, BGR out: the sheet's colours are grey
        first = (record.get("targets") or [{}])[0]
        label = first.get("label") or first.get("class_index") or first.get("kind", "")
        captions.append(
            f"{Path(str(record.get('source'))).name} {label} {_score(first.get('score'))}"
        )
    if thumbs:
        # PNG's default settings are the fastest
        ok, buf = cv2.imencode(".png", contact_sheet(thumbs, captions))
        if ok:
            write_atomic(out_dir / name, buf.tobytes())


def _header(
    settings: Mapping[str, Any], done: Sequence[Mapping[str, Any]], failed: Sequence[Any]
) -> str:
    first = done[0] if done else {}
    seconds = [float((r.get("timings") or {}).get("total_s", 0.0)) for r in done]
    total = sum(seconds)
    per_image = total / len(seconds) if seconds else 0.0
    model = first.get("model") or "?"
    rows = [
        ("model", f"{Path(str(model)).name} (sha256 {settings.get('model_sha256', '?')})"),
        ("node", f"{first.get('node', '?')} (tensor {first.get('tensor', '?')})"),
        ("method", f"{first.get('method', settings.get('method', '?'))}"),
        ("options", json.dumps(settings.get("method_options", {}), sort_keys=True)),
        ("targets", ", ".join(settings.get("targets") or ["the top class"])),
        ("provider", first.get("provider", "?")),
        ("onnxcam", first.get("onnxcam_version", settings.get("onnxcam_version", "?"))),
        ("images", f"{len(done)} explained, {len(failed)} failed"),
        ("time", f"{total:.1f} s in all, {per_image:.2f} s per image"),
        ("report written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f"<header><h1>onnxcam report</h1><dl>{cells}</dl></header>"


def _thumb(present: set[str], record: Mapping[str, Any]) -> str:
    """The card's picture: the thumbnail, or the first overlay when the image is small."""
    thumb = report_files(_stem(record))["thumb"]
    if thumb in present:
        return thumb
    first = (record.get("targets") or [{}])[0]
    return str(
        (first.get("files") or {}).get("overlay")
        or (first.get("files") or {}).get("saliency", thumb)
    )


def _card(present: set[str], index: int, record: Mapping[str, Any]) -> str:
    first = (record.get("targets") or [{}])[0]
    name = Path(str(record.get("source"))).name
    label = first.get("label") or (
        f"class {first['class_index']}"
        if first.get("class_index") is not None
        else first.get("kind", "")
    )
    score = first.get("score")
    thumb = _thumb(present, record)
    data = (
        f'data-name="{_e(name.lower())}" data-class="{_e(label)}" '
        f'data-score="{score if isinstance(score, (int, float)) else -1}"'
    )
    return (
        f'<a class="card" href="#d{index}" {data}><img loading="lazy" src="{_href(thumb)}" '
        f'alt="{_e(name)}" width="200"><span class="name">{_e(name)}</span>'
        f'<span class="meta">{_e(label)} · {_score(score)}</span></a>'
    )


def _figure(src: str, caption: str) -> str:
    link = _href(src)
    return (
        f'<figure><a href="{link}"><img loading="lazy" src="{link}" alt="{_e(caption)}"></a>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _detail(present: set[str], index: int, record: Mapping[str, Any]) -> str:
    name = Path(str(record.get("source"))).name
    figures = []
    original = report_files(_stem(record))["original"]
    if original in present:
        figures.append(_figure(original, "original"))
    for i, target in enumerate(record.get("targets") or []):
        files = target.get("files") or {}
        what = f"t{i}: {target.get('summary', target.get('kind', ''))}"
        for kind in ("overlay", "emphasized", "saliency"):
            if kind in files:
                figures.append(_figure(files[kind], f"{what} ({kind})"))
    top = "".join(
        f"<tr><td>{_e(t.get('index'))}</td><td>{_e(t.get('label') or '')}</td>"
        f"<td>{_score(t.get('score'))}</td></tr>"
        for t in record.get("top5") or []
    )
    table = f"<table><tr><th>class</th><th>label</th><th>p</th></tr>{top}</table>" if top else ""
    notes = "".join(f"<li>{_e(n)}</li>" for n in record.get("notes") or [])
    first = (record.get("targets") or [{}])[0]
    return (
        f'<details id="d{index}"><summary>{_e(name)} — {_e(first.get("summary", ""))}</summary>'
        f'<p class="source">{_e(record.get("source"))}</p><div class="row">{"".join(figures)}</div>'
        f"{table}{f'<ul class=notes>{notes}</ul>' if notes else ''}</details>"
    )


def _page(
    present: set[str],
    settings: Mapping[str, Any],
    done: Sequence[Mapping[str, Any]],
    failed: Sequence[Mapping[str, Any]],
    sheet_name: str,
) -> str:
    classes = sorted({c for c in (_class_of(r) for r in done) if c})
    options = "".join(f'<option value="{_e(c)}">{_e(c)}</option>' for c in classes)
    cards = "".join(_card(present, i, r) for i, r in enumerate(done))
    details = "".join(_detail(present, i, r) for i, r in enumerate(done))
    failures = "".join(
        f"<li><code>{_e(r.get('source'))}</code>: {_e(r.get('error_type', 'Error'))}: "
        f"{_e(r.get('error', ''))}</li>"
        for r in failed
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="onnxcam">
<title>onnxcam report</title>
<style>{_CSS}</style></head>
<body>
{_header(settings, done, failed)}
<nav><label>sort <select id="sort"><option value="name">file name</option>
<option value="class">class</option><option value="score">score</option></select></label>
<label>class <select id="filter"><option value="">all</option>{options}</select></label>
<span id="count">{len(done)} images</span> · <a href="{_href(sheet_name)}">contact sheet</a>
· <a href="results.jsonl">results.jsonl</a></nav>
<main id="sheet" class="grid">{cards}</main>
<section id="details"><h2>Images</h2>{details}</section>
<section id="failures"><h2>Failed ({len(failed)})</h2><ul>{failures}</ul></section>
<footer>made by onnxcam; every link is relative to this folder.</footer>
<script>{_JS}</script>
</body></html>
"""


def _class_of(record: Mapping[str, Any]) -> str:
    first = (record.get("targets") or [{}])[0]
    label = first.get("label")
    if label:
        return str(label)
    if first.get("class_index") is not None:
        return f"class {first['class_index']}"
    return str(first.get("kind", ""))


_CSS = """
:root { --bg: #fff; --fg: #1b1b1b; --muted: #666; --card: #f4f4f4; --line: #ddd; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #141414; --fg: #e8e8e8; --muted: #a0a0a0; --card: #222; --line: #333; }
}
body { margin: 0 auto; max-width: 1400px; padding: 1rem; background: var(--bg); color: var(--fg);
  font: 15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
a { color: inherit; }
header dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
header dt { color: var(--muted); } header dd { margin: 0; overflow-wrap: anywhere; }
nav { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; margin: 1rem 0;
  padding: .5rem 0; border-top: 1px solid var(--line); border-bottom: 1px solid var(--line); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .75rem; }
.card { display: flex; flex-direction: column; background: var(--card); border-radius: 6px;
  padding: .4rem; text-decoration: none; }
.card img { width: 100%; height: auto; border-radius: 4px; }
.card .name { font-weight: 600; overflow-wrap: anywhere; } .card .meta { color: var(--muted); }
details { border-bottom: 1px solid var(--line); padding: .5rem 0; }
.row { display: flex; flex-wrap: wrap; gap: .75rem; }
figure { margin: 0; max-width: 320px; } figure img { max-width: 100%; height: auto; }
figcaption, .source { color: var(--muted); font-size: .85em; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { padding: .1rem .6rem; text-align: left; }
#failures li { margin: .2rem 0; overflow-wrap: anywhere; }
"""

_JS = """
(function () {
  var sheet = document.getElementById("sheet");
  var cards = Array.prototype.slice.call(sheet.children);
  var sort = document.getElementById("sort"), filter = document.getElementById("filter");
  function apply() {
    var key = sort.value, want = filter.value, shown = 0;
    cards.sort(function (a, b) {
      if (key === "score") { return Number(b.dataset.score) - Number(a.dataset.score); }
      var x = a.dataset[key], y = b.dataset[key];
      return x < y ? -1 : x > y ? 1 : 0;
    });
    cards.forEach(function (card) {
      card.hidden = want !== "" && card.dataset.class !== want;
      if (!card.hidden) { shown += 1; }
      sheet.appendChild(card);
    });
    document.getElementById("count").textContent = shown + " images";
  }
  var params = new URLSearchParams(location.hash.slice(1));
  if (params.get("sort")) { sort.value = params.get("sort"); }
  if (params.get("class") !== null) { filter.value = params.get("class"); }
  sort.addEventListener("change", apply);
  filter.addEventListener("change", apply);
  function reveal() {
    var target = document.getElementById(location.hash.slice(1));
    if (target && target.tagName === "DETAILS") { target.open = true; target.scrollIntoView(); }
  }
  window.addEventListener("hashchange", reveal);
  apply();
  reveal();
})();
"""
