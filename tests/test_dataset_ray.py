"""``--engine ray`` on one local Ray cluster (2 CPUs) shared by the module: every input once,
the maps of a local run bit for bit, per-row targets from a manifest, a killed job resumed
without redoing finished images, a poison image quarantined, preflight refusals, a stall."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import shapes_data
from click.testing import CliRunner
from shapes_data import SHAPES_MODEL, Holder, KillOn, write_bad, write_shapes

from onnxcam import ClusterError, Explainer
from onnxcam.cli import cli

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from onnxcam.dataset.schema import ROW_SCHEMA  # noqa: E402
from onnxcam.scale.manifest import from_paths  # noqa: E402 (needs pyarrow)
from onnxcam.scale.ray import JobOptions, Progress, explain_dataset, run_job  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:::ray")  # Ray's notices about its own options


@pytest.fixture(scope="module")
def cluster():
    """One local Ray for the module (starting one takes seconds); its GCS address."""
    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ray.cloudpickle.register_pickle_by_value(shapes_data)  # the tests' own target, to the actors
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def explain(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["explain", str(SHAPES_MODEL), *map(str, args)])
    return result.exit_code, result.output


def files(folder: Path) -> set[str]:
    skip = {"results.parquet", "summary.json"}
    return {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name not in skip and ".onnxcam-ray" not in p.parts
    }


def test_a_folder_gives_every_input_once_and_a_local_runs_maps(cluster, tmp_path):
    data = tmp_path / "data"
    good = write_shapes(data, 40)
    bad = write_bad(data / "b")
    code, output = explain(data, "-o", tmp_path / "ray", "--engine", "ray", "--workers", "2")
    assert code == 1, output
    assert "40 of 42 explained (0 in an earlier run), 2 failed, 0 lost" in output
    assert output.strip().splitlines()[-1] == "Error: 2 of 42 images failed"
    table = pq.read_table(tmp_path / "ray" / "results.parquet")
    assert sorted(table.column("path").to_pylist()) == sorted(map(str, [*good, *bad]))
    failed = {r["path"]: r for r in table.to_pylist() if r["status"] != "ok"}
    assert set(failed) == set(map(str, bad))
    assert "pixels, above the limit" in failed[str(bad[0])]["error"]
    assert failed[str(bad[1])]["error"] == f"{bad[1]}: image file is empty"
    workers = {r["worker"] for r in table.to_pylist() if r["status"] == "ok"}
    assert len(workers) == 2
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert (summary["ok"], summary["errors"], summary["lost"]) == (40, 2, 0)
    assert summary["model_sha256"] and summary["versions"]["ray"] == ray.__version__

    assert explain(data, "-o", tmp_path / "local")[0] == 1
    assert files(tmp_path / "ray") == files(tmp_path / "local")
    for name in files(tmp_path / "local"):
        if name.endswith(".npy"):
            np.testing.assert_array_equal(
                np.load(tmp_path / "ray" / name), np.load(tmp_path / "local" / name)
            )
    lines = [json.loads(x) for x in (tmp_path / "ray" / "results.jsonl").read_text().splitlines()]
    local = [json.loads(x) for x in (tmp_path / "local" / "results.jsonl").read_text().splitlines()]
    assert {(x["source"], x["status"]) for x in lines} == {
        (x["source"], x["status"]) for x in local
    }
    assert {frozenset(x) for x in lines} == {frozenset(x) for x in local}  # the same fields

    (tmp_path / "ray" / "index.html").unlink()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "ray")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "ray" / "index.html").read_text()
    assert "broken.png" in page and "img039" in page


def test_a_manifest_gives_each_row_its_target(cluster, tmp_path):
    paths = write_shapes(tmp_path / "data", 6, split=False)
    rows = ["path,target,label"] + [
        f"data/{p.name},class:{i % 5},{i % 5}" for i, p in enumerate(paths[:4])
    ] + [f"data/{paths[4].name},,", f"data/{paths[5].name},class:77,x"]  # fmt: skip
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    code, output = explain(tmp_path / "list.csv", "-o", tmp_path / "out", "--engine", "ray")
    assert code == 1 and "5 of 6 explained" in output, output
    table = {r["path"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    for i, path in enumerate(paths[:4]):
        row = table[f"data/{path.name}"]
        assert row["classes"] == [i % 5] and row["label"] == str(i % 5)
    fifth = table[f"data/{paths[4].name}"]
    assert fifth["classes"] == [Explainer(SHAPES_MODEL).explain(paths[4]).class_index]
    sixth = table[f"data/{paths[5].name}"]
    assert sixth["error_type"] == "ConfigError" and "class 77 is out of range" in sixth["error"]


def test_a_users_dataset_gives_a_lazy_dataset_of_rows(cluster, tmp_path):
    """The composable API: a Dataset with only a path column, from the user's own pipeline."""
    paths = [str(p) for p in write_shapes(tmp_path / "data", 5, split=False)]
    explainer = Explainer(SHAPES_MODEL, threads=1)
    ds = ray.data.from_items([{"path": p, "extra": i} for i, p in enumerate(paths)])
    with pytest.raises(ClusterError, match="at most 1 can run"):  # no CPU left to read ds
        explain_dataset(ds, explainer, out_dir=tmp_path / "out", workers=2)
    rows = explain_dataset(ds, explainer, out_dir=tmp_path / "out", thumbnails=False)
    assert not list((tmp_path / "out").glob("**/*.npy"))  # lazy: nothing ran yet
    assert rows.schema().names == ROW_SCHEMA.names
    got = rows.take_all()
    assert sorted(r["path"] for r in got) == paths and {r["status"] for r in got} == {"ok"}
    for row in got:
        np.testing.assert_allclose(
            np.load(tmp_path / "out" / row["maps"][0]),
            explainer.explain(row["path"]).saliency,
            atol=1e-6,
        )


