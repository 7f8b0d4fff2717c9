"""Dataset-scale pieces without Ray: the worker (rows, schema, error rows, crash counting with
real process kills), manifests, output names, the table's reconcile, the preflight checks, and
a local run that never imports Ray."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from shapes_data import SHAPES_MODEL, KillOn, write_bad, write_shapes

from onnxcam import Explainer
from onnxcam.cli import cli
from onnxcam.errors import ClusterError, ConfigError
from onnxcam.outdir import relative_stems

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from onnxcam.dataset.ledger import CrashLedger  # noqa: E402 (needs pyarrow)
from onnxcam.dataset.manifest import from_paths, read_manifest  # noqa: E402
from onnxcam.dataset.naming import assign_stems, blocked_stems  # noqa: E402
from onnxcam.dataset.preflight import check_resources, sees_shared  # noqa: E402
from onnxcam.dataset.schema import RESULT_SCHEMA, ROW_SCHEMA  # noqa: E402
from onnxcam.dataset.table import TableWriter, finished_paths, latest_rows, reconcile  # noqa: E402
from onnxcam.dataset.worker import LEDGER, ExplainWorker, WorkerSettings  # noqa: E402


@pytest.fixture(scope="module")
def explainer() -> Explainer:
    return Explainer(SHAPES_MODEL, threads=1)


def batch(paths: list[str], **columns: list) -> pa.Table:
    table = from_paths(paths)
    stems = relative_stems([Path(p) for p in paths]) if "stem" not in columns else None
    for name, values in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, [values])
    return table.append_column("stem", [columns.get("stem", stems)])


def test_worker_rows_follow_the_schema_and_equal_a_local_run(tmp_path, explainer):
    good = write_shapes(tmp_path / "data", 5)
    bad = write_bad(tmp_path / "data" / "bad")
    uri = good[0].resolve().as_uri()  # file:// is read through pyarrow.fs, like s3://
    inputs = [str(p) for p in good] + [str(p) for p in bad] + [uri, str(tmp_path / "gone.png")]
    worker = ExplainWorker(explainer.config, WorkerSettings(out_dir=str(tmp_path / "out")))
    table = worker(from_paths(inputs))
    assert table.schema == ROW_SCHEMA
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == inputs
    assert [r["status"] for r in rows] == ["ok"] * 5 + ["error"] * 2 + ["ok", "error"]
    errors = {r["path"]: (r["error_type"], r["error"]) for r in rows if r["status"] == "error"}
    assert (
        errors[str(bad[0])][0] == "ImageError"
        and "pixels, above the limit" in (errors[str(bad[0])][1])
    )
    assert errors[str(bad[1])] == ("ImageError", f"{bad[1]}: image file is empty")
    assert errors[str(tmp_path / "gone.png")][1].startswith("image not found")
    for row, path in zip(rows, [*good, None, None, good[0]], strict=False):
        if path is None:
            continue
        alone = explainer.explain(path)
        saved = np.load(tmp_path / "out" / row["maps"][0])
        np.testing.assert_array_equal(saved, alone.saliency)
        assert row["classes"] == [alone.class_index] and row["passes"] == alone.masked_passes
        assert row["scores"][0] == pytest.approx(alone.score)
        record = json.loads(row["record"])
        assert record["status"] == "ok" and record["source"] == row["path"]
        assert json.loads((tmp_path / "out" / row["json"]).read_text())["source"] == row["path"]
        assert row["worker"] and row["provider"] == "CPUExecutionProvider" and row["seconds"] > 0
    # without a stem column each path gets its own name (its folders, its name, a hash)
    assert rows[0]["json"] != rows[7]["json"]


def test_rows_with_their_own_targets_share_a_worker(tmp_path, explainer):
    paths = [str(p) for p in write_shapes(tmp_path / "data", 5)]
    targets = ["class:0", "class:3", None, "class:99", "bogus:1"]
    labels = ["disc", "cross", None, "x", "y"]
    worker = ExplainWorker(explainer.config, WorkerSettings(out_dir=str(tmp_path / "out")))
    rows = worker(batch(paths, target=targets, label=labels)).to_pylist()
    assert [r["classes"] for r in rows[:3]] == [[0], [3], [explainer.explain(paths[2]).class_index]]
    assert [r["label"] for r in rows] == labels and [r["target"] for r in rows] == targets
    assert rows[3]["error_type"] == "ConfigError" and "out of range" in rows[3]["error"]
    assert rows[4]["error_type"] == "ConfigError" and "bogus" in rows[4]["error"]


def _attempt(config, settings, target, table, queue) -> None:  # a worker process's life
    worker = ExplainWorker(config, settings, target=target)
    queue.put(worker(table).to_pylist())


def test_an_image_that_kills_its_worker_is_quarantined_after_max_crashes(tmp_path, explainer):
    """What Ray does after a worker dies (a fresh process, the same batch again), with real
    SIGKILLs: the batch dies once, the poison image twice alone, then it is an error row and
    its neighbours are explained."""
    paths = [str(p) for p in write_shapes(tmp_path / "data", 5)]
    poison = paths[2]
    target = KillOn(next(iter(explainer.forward(poison).outputs.values()))[0])
    settings = WorkerSettings(out_dir=str(tmp_path / "out"), max_crashes=2, thumbnails=False)
    table = batch(paths)
    # forked from a clean server, not from this process: a fork of a process whose ONNX Runtime
    # thread pools are running can inherit a lock held by one of them and hang
    context = multiprocessing.get_context("forkserver")
    exits = []
    for _ in range(6):
        queue = context.Queue()
        child = context.Process(
            target=_attempt, args=(explainer.config, settings, target, table, queue)
        )
        child.start()
        child.join(60)
        exits.append(child.exitcode)
        if child.exitcode == 0:
            rows = queue.get(timeout=10)
            break
    assert exits == [-9, -9, -9, 0]  # the batch once, then the image alone max_crashes times
    by_path = {r["path"]: r for r in rows}
    assert by_path[poison]["error_type"] == "WorkerCrash" and by_path[poison]["crashes"] == 2
    assert "killed its worker 2 times" in by_path[poison]["error"]
    assert [by_path[p]["status"] for p in paths if p != poison] == ["ok"] * 4
    ledger = CrashLedger(tmp_path / "out" / LEDGER)
    assert ledger.total() == {poison: 2}
    # a later run (a resume) does not run it again: the count stays, no process dies
    again = ExplainWorker(explainer.config, settings, target=target)(batch([poison]))
    assert again.to_pylist()[0]["crashes"] == 2


def test_only_a_crash_alone_counts(tmp_path, explainer):
    paths = [str(p) for p in write_shapes(tmp_path / "data", 3)]
    settings = WorkerSettings(out_dir=str(tmp_path / "out"), max_crashes=2)
    worker = ExplainWorker(explainer.config, settings)
    ledger = CrashLedger(tmp_path / "out" / LEDGER)
    ledger.begin(paths)  # the batch was running when its worker died
    rows = worker(batch(paths)).to_pylist()
    assert [(r["status"], r["crashes"]) for r in rows] == [("ok", 0)] * 3
    assert not ledger.running(paths)
    ledger.begin(paths)
    ledger.begin([paths[1]])  # ... and the second image was running alone
    rows = worker(batch(paths)).to_pylist()
    assert [r["crashes"] for r in rows] == [0, 1, 0] and rows[1]["status"] == "ok"
    ledger.clear_inflight()
    assert ledger.total() == {paths[1]: 1}


def test_manifests(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    lines = ["path,target,label,extra", "imgs/a.png,class:3,cross,1", "/abs/b.png,,disc,2",
             "s3://bucket/c.png,top:2,,3"]  # fmt: skip
    (folder / "list.csv").write_text("\n".join(lines) + "\n")
    table = read_manifest(str(folder / "list.csv"))
    assert table.column_names == ["path", "location", "target", "label"]
    assert table.column("location").to_pylist() == [
        str(folder / "imgs" / "a.png"), "/abs/b.png", "s3://bucket/c.png"
    ]  # fmt: skip
    assert table.column("target").to_pylist() == ["class:3", None, "top:2"]
    assert table.column("label").to_pylist() == ["cross", "disc", None]
    pq.write_table(pa.table({"path": ["x.png", "y.png"], "label": [1, 2]}), folder / "l.parquet")
    assert read_manifest(str(folder / "l.parquet")).column("label").to_pylist() == ["1", "2"]
    bad = {
        "nopath.csv": ("file,label\na.png,1\n", "has no 'path' column (its columns: file, label)"),
        "twice.csv": ("path\na.png\nb.png\na.png\n", "'a.png' is listed twice (rows 1 and 3)"),
        "blank.csv": ("path,label\n,1\n", "row 1 has an empty path"),
    }
    for name, (text, message) in bad.items():
        (folder / name).write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_manifest(str(folder / name))
    with pytest.raises(ConfigError, match="not found"):
        read_manifest(str(folder / "missing.csv"))


def test_names_are_a_local_runs_and_never_meet_other_files(tmp_path):
    names = ["a/x.png", "b/x.png", "c/x_2.png", "c/x.jpg", "c/x.bmp"]
    paths = [tmp_path / n for n in names]
    assert assign_stems([str(p) for p in paths]) == relative_stems(paths)
    uris = ["s3://b/data/a/x.png", "s3://b/data/b/x.png", "s3://b/data/y.png"]
    assert assign_stems(uris) == ["a/x", "b/x", "y"]
    blocked = blocked_stems(["y_overlay.png", "thumbs/a/x_original.jpg", "notes.txt"])
    assert assign_stems(uris, blocked=blocked) == ["a/x_2", "b/x", "y_2"]
    # run.json and summary.json are the job's; x_t0.npy would be x's second map's name
    stems = assign_stems([str(tmp_path / n) for n in ["run.png", "x.png", "x_t0.png"]])
    assert stems == ["run_2", "x_2", "x_t0"]


def test_reconcile_keeps_every_input_once(tmp_path):
    state = tmp_path / LEDGER
    manifest = from_paths(["a.png", "b.png", "c.png", "d.png"])

    def row(path: str, status: str, json_name: str | None = None) -> dict:
        return {"path": path, "status": status, "json": json_name, "maps": [], "overlays": []}

    first = TableWriter(state, "0001")
    first.add([row("a.png", "error"), row("b.png", "ok", "b.json")])
    first.close()
    second = TableWriter(state, "0002", every=1)
    second.add([row("a.png", "ok", "a.json")])  # a retried image: the later row wins
    (tmp_path / "a.json").write_text("{}")
    latest = latest_rows(tmp_path, state)
    assert sorted(zip(latest.column("path").to_pylist(), latest.column("status").to_pylist(),
                      strict=True)) == [("a.png", "ok"), ("b.png", "ok")]  # fmt: skip
    assert finished_paths(latest, tmp_path) == {"a.png"}  # b.json is not there
    table = reconcile(
        tmp_path, state, manifest, finished=set(), produced={"a.png"},
        local_records={"c.png": {"status": "ok", "files": {"json": "c.json"}, "targets": []}},
    )  # fmt: skip
    assert table.schema == RESULT_SCHEMA
    assert table.column("path").to_pylist() == ["a.png", "b.png", "c.png", "d.png"]
    assert table.column("status").to_pylist() == ["ok", "lost", "ok", "lost"]
    assert pq.read_table(tmp_path / "results.parquet").num_rows == 4
    assert not list((state / "parts").iterdir())


def test_preflight_refuses_what_a_cluster_cannot_run(tmp_path):
    cpus = {"CPU": 2.0}
    with pytest.raises(ClusterError, match="asks for GPUs, but the cluster has 2 CPUs and 0 GPUs"):
        check_resources(cpus, workers=None, cpus_per_worker=1, gpus_per_worker=1)
    with pytest.raises(ClusterError, match=r"3 workers of 1 CPUs each do not fit.*at most 2"):
        check_resources(cpus, workers=(3, 3), cpus_per_worker=1, gpus_per_worker=0)
    with pytest.raises(ClusterError, match="a worker needs 4 CPUs"):
        check_resources(cpus, workers=None, cpus_per_worker=4, gpus_per_worker=0)
    assert check_resources(cpus, workers=None, cpus_per_worker=1, gpus_per_worker=0) == (2, 2)
    # a Dataset with read tasks deadlocks when its actors hold every CPU
    with pytest.raises(ClusterError, match=r"2 CPUs and 0 GPUs \(1 CPU left for reading and"):
        check_resources(cpus, workers=(2, 2), cpus_per_worker=1, gpus_per_worker=0, reserve_cpus=1)
    assert check_resources(
        {"CPU": 16, "GPU": 2}, workers=(1, 8), cpus_per_worker=2, gpus_per_worker=0.5
    ) == (1, 8)  # fmt: skip
    assert check_resources(
        {"CPU": 16, "GPU": 2}, workers=None, cpus_per_worker=1, gpus_per_worker=0.5
    ) == (4, 4)  # fmt: skip
    (tmp_path / ".probe").write_text("x")
    assert sees_shared(str(tmp_path), ".probe", []) is None
    assert "does not see the output folder" in sees_shared(str(tmp_path), ".other", [])
    assert "does not see /nowhere.onnx" in sees_shared(str(tmp_path), ".probe", ["/nowhere.onnx"])


def test_a_local_run_never_imports_ray(tmp_path):
    paths = write_shapes(tmp_path / "data", 2)
    code = (
        "import sys\nfrom onnxcam.cli import cli\n"
        f"try:\n    cli(['explain', {str(SHAPES_MODEL)!r}, {str(paths[0].parent)!r}, "
        f"'-o', {str(tmp_path / 'out')!r}])\nexcept SystemExit as e:\n    assert not e.code\n"
        "assert 'ray' not in sys.modules and 'pyarrow' not in sys.modules, 'imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "results.jsonl").is_file()


def test_ray_options_need_the_ray_engine(tmp_path):
    image = write_shapes(tmp_path / "data", 1)[0]
    runner = CliRunner()
    args = ["explain", str(SHAPES_MODEL), str(image), "-o", str(tmp_path / "out")]
    result = runner.invoke(cli, [*args, "--workers", "2"])
    assert result.exit_code == 2 and "--workers needs --engine ray" in result.output
    result = runner.invoke(cli, [*args, "--engine", "ray", "--workers", "3:1"])
    assert result.exit_code == 2 and "need 1 <= MIN <= MAX" in result.output
    result = runner.invoke(cli, [*args, "--engine", "ray", "--max-crashes", "0"])
    assert result.exit_code == 2 and "--max-crashes" in result.output


def test_without_the_extra_the_ray_engine_is_one_line(tmp_path, monkeypatch):
    image = write_shapes(tmp_path / "data", 1)[0]
    monkeypatch.setitem(sys.modules, "ray", None)  # as if onnxcam[ray] were not installed
    monkeypatch.delitem(sys.modules, "onnxcam.dataset.ray", raising=False)
    out = tmp_path / "out"
    args = ["explain", str(SHAPES_MODEL), str(image), "-o", str(out), "--engine", "ray"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output == (
        "Error: --engine ray needs Ray Data (ray is missing): pip install 'onnxcam[ray]'\n"
    )
    assert not out.exists()


def test_progress_lines_escape_the_names_they_quote(capsys):
    """A stalled job names what it waits for (file names, a worker's error): one line."""
    from onnxcam.cli.dataset import _progress
    from onnxcam.dataset.job import Progress

    stalled = "waiting for a\nFAKE: 0 of 0 explained\r.png"
    _progress(Progress(1, 2, 0, 0, elapsed_s=9.0, rate=0.1, idle_s=700.0, stalled=stalled))
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "no image finished for 700 s: waiting for a\\x0aFAKE: 0 of 0 explained\\x0d.png"
    ]


