"""Nothing outside OUT: no writer or deleter of the output folder leaves it or follows a link
out of it, whatever its records, links or leftovers say; records written by others are
validated and streamed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import build_tiny, tiny_weights, write_png

from onnxcam.cli import cli
from onnxcam.confined import Confined, confined_name
from onnxcam.errors import OutputError
from onnxcam.outdir import OutputFolder
from onnxcam.records import MAX_RECORD_BYTES, RecordCounts, iter_records
from onnxcam.render import build_report

HAS_FIFO = hasattr(os, "mkfifo")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return build_tiny(tmp_path / "model.onnx", tiny_weights())


def explain(model: Path, *args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["explain", str(model), *map(str, args), "--preset", "unit"])
    return result.exit_code, result.output


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (links not followed) with its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(folder))] = path.read_bytes()
    return found


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder of someone's files beside OUT, that no run may touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim.txt").write_text("precious\n")
    write_png(folder / "photo.png", 7, side=400)
    (folder / "sub").mkdir()
    (folder / "sub" / "x.json").write_text("{}\n")
    return folder


def append_lines(out: Path, *lines: object) -> None:
    with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def hostile_lines(outside: Path) -> list[object]:
    victim = outside / "victim.txt"
    return [
        {"status": "ok", "source": "g", "files": {"json": "../outside/victim.txt"}},
        {"status": "ok", "source": "h", "files": {"json": str(victim)}},
        {"status": "ok", "source": "i", "files": {"json": "../../pwned.json"},
         "targets": [{"files": {"overlay": str(outside / "photo.png")}}],
         "image_size": [400, 400]},
        {"status": "ok", "source": "j", "files": {"json": "j.json"},
         "targets": [{"files": {"overlay": "//attacker.example/p.png",
                                "saliency": "../outside/photo.png"}}]},
        {"status": "ok", "source": "a", "files": [1]},
        {"status": "ok", "source": 5, "files": {}},
        {"status": "ok", "source": "k", "targets": "nope"},
        '{"status": "ok", "source": "l", "files": {"json": "l.json"}, "pad": "'
        + "x" * (MAX_RECORD_BYTES + 10) + '"}',
        "[1, 2, 3]",
        '{"cut short',
    ]  # fmt: skip


def test_names_that_leave_the_folder_are_refused():
    for bad in ["../x", "/etc/passwd", "//host/p.png", "a/../../b", "", ".", "a//b", "C:x",
                "a\\b", "a\0b", 5, None, "./a"]:  # fmt: skip
        assert confined_name(bad) is None, bad
    assert str(confined_name("a/b_overlay.png")) == "a/b_overlay.png"


def test_overwrite_deletes_only_what_the_records_name_inside_out(tmp_path, model, outside):
    before = snapshot(outside)
    inputs = tmp_path / "in"
    write_png(inputs / "a.png", 1)
    out = tmp_path / "out"
    code, text = explain(model, inputs, "-o", out)
    assert code == 0, text
    (out / "notes.txt").write_text("mine\n")  # a user's own file, named by a hostile record
    append_lines(out, *hostile_lines(outside), {"status": "ok", "source": "m",
                                                "files": {"json": "notes.txt"}})  # fmt: skip
    code, text = explain(model, inputs, "-o", out, "--overwrite")
    assert code == 0, text
    assert snapshot(outside) == before
    assert (out / "notes.txt").read_text() == "mine\n"  # not an output's name: kept
    assert (out / "a_overlay.png").is_file()


def test_report_writes_and_reads_nothing_outside_out(tmp_path, model, outside, monkeypatch):
    before = snapshot(outside)
    inputs = tmp_path / "in"
    write_png(inputs / "a.png", 1)
    write_png(inputs / "b.png", 2)
    out = tmp_path / "deep" / "out"
    code, text = explain(model, inputs, "-o", out)
    assert code == 0, text
    append_lines(out, *hostile_lines(outside))
    monkeypatch.chdir(out)
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert snapshot(outside) == before
    assert not (tmp_path / "pwned.jpg").exists() and not (tmp_path / "deep" / "pwned.jpg").exists()
    assert not any(p.name.startswith("pwned") for p in tmp_path.rglob("*"))
    page = (out / "index.html").read_text()
    assert "attacker.example" not in page
    assert "outside" not in page and "passwd" not in page
    for src in [*page.split('src="')[1:], *page.split('href="')[1:]]:
        link = src.split('"')[0]
        if link.startswith("#"):
            continue
        assert confined_name(link.replace("%20", " ")) is not None, link
    assert "skipped" in result.output  # the invalid and oversized lines are counted


@pytest.mark.skipif(not HAS_FIFO, reason="no FIFOs on this platform")
def test_a_fifo_named_as_an_overlay_does_not_hang_the_report(tmp_path, model):
    inputs = tmp_path / "in"
    write_png(inputs / "a.png", 1, side=300)
    out = tmp_path / "out"
    assert explain(model, inputs, "-o", out, "--no-report")[0] == 0
    os.mkfifo(out / "f_overlay.png")
    append_lines(out, {"status": "ok", "source": "f", "files": {"json": "f.json"},
                       "image_size": [400, 400],
                       "targets": [{"files": {"overlay": "f_overlay.png"}}]})  # fmt: skip
    done = threading.Event()
    thread = threading.Thread(target=lambda: (build_report(out), done.set()), daemon=True)
    thread.start()
    thread.join(30)
    if not done.is_set():  # unblock the reader before failing
        with open(out / "f_overlay.png", "wb"):
            pass
        pytest.fail("the report hung on a FIFO")
    assert (out / "index.html").is_file()


def test_links_inside_out_are_never_followed(tmp_path, model, outside):
    before = snapshot(outside)
    inputs = tmp_path / "in"
    write_png(inputs / "sub" / "a.png", 1, side=300)
    write_png(inputs / "b.png", 2, side=300)
    out = tmp_path / "out"
    out.mkdir()
    (out / "thumbs").symlink_to(outside)  # thumbnails would overwrite the outside files
    (out / "sub").symlink_to(outside / "sub")  # the mirrored folder of sub/a.png
    (out / ".b_overlay.png.part").symlink_to(outside / "victim.txt")
    (out / "b_saliency.png").symlink_to(outside / "victim.txt")
    code, text = explain(model, inputs, "-o", out)
    assert snapshot(outside) == before
    assert code != 0  # the images whose files would go through a link failed, in one line each
    assert "Traceback" not in text and "symbolic link" in text
    assert (outside / "victim.txt").read_text() == "precious\n"
    assert os.path.islink(out / "b_saliency.png")  # a user's link is not replaced either


def test_results_jsonl_as_a_link_is_refused(tmp_path, model, outside):
    inputs = tmp_path / "in"
    write_png(inputs / "a.png", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.jsonl").symlink_to(outside / "victim.txt")
    (out / "run.json").write_text("{}")
    for extra in ([], ["--overwrite"]):
        code, text = explain(model, inputs, "-o", out, *extra)
        assert code != 0 and "symbolic link" in text and "Traceback" not in text
    assert (outside / "victim.txt").read_text() == "precious\n"


def test_stale_cleanup_takes_only_onnxcams_own_temporary_files(tmp_path, model):
    folder = tmp_path / "in"
    write_png(folder / "a.png", 1)
    (folder / ".thesis.part").write_text("draft\n")
    (folder / "sub").mkdir()
    (folder / "sub" / ".notes.part").write_text("draft\n")
    (folder / ".onnxcam-0123456789ab.part").write_text("left by a killed run\n")
    code, text = explain(model, folder / "a.png", "-o", folder)
    assert code == 0, text
    assert (folder / ".thesis.part").read_text() == "draft\n"
    assert (folder / "sub" / ".notes.part").read_text() == "draft\n"
    assert not (folder / ".onnxcam-0123456789ab.part").exists()


def test_a_long_file_name_fails_nothing(tmp_path, model):
    inputs = tmp_path / "in"
    names = ["a" * 245 + ".png", "b.png", "c" * 250 + ".png", "d.png"]
    for i, name in enumerate(names):
        write_png(inputs / name, i)
    out = tmp_path / "out"
    code, text = explain(model, inputs, "-o", out)
    assert code == 0, text
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == ["ok"] * 4
    for line in lines:
        for name in line["files"].values():
            assert len(name.encode()) <= 255 and (out / name).is_file()
    code, text = explain(model, inputs, "-o", out)  # and a rerun finds them finished
    assert code == 0 and "4 already explained" in text


KILL_ON_SECOND_RECORD = textwrap.dedent(
    """
    import os, signal, sys
    from onnxcam.outdir import OutputFolder
    from onnxcam.cli import main
    seen = []
    original = OutputFolder.record
    def record(self, line):
        seen.append(line)
        if len(seen) == 2:  # the second image's files are written, its line is not
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, line)
    OutputFolder.record = record
    sys.argv = ["onnxcam", *sys.argv[1:]]
    main()
    """
)


def test_a_kill_between_files_and_line_leaves_no_orphans_nor_fake_inputs(tmp_path, model):
    folder = tmp_path / "photos"
    for i in range(3):
        write_png(folder / f"img{i}.png", i)
    args = [str(model), str(folder), "-o", str(folder), "--preset", "unit"]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_ON_SECOND_RECORD, "explain", *args],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert killed.returncode == -signal.SIGKILL
    assert (folder / "img1_overlay.png").is_file()  # the orphan
    code, text = explain(model, folder, "-o", folder)
    assert code == 0, text
    lines = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    sources = sorted(Path(line["source"]).name for line in lines if line["status"] == "ok")
    assert sources == ["img0.png", "img1.png", "img2.png"]  # no overlay explained as input
    assert not list(folder.glob("*_2*")) and not list(folder.glob("*overlay_overlay*"))


def test_records_are_validated_streamed_and_counted(tmp_path, outside):
    path = tmp_path / "results.jsonl"
    lines = [*hostile_lines(outside), {"status": "error", "source": "z", "error": "bad"}]
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    counts = RecordCounts()
    with open(path, "rb") as handle:
        found = list(iter_records(handle, counts))
    assert [r["source"] for r in found] == ["z"]
    assert counts.too_large == 1
    assert counts.invalid == 8  # escaping names, wrong types, a list


def test_wrong_field_types_fail_no_command(tmp_path, model):
    inputs = tmp_path / "in"
    write_png(inputs / "a.png", 1)
    out = tmp_path / "out"
    assert explain(model, inputs, "-o", out)[0] == 0
    append_lines(out, {"status": "ok", "source": "a", "files": [1]},
                 {"status": "ok", "source": "b", "targets": [{"files": 3}]})  # fmt: skip
    for extra in ([], ["--overwrite"]):
        code, text = explain(model, inputs, "-o", out, *extra)
        assert code == 0 and "unexpected" not in text, text
    result = CliRunner().invoke(cli, ["report", str(out)])
    assert result.exit_code == 0 and "unexpected" not in result.output


def test_a_lock_on_a_file_unlinked_by_its_last_holder_is_not_taken(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    stale = os.open(out / ".onnxcam.lock", os.O_RDWR | os.O_CREAT)
    os.unlink(out / ".onnxcam.lock")  # as a releasing run does, while we still hold the file
    calls = []
    real = Confined.open_lock

    def open_lock(self, name):
        calls.append(name)
        return os.dup(stale) if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(Confined, "open_lock", open_lock)
    with OutputFolder(out, settings={}, inputs=[]):
        assert (out / ".onnxcam.lock").is_file()  # the lock taken is the file that is there
    assert len(calls) == 2
    os.close(stale)


def test_a_full_disk_names_the_file_and_leaves_nothing(tmp_path, model, monkeypatch):
    inputs = tmp_path / "in"
    write_png(inputs / "a.png", 1)
    out = tmp_path / "out"

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, text = explain(model, inputs, "-o", out)
    assert code != 0 and "results.jsonl" in text and "No space left" in text
    assert "unexpected" not in text and "Traceback" not in text
    assert not list(out.glob(".*.part")) and not (out / ".onnxcam.lock").exists()


def test_writes_through_confined_refuse_escaping_names(tmp_path, outside):
    out = Confined(tmp_path / "out")
    for bad in ["../outside/victim.txt", str(outside / "victim.txt")]:
        with pytest.raises(OutputError):
            out.write(bad, b"x")
        assert not out.unlink(bad)
    (tmp_path / "out" / "link").symlink_to(outside)
    with pytest.raises(OutputError, match="symbolic link"):
        out.write("link/victim.txt", b"x")
    assert not out.unlink("link/victim.txt")
    assert out.read("link/victim.txt", max_bytes=100) is None
    assert (outside / "victim.txt").read_text() == "precious\n"
