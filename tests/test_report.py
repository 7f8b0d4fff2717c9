"""The HTML reports: read as HTML (every image once, every link a file in the folder, nothing
fetched from the web, failures listed, names escaped) and rendered in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SIZE, build_tiny, tiny_weights

from onnxcam.cli import cli
from onnxcam.render import emphasize

HOSTILE_LABEL = '<script>alert("x")</script>'


class Page(HTMLParser):
    """Links, image sources, cards and the failures list of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.cards: list[dict[str, str | None]] = []
        self.in_failures = False
        self.failures: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attr = dict(attrs)
        for key in ("href", "src"):
            if attr.get(key):
                self.links.append(attr[key])
        if tag == "a" and "card" in (attr.get("class") or ""):
            self.cards.append(attr)
        if tag == "section" and attr.get("id") == "failures":
            self.in_failures = True
        if tag == "script":
            self.scripts += 1

    def handle_data(self, data):
        if self.in_failures and data.strip():
            self.failures.append(data.strip())


def parse(path: Path) -> tuple[Page, str]:
    text = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(text)
    return page, text


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, 3), np.uint8)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    labels = json.dumps(["cat", HOSTILE_LABEL, "cup"])
    model = build_tiny(tmp_path / "model.onnx", tiny_weights(), metadata={"labels": labels})
    data = tmp_path / "data"
    for i in range(5):
        (data / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data / f"sub{i % 2}" / f"img {i}.png"), image(i))
    (data / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["explain", str(model), str(data), "-o", str(out), "--preset", "unit", "--emphasize"]
    )
    assert result.exit_code == 1 and "1 of 6 images failed" in result.output
    return out


def test_every_image_once_every_link_local_failures_listed(run):
    page, text = parse(run / "index.html")
    assert len(page.cards) == 5
    names = sorted(str(card["data-name"]) for card in page.cards)
    assert names == sorted(f"img {i}.png" for i in range(5))
    assert "http://" not in text and "https://" not in text and "//" not in "".join(page.links)
    for link in page.links:
        assert not urlparse(link).scheme and not link.startswith("/"), link
        target = (run / unquote(link.split("#")[0])).resolve() if not link.startswith("#") else None
        if target is not None:
            assert target.is_file() and run.resolve() in target.parents, link
    assert any("broken.png" in line for line in page.failures)
    assert any("not a readable image" in line for line in page.failures)
    assert HOSTILE_LABEL not in text and "&lt;script&gt;" in text and page.scripts == 1
    assert (run / "contact_sheet.png").is_file()
    sheet = cv2.imread(str(run / "contact_sheet.png"))
    assert sheet is not None and sheet.std() > 5  # not blank


def test_report_rebuilds_from_the_records(run):
    (run / "index.html").unlink()
    shutil.rmtree(run / "thumbs")
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page, _ = parse(run / "index.html")
    assert len(page.cards) == 5
    for card in page.cards:
        assert card["href"] and card["href"].startswith("#d")
    pictures = [link for link in page.links if link.endswith((".jpg", ".png"))]
    assert pictures and all((run / unquote(link)).is_file() for link in pictures)
    missing = CliRunner().invoke(cli, ["report", str(run / "nope")])
    assert missing.exit_code == 1 and "holds no onnxcam run" in missing.output


def test_single_image_writes_a_report_only_when_asked(tmp_path):
    model = build_tiny(tmp_path / "model.onnx", tiny_weights())
    cv2.imwrite(str(tmp_path / "one.png"), image(0))
    for flags, expected in [((), False), (("--report",), True)]:
        out = tmp_path / f"out{len(flags)}"
        args = ["explain", str(model), str(tmp_path / "one.png"), "-o", str(out), "--preset",
                "unit", *flags]  # fmt: skip
        assert CliRunner().invoke(cli, args).exit_code == 0
        assert (out / "index.html").exists() is expected


def test_someone_elses_index_html_is_kept(tmp_path, run):
    (run / "index.html").unlink()
    (run / "index.html").write_text("<p>mine</p>")
    (run / ".onnxcam-report").unlink()
    CliRunner().invoke(cli, ["report", str(run)])
    assert (run / "index.html").read_text() == "<p>mine</p>"
    assert (run / "onnxcam_index.html").is_file()


def test_emphasized_overlay_is_written_and_steep(run):
    record = json.loads(next(run.rglob("img 0.json")).read_text())
    assert record["targets"][0]["files"]["emphasized"].endswith("img 0_emphasized.png")
    values = emphasize(np.array([[0.0, 0.4, 0.5, 0.6, 1.0]], np.float32))
    np.testing.assert_allclose(values[0, 2], 0.5, atol=1e-6)
    assert values[0, 0] < 1e-6 and values[0, 1] < 0.01 and values[0, 3] > 0.99


def test_evaluate_writes_a_report_with_curves_and_a_grid(tmp_path):
    model = build_tiny(tmp_path / "model.onnx", tiny_weights())
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"e{i}.png"), image(i))
    out = tmp_path / "eval"
    args = ["evaluate", str(model), *(str(tmp_path / f"e{i}.png") for i in range(3)), "-o",
            str(out), "--preset", "unit", "--steps", "4"]  # fmt: skip
    assert CliRunner().invoke(cli, args).exit_code == 0
    page, text = parse(out / "report.html")
    assert text.count("<svg") == 2 and text.count("<polyline") == 2 * 4  # 4 methods, 2 curves
    assert "http://" not in text and "https://" not in text
    pictures = [link for link in page.links if link.startswith("maps/")]
    assert len(pictures) == 3 * 4 and all((out / unquote(p)).is_file() for p in pictures)
    assert json.loads((out / "evaluation.json").read_text())["summary"]["scorecam"]["images"] == 3


# ----------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]  # fmt: skip


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    env = {**os.environ, "HOME": str(tmp_path)}
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs Debian's package)")
def test_the_page_loads_sorts_and_draws_in_a_real_browser(run, tmp_path):
    url = (run / "index.html").resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = chromium(tmp_path, "--window-size=1200,900", f"--screenshot={shot}", url)
    assert shot.is_file(), done.stderr[-2000:]
    picture = cv2.imread(str(shot))
    assert picture is not None and picture.std() > 10  # drawn, not blank
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not [line for line in console if "rror" in line or "Uncaught" in line], console
    scores = []
    for key in ("score", "name"):
        dom = chromium(tmp_path, "--dump-dom", f"{url}#sort={key}").stdout
        page = Page()
        page.feed(dom)
        assert len(page.cards) == 5
        scores.append([(float(str(c["data-score"])), str(c["data-name"])) for c in page.cards])
    by_score, by_name = scores
    assert [s for s, _ in by_score] == sorted((s for s, _ in by_score), reverse=True)
    assert [n for _, n in by_name] == sorted(n for _, n in by_name)
    classes = sorted({str(c["data-class"]) for c in page.cards})
    wanted = classes[0]
    page = Page()
    page.feed(chromium(tmp_path, "--dump-dom", f"{url}#class={quote(wanted)}").stdout)
    shown = [c for c in page.cards if "hidden" not in c]
    assert shown and all(c["data-class"] == wanted for c in shown)
    assert len(shown) == sum(c["data-class"] == wanted for c in page.cards)