def test_a_killed_job_resumes_without_redoing_finished_images(cluster, tmp_path):
    data = tmp_path / "data"
    write_shapes(data, 60)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "onnxcam.cli", "explain", str(SHAPES_MODEL), str(data),
               "-o", str(out), "--engine", "ray", "--address", cluster,
               "--workers", "1"]  # fmt: skip
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    results = out / "results.jsonl"
    while time.monotonic() < deadline and job.poll() is None:
        if results.is_file() and results.read_text().count('"status": "ok"') >= 10:
            break
        time.sleep(0.02)
    assert job.poll() is None, job.stderr.read() if job.stderr else ""
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = [json.loads(x) for x in results.read_text().splitlines() if x.endswith("}")]
    done = {x["source"] for x in before if x["status"] == "ok"}
    assert 10 <= len(done) < 60
    maps = [out / x["files"]["npy"] for x in before if x["status"] == "ok"]
    stamps = {p: p.stat().st_mtime_ns for p in maps}  # finished images' maps are not rewritten

    code, output = explain(data, "-o", out, "--engine", "ray", "--resume")
    assert code == 0, output
    assert f"{len(done)} already explained, skipped" in output
    after = [json.loads(x) for x in results.read_text().splitlines() if x.endswith("}")]
    oks = [x["source"] for x in after if x["status"] == "ok"]
    assert len(oks) == len(set(oks)) == 60  # nothing done twice
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert sorted(p.name for p in out.rglob("*.npy")) == [f"img{i:03d}.npy" for i in range(60)]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["skipped"], summary["ok"]) == (len(done), 60)
    assert pq.read_table(out / "results.parquet").num_rows == 60