def test_a_detector_gives_a_local_runs_files(tmp_path):
    """Every detection of an image (one target each, ``_t0``, ``_t1`` ...), boxes drawn on the
    overlays and thumbnails: the worker's files are the local run's, byte for byte."""
    import cv2

    from tools.scenes import make_scenes

    detector = SHAPES_MODEL.parent / "shapes_det_yolov8.onnx"
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i, scene in enumerate(make_scenes(2, seed=5)):
        assert cv2.imwrite(str(folder / f"s{i}.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    result = CliRunner().invoke(
        cli, ["explain", str(detector), str(folder), "-o", str(tmp_path / "local")]
    )
    assert result.exit_code == 0, result.output
    paths = sorted(folder.iterdir())
    settings = WorkerSettings(out_dir=str(tmp_path / "worker"))
    rows = ExplainWorker(Explainer(detector).config, settings)(batch([str(p) for p in paths]))
    assert [len(r["targets"]) > 1 for r in rows.to_pylist()] == [True, True]

    def files(out: Path) -> dict[str, bytes]:
        skip = {"results.jsonl", "run.json", "index.html", "contact_sheet.png", ".onnxcam-report"}
        found = {}
        for path in out.rglob("*"):
            name = path.relative_to(out).as_posix()
            if path.is_file() and name not in skip and not name.startswith(LEDGER):
                found[name] = path.read_bytes()
        return found

    local, worker = files(tmp_path / "local"), files(tmp_path / "worker")
    assert sorted(local) == sorted(worker) and any("_t1.npy" in n for n in local)
    for name, data in local.items():
        if not name.endswith(".json"):  # records differ in their timings only
            assert worker[name] == data, name


def test_one_image_named_two_ways_is_listed_twice_and_uri_rows_move_no_local_names(tmp_path):
    with pytest.raises(ConfigError, match=r"'./x.png' is listed twice \(rows 1 and 2, as 'x.png'"):
        from_paths(["x.png", "./x.png"], base=str(tmp_path))
    with pytest.raises(ConfigError, match="listed twice"):
        from_paths(["s3://b/d/x.png", "s3://b/d/./x.png"])
    local = [str(tmp_path / "in" / n) for n in ("a.png", "sub/b.png")]
    alone = assign_stems(local)
    assert alone == ["a", "sub/b"]
    assert assign_stems([*local, "s3://bucket/imgs/c.png"]) == [*alone, "c"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_or_a_device_row_is_an_error_not_a_hang(tmp_path):
    from onnxcam.dataset.manifest import read_bytes
    from onnxcam.errors import ImageError

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    done = []
    thread = threading.Thread(target=lambda: done.append(_refusal(read_bytes, fifo)), daemon=True)
    thread.start()
    thread.join(20)
    if not done:
        with open(fifo, "wb"):  # unblock the reader before failing
            pass
        pytest.fail("reading a FIFO row blocked")
    assert isinstance(done[0], ImageError) and "not a regular file" in str(done[0])
    zero = _refusal(read_bytes, Path("/dev/zero"))
    assert isinstance(zero, ImageError), zero
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2000)
    assert "larger than" in str(_refusal(read_bytes, big, limit=1000))


def _refusal(read_bytes, path: Path, limit: int = 1 << 20) -> BaseException | None:
    try:
        read_bytes(path.as_uri(), max_bytes=limit)
    except Exception as exc:
        return exc
    return None
