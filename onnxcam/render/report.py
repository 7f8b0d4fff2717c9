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
import math
import os
import shutil
import stat
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from ..confined import Confined, is_confined
from ..errors import ImageError, OutputError
from ..images import decode_image
from ..records import MAX_RECORD_BYTES, RecordCounts, iter_records
from .overlay import Mark, overlay
from .sheet import ORIGINAL_SIDE, SHEET_CAP, THUMB_SIDE, contact_sheet, thumbnail, write_jpeg

__all__ = [
    "REPORT",
    "SHEET",
    "ReportSummary",
    "build_report",
    "report_files",
    "write_report",
    "write_thumbnails",
]

REPORT = "index.html"
SHEET = "contact_sheet.png"


def report_files(stem: str) -> dict[str, str]:
    """The report's own pictures of one image, relative to the output folder."""
    return {"thumb": f"{THUMBS}/{stem}.jpg", "original": f"{THUMBS}/{stem}_original.jpg"}


def write_thumbnails(
    out: Confined | Path,
    stem: str,
    image: np.ndarray | None,
    saliency: np.ndarray,
    *,
    alpha: float,
    marks: Sequence[Mark] = (),
) -> None:
    """The contact-sheet thumbnail (the first target's overlay, small, with its boxes) and the
    original for the detail view, made from the arrays in memory (no file is read back)."""
    out = out if isinstance(out, Confined) else Confined(out)
    names = report_files(stem)
    if image is None:  # a tensor explained without its image: the map alone
        small_map = thumbnail(cv2.cvtColor((saliency * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB))
        write_jpeg(out, names["thumb"], small_map)
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
        write_jpeg(out, names["thumb"], picture)
    write_jpeg(out, names["original"], np.ascontiguousarray(thumbnail(image, ORIGINAL_SIDE)))


#: The longest text from a record shown on the page (labels, notes, errors): a record may
#: hold up to a megabyte, the page stays readable and small.
TEXT_CAP = 300
_PICTURE_BYTES = 64 << 20  # an overlay or thumbnail read back is a PNG/JPEG of an image
_CLASS_CAP = 1000  # classes offered in the filter
FAILURES_SHOWN = 10_000  # failures listed on the page (all are in results.jsonl)


def _settings(out: Confined) -> dict[str, Any]:
    data = out.read("run.json", max_bytes=MAX_RECORD_BYTES)
    try:
        value = json.loads(data.decode("utf-8", errors="replace")) if data else {}
    except ValueError:
        return {}
    settings = value.get("settings") if isinstance(value, dict) else None
    return settings if isinstance(settings, dict) else {}


class _Records:
    """The folder's records, read again for each part of the page (streamed: a folder of
    100,000 images is never held in memory); an image retried by a resumed run shows its
    last line."""

    def __init__(self, out: Confined) -> None:
        self.out = out
        self.counts = RecordCounts()
        self._last: dict[str, int] = {}
        for i, record in enumerate(self._all(self.counts)):
            self._last[record["source"]] = i

    def _all(self, counts: RecordCounts | None = None) -> Iterator[dict[str, Any]]:
        handle = self.out.open_read("results.jsonl")
        if handle is None:
            return
        with handle:
            yield from iter_records(handle, counts)

    def latest(self, *statuses: str) -> Iterator[dict[str, Any]]:
        """Each image's last record, if its status is one of ``statuses``, in the file's
        order."""
        for i, record in enumerate(self._all()):
            if record["status"] in statuses and self._last.get(record["source"]) == i:
                yield record


def _stem(record: Mapping[str, Any]) -> str | None:
    """The record's stem (its JSON's name less ``.json``), when it is a name inside OUT."""
    name = (record.get("files") or {}).get("json")
    if not isinstance(name, str) or not name.endswith(".json") or len(name) <= len(".json"):
        return None
    return name[: -len(".json")]


class _Files:
    """Which names a page may link: regular files inside OUT, reached without a link (each
    folder on the way checked once)."""

    def __init__(self, out: Confined) -> None:
        self.out = out
        self._root = str(out.root)
        self._folders: dict[str, bool] = {"": True}
        self.pictures = {n.as_posix() for n in out.files(THUMBS)}

    def _folder_ok(self, folder: str) -> bool:
        known = self._folders.get(folder)
        if known is None:
            parent = folder.rpartition("/")[0]
            info = self.out.lstat(folder) if self._folder_ok(parent) else None
            known = info is not None and stat.S_ISDIR(info.st_mode)
            self._folders[folder] = known
        return known

    def linkable(self, name: Any) -> bool:
        if not is_confined(name):
            return False
        if name in self.pictures:
            return True
        if not self._folder_ok(name.rpartition("/")[0]):
            return False
        try:
            return stat.S_ISREG(os.lstat(os.path.join(self._root, name)).st_mode)
        except OSError:
            return False


def _ensure_thumbnail(files: _Files, record: Mapping[str, Any]) -> None:
    """Make a missing thumbnail from the overlay file (a rebuild after a run that did not
    write them)."""
    stem = _stem(record)
    if stem is None:
        return
    names = report_files(stem)
    size = record.get("image_size")
    big = not isinstance(size, list) or any(
        isinstance(s, (int, float)) and s > THUMB_SIDE for s in size
    )
    if not big or names["thumb"] in files.pictures:
        return  # a small image's overlay is its own thumbnail
    overlay_name = _first_files(record).get("overlay")
    if not isinstance(overlay_name, str) or not files.linkable(overlay_name):
        return
    data = files.out.read(overlay_name, max_bytes=_PICTURE_BYTES)
    if data is None:
        return
    try:
        picture = decode_image(data, name=overlay_name)
    except ImageError:
        return
    if max(picture.shape[:2]) <= THUMB_SIDE:
        return
    try:
        write_jpeg(files.out, names["thumb"], thumbnail(picture))
    except OutputError:
        return
    files.pictures.add(names["thumb"])


def _first(record: Mapping[str, Any]) -> Mapping[str, Any]:
    targets = record.get("targets") or [{}]
    return targets[0]


def _first_files(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return _first(record).get("files") or {}


def _text(value: Any) -> str:
    text = str(value)
    return text if len(text) <= TEXT_CAP else text[: TEXT_CAP - 1] + "…"


def _href(path: str) -> str:
    return html.escape(urllib.parse.quote(path), quote=True)


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _score(value: Any) -> str:
    return f"{value:.3f}" if _number(value) else "–"


MARKER = ".onnxcam-report"  # the report's own file names, so no one else's file is replaced
THUMBS = "thumbs"


def report_names(out_dir: Path) -> list[str]:
    """The files an onnxcam report wrote in ``out_dir`` (from its marker)."""
    out = Confined.existing(out_dir)
    data = out.read(MARKER, max_bytes=4096) if out is not None else None
    try:
        names = json.loads(data.decode("utf-8", errors="replace")) if data else []
    except ValueError:
        return []
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n in _NAMES]


_NAMES = (REPORT, SHEET, f"onnxcam_{REPORT}", f"onnxcam_{SHEET}")


def _free_names(out: Confined) -> tuple[str, str]:
    """``index.html`` and ``contact_sheet.png``, unless files of those names are there that
    an onnxcam report did not write: then ``onnxcam_index.html`` and so on."""
    ours = set(report_names(out.root))
    names = []
    for name in (REPORT, SHEET):
        free = name in ours or out.lstat(name) is None
        names.append(name if free else f"onnxcam_{name}")
    return names[0], names[1]


@dataclass
class ReportSummary:
    """What :func:`build_report` wrote and what it skipped."""

    page: Path
    skipped: RecordCounts


def build_report(out_dir: Path) -> Path:
    """Write ``OUT/index.html`` and ``OUT/contact_sheet.png`` from ``OUT``'s records."""
    return write_report(out_dir).page


def write_report(out_dir: Path) -> ReportSummary:
    """:func:`build_report`, saying also how many records were skipped (too large, or not
    valid records)."""
    out = Confined(out_dir)
    settings = _settings(out)
    records = _Records(out)
    files = _Files(out)
    page_name, sheet_name = _free_names(out)
    # the cards and details are made in the one pass that also counts what the header shows,
    # into unnamed files inside OUT (gone when closed), then put together after the header
    with (
        tempfile.TemporaryFile(dir=out.root) as cards,
        tempfile.TemporaryFile(dir=out.root) as details,
    ):
        summary = _summary(records, files, cards, details)
        out.write(MARKER, json.dumps([page_name, sheet_name]).encode())
        out.write(
            page_name, lambda sink: _page(sink, cards, details, settings, summary, sheet_name)
        )
    _write_sheet(out, summary.sheet, sheet_name)
    return ReportSummary(out.path(page_name), records.counts)


@dataclass
class _Summary:
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    first: Mapping[str, Any] | None = None
    classes: set[str] = field(default_factory=set)
    sheet: list[tuple[str, str]] = field(default_factory=list)  # (thumbnail, caption)
    failures: list[str] = field(default_factory=list)  # the first failures' list items


def _summary(records: _Records, files: _Files, cards: BinaryIO, details: BinaryIO) -> _Summary:
    """One pass over the images: each finished one's card and detail written to ``cards`` and
    ``details``; counts, time, classes, the sheet's pictures and the failures kept; the
    missing thumbnails made on the way."""
    summary = _Summary()
    for record in records.latest("ok", "error"):
        if record["status"] == "error":
            summary.failed += 1
            if len(summary.failures) < FAILURES_SHOWN:
                summary.failures.append(_failure(record))
            continue
        _ensure_thumbnail(files, record)
        cards.write(_card(files, summary.done, record).encode("utf-8", "surrogateescape"))
        details.write(_detail(files, summary.done, record).encode("utf-8", "surrogateescape"))
        summary.done += 1
        summary.first = summary.first or record
        timings = record.get("timings")
        total = timings.get("total_s") if isinstance(timings, dict) else None
        if isinstance(total, (int, float)) and _number(total):
            summary.seconds += float(total)
        if len(summary.classes) < _CLASS_CAP:
            label = _class_of(record)
            if label:
                summary.classes.add(_text(label))
        if len(summary.sheet) < SHEET_CAP:
            thumb = _thumb(files, record)
            if thumb is not None:
                first = _first(record)
                label = first.get("label") or first.get("class_index") or first.get("kind", "")
                name = Path(record["source"]).name
                summary.sheet.append((thumb, f"{name} {_text(label)} {_score(first.get('score'))}"))
    return summary


def _failure(record: Mapping[str, Any]) -> str:
    return (
        f"<li><code>{_e(record['source'])}</code>: {_e(record.get('error_type', 'Error'))}: "
        f"{_e(record.get('error', ''))}</li>"
    )


def _write_sheet(out: Confined, pictures: Sequence[tuple[str, str]], name: str) -> None:
    thumbs, captions = [], []
    for thumb, caption in pictures:
        data = out.read(thumb, max_bytes=_PICTURE_BYTES)
        if data is None:
            continue
        try:
            picture = decode_image(data, name=thumb)
        except ImageError:
            continue
        thumbs.append(np.ascontiguousarray(picture[..., ::-1]))  # the sheet's colours are grey
        captions.append(caption)
    if thumbs:
        # PNG's default settings are the fastest
        ok, buf = cv2.imencode(".png", contact_sheet(thumbs, captions))
        if ok:
            out.write(name, buf.tobytes())


def _header(settings: Mapping[str, Any], summary: _Summary) -> str:
    first = summary.first or {}
    per_image = summary.seconds / summary.done if summary.done else 0.0
    model = first.get("model") or "?"
    options = settings.get("method_options", {})
    targets = settings.get("targets")
    shown_targets = (
        ", ".join(_text(t) for t in targets[:20])
        if isinstance(targets, list) and targets
        else "the top class"
    )
    rows = [
        ("model", f"{Path(str(model)).name} (sha256 {settings.get('model_sha256', '?')})"),
        ("node", f"{first.get('node', '?')} (tensor {first.get('tensor', '?')})"),
        ("method", f"{first.get('method', settings.get('method', '?'))}"),
        ("options", json.dumps(options, sort_keys=True, default=str)),
        ("targets", shown_targets),
        ("provider", first.get("provider", "?")),
        ("onnxcam", first.get("onnxcam_version", settings.get("onnxcam_version", "?"))),
        ("images", f"{summary.done} explained, {summary.failed} failed"),
        ("time", f"{summary.seconds:.1f} s in all, {per_image:.2f} s per image"),
        ("report written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    cells = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in rows)
    return f"<header><h1>onnxcam report</h1><dl>{cells}</dl></header>"


def _thumb(files: _Files, record: Mapping[str, Any]) -> str | None:
    """The card's picture: the thumbnail, or the first overlay when the image is small."""
    stem = _stem(record)
    thumb = report_files(stem)["thumb"] if stem is not None else None
    if thumb is not None and thumb in files.pictures:
        return thumb
    first = _first_files(record)
    for name in (first.get("overlay"), first.get("saliency")):
        if files.linkable(name):
            return str(name)
    return None


def _card(files: _Files, index: int, record: Mapping[str, Any]) -> str:
    first = _first(record)
    name = Path(record["source"]).name
    label = first.get("label") or (
        f"class {first['class_index']}"
        if first.get("class_index") is not None
        else first.get("kind", "")
    )
    score = first.get("score")
    thumb = _thumb(files, record)
    picture = (
        f'<img loading="lazy" src="{_href(thumb)}" alt="{_e(name)}" width="200">' if thumb else ""
    )
    data = (
        f'data-name="{_e(name.lower())}" data-class="{_e(label)}" '
        f'data-score="{score if _number(score) else -1}"'
    )
    return (
        f'<a class="card" href="#d{index}" {data}>{picture}'
        f'<span class="name">{_e(name)}</span>'
        f'<span class="meta">{_e(label)} · {_score(score)}</span></a>'
    )


def _figure(src: str, caption: str) -> str:
    link = _href(src)
    return (
        f'<figure><a href="{link}"><img loading="lazy" src="{link}" alt="{_e(caption)}"></a>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _detail(files: _Files, index: int, record: Mapping[str, Any]) -> str:
    name = Path(record["source"]).name
    figures = []
    stem = _stem(record)
    original = report_files(stem)["original"] if stem is not None else None
    if original is not None and original in files.pictures:
        figures.append(_figure(original, "original"))
    for i, target in enumerate(record.get("targets") or []):
        names = target.get("files") or {}
        what = f"t{i}: {_text(target.get('summary', target.get('kind', '')))}"
        for kind in ("overlay", "emphasized", "saliency"):
            if kind in names and files.linkable(names[kind]):
                figures.append(_figure(names[kind], f"{what} ({kind})"))
    top5 = record.get("top5")
    rows = [t for t in top5[:5] if isinstance(t, dict)] if isinstance(top5, list) else []
    top = "".join(
        f"<tr><td>{_e(t.get('index'))}</td><td>{_e(t.get('label') or '')}</td>"
        f"<td>{_score(t.get('score'))}</td></tr>"
        for t in rows
    )
    table = f"<table><tr><th>class</th><th>label</th><th>p</th></tr>{top}</table>" if top else ""
    given = record.get("notes")
    notes = "".join(f"<li>{_e(n)}</li>" for n in (given[:20] if isinstance(given, list) else []))
    first = _first(record)
    return (
        f'<details id="d{index}"><summary>{_e(name)} — {_e(first.get("summary", ""))}</summary>'
        f'<p class="source">{_e(record["source"])}</p><div class="row">{"".join(figures)}</div>'
        f"{table}{f'<ul class=notes>{notes}</ul>' if notes else ''}</details>"
    )


def _page(
    handle: BinaryIO,
    cards: BinaryIO,
    details: BinaryIO,
    settings: Mapping[str, Any],
    summary: _Summary,
    sheet_name: str,
) -> None:
    """The page: the header, then the cards and details made by :func:`_summary`."""

    def put(text: str) -> None:
        handle.write(text.encode("utf-8", "surrogateescape"))

    classes = sorted(summary.classes)
    options = "".join(f'<option value="{_e(c)}">{_e(c)}</option>' for c in classes)
    put(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="onnxcam">
<title>onnxcam report</title>
<style>{_CSS}</style></head>
<body>
{_header(settings, summary)}
<nav><label>sort <select id="sort"><option value="name">file name</option>
<option value="class">class</option><option value="score">score</option></select></label>
<label>class <select id="filter"><option value="">all</option>{options}</select></label>
<span id="count">{summary.done} images</span> · <a href="{_href(sheet_name)}">contact sheet</a>
· <a href="results.jsonl">results.jsonl</a></nav>
<main id="sheet" class="grid">""")
    cards.seek(0)
    shutil.copyfileobj(cards, handle)
    put('</main>\n<section id="details"><h2>Images</h2>')
    details.seek(0)
    shutil.copyfileobj(details, handle)
    put(f'</section>\n<section id="failures"><h2>Failed ({summary.failed})</h2><ul>')
    put("".join(summary.failures))
    if summary.failed > len(summary.failures):
        put(f"<li>… and {summary.failed - len(summary.failures)} more in results.jsonl</li>")
    put(f"""</ul></section>
<footer>made by onnxcam; every link is relative to this folder.</footer>
<script>{_JS}</script>
</body></html>
""")


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