def test_an_image_that_kills_its_worker_is_quarantined(cluster, tmp_path):
    paths = write_shapes(tmp_path / "data", 12, split=False)
    explainer = Explainer(SHAPES_MODEL, threads=1)
    poison = str(paths[5])
    clean = next(iter(explainer.forward(poison).outputs.values()))[0]
    manifest = from_paths([str(p) for p in paths])
    options = JobOptions(workers=(2, 2), max_crashes=2, report=False)

    def run() -> object:
        return run_job(
            manifest, explainer, out_dir=tmp_path / "out", settings={"test": 1},
            target=KillOn(clean), options=options,
        )  # fmt: skip

    summary = run()
    assert summary.quarantined == [poison] and (summary.ok, summary.errors) == (11, 1)
    row = {r["path"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    assert row[poison]["error_type"] == "WorkerCrash" and row[poison]["crashes"] == 2
    assert "quarantined after --max-crashes 2" in row[poison]["error"]
    again = run()  # errors are tried again on resume, a quarantined image is not run
    row = {r["path"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    assert again.skipped == 11 and row[poison]["crashes"] == 2


def test_impossible_requests_are_refused_before_anything_starts(cluster, tmp_path):
    image = write_shapes(tmp_path / "data", 1)[0]
    for flags, message in [
        (["--gpus-per-worker", "1"], "--gpus-per-worker 1 asks for GPUs, but the cluster has 2"),
        (["--workers", "3"], "3 workers of 1 CPUs each do not fit"),
        (["--cpus-per-worker", "3"], "a worker needs 3 CPUs"),
    ]:
        code, output = explain(image, "-o", tmp_path / "out", "--engine", "ray", *flags)
        assert code == 1 and len(output.strip().splitlines()) == 1, output
        assert output.startswith("Error: ") and message in output, output
    code, output = explain(image, "-o", "s3://bucket/out", "--engine", "ray")
    assert code == 2 and "object-store outputs are not supported" in output
    assert not Path("s3:").exists()


def test_a_stall_is_reported_and_stops_the_job(cluster, tmp_path):
    """Workers that never get a CPU: reported with the cause, stopped, nothing lost."""
    paths = write_shapes(tmp_path / "data", 4, split=False)
    holder = ray.remote(num_cpus=2)(Holder).remote()  # every CPU, as long as it lives
    ray.get(holder.ready.remote(), timeout=60)
    reports: list[Progress] = []
    try:
        summary = run_job(
            from_paths([str(p) for p in paths]), Explainer(SHAPES_MODEL),
            out_dir=tmp_path / "out", settings={}, on_progress=reports.append,
            options=JobOptions(workers=(1, 1), stall_timeout_s=4.0, report=False),
        )  # fmt: skip
    finally:
        ray.kill(holder)
        for thread in threading.enumerate():  # the abandoned stream ends with its next batch
            if thread.name == "onnxcam-ray-results":
                thread.join(60)
    assert summary.stopped == "stalled" and summary.lost == 4
    assert "/2 free" in str(summary.fatal) and "rerun with --resume" in str(summary.fatal)
    assert any(r.stalled and "waiting for resources" in r.stalled for r in reports)
    table = pq.read_table(tmp_path / "out" / "results.parquet")
    assert table.column("status").to_pylist() == ["lost"] * 4


def test_a_fifo_row_and_a_hostile_folder_stop_nothing_and_touch_nothing_outside(cluster, tmp_path):
    """A ``file://`` FIFO row (and ``/dev/zero``) is that row's error, not a stalled job; a
    folder of links and hostile records is written inside only, whatever it says."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("precious\n")
    (outside / "thumbs").mkdir()
    paths = write_shapes(tmp_path / "data", 3, split=False)
    fifo = tmp_path / "data" / "pipe.png"
    os.mkfifo(fifo)
    rows = ["path"] + [p.as_uri() for p in paths] + [fifo.as_uri(), "file:///dev/zero"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thumbs").symlink_to(outside / "thumbs")
    (out / "summary.json").symlink_to(outside / "victim.txt")
    before = {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()}
    _, output = explain(tmp_path / "list.csv", "-o", out, "--engine", "ray")
    assert "Traceback" not in output
    table = {r["path"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert [table[p.as_uri()]["status"] for p in paths] == ["error"] * 3  # thumbs/ is a link
    assert "symbolic link" in table[paths[0].as_uri()]["error"]
    assert (
        table[fifo.as_uri()]["status"] == "error"
        and "regular file" in table[fifo.as_uri()]["error"]
    )
    assert table["file:///dev/zero"]["status"] == "error"
    (out / "thumbs").unlink()  # without the link, a rerun explains them; hostile records stay
    with open(out / "results.jsonl", "a") as handle:
        handle.write(
            json.dumps({"status": "ok", "source": "g", "files": {"json": "../outside/victim.txt"}})
            + "\n"
        )
    _, output = explain(tmp_path / "list.csv", "-o", out, "--engine", "ray", "--overwrite")
    table = {r["path"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert [table[p.as_uri()]["status"] for p in paths] == ["ok"] * 3, output
    assert {p: p.read_bytes() for p in outside.rglob("*") if p.is_file()} == before
