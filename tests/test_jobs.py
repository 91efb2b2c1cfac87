"""Runs that last (SPEC §12, issue 14): jobs checkpoint and resume to the results of an
uninterrupted run, a damaged checkpoint is detected and the previous one used, and the Ray
executor gives the table the serial run gives."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import sigkill_when, tiny_config

from sharp.cli import main
from sharp.runs.benchmark import Execution, segment_benchmark, segment_jobs
from sharp.runs.jobs import CheckpointPolicy, LearnerJob, run_learner_job
from sharp.runs.registry import LearnerSpec, baseline_spec

ROOT = Path(__file__).resolve().parents[1]
#: Wall-clock columns: the only ones a resumed or parallel run may change.
TIMING = ["train_seconds", "tokens_per_s", "eval_seconds"]
#: A tiny bench: SHARP streams 1000 steps in ~0.15 s and sleeps ~1 s at steps 1000 and 2000
#: (2-core machine), checkpointing every 250 steps.
BENCH = ["bench", "--no-notebook", "--quiet", "--corpus", "wiki", "--segment", "2500",
         "--slice", "200", "--learners", "1", "--baselines", "--sleep-every", "1000",
         "--set", "sleep_steps=1025", "--set", "hidden=64", "--workers", "1",
         "--checkpoint-tokens", "250"]


def same_tables(a: Path, b: Path) -> None:
    """results.csv and curves.csv of two report folders agree in every column but the
    wall-clock ones, exactly."""
    for name in ("results.csv", "curves.csv"):
        left = pd.read_csv(a / name).drop(columns=TIMING, errors="ignore")
        right = pd.read_csv(b / name).drop(columns=TIMING, errors="ignore")
        pd.testing.assert_frame_equal(left, right, check_exact=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    assert main([*BENCH, "--out", str(out)]) == 0
    return out


def _manifest(out: Path) -> dict:
    manifests = list((out / "jobs").glob("*/manifest.json"))
    return json.loads(manifests[0].read_text()) if manifests else {}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("moment", ["stream", "sleep"])
def test_a_job_killed_mid_stream_or_mid_sleep_resumes_to_the_same_results(
    uninterrupted: Path, tmp_path: Path, moment: str
) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "sharp", *BENCH, "--out", str(out)]
    # the head node runs with token authentication, and a joining node or driver must too
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    # mid-stream: a random moment shortly after the first checkpoint; mid-sleep: the sleep
    # at step 1000 starts ~0.04 s after the checkpoint at step 750 and lasts ~1 s
    wanted = 250 if moment == "stream" else 750
    sigkill_when(process, lambda: max((c["step"] for c in _manifest(out).get("checkpoints", [])),
                                      default=0) >= wanted,
                 then=random.Random(14).uniform(0.0, 0.08) if moment == "stream" else 0.3)
    killed_at = max(c["step"] for c in _manifest(out)["checkpoints"])
    assert not (out / "summary.md").exists()
    if moment == "sleep":
        assert killed_at == 750, "killed before or after the sleep at step 1000"
    assert main([*BENCH, "--out", str(out)]) == 0  # the same command again
    same_tables(uninterrupted, out)
    attempts = _manifest(out)["attempts"]
    assert [a["resumed_from"] for a in attempts] == [0, killed_at]
    assert killed_at > 0
    killed, resumed = json.loads((out / "run.json").read_text())["invocations"]
    assert not killed["ended"] and resumed["ended"] and resumed["jobs_resumed"] == 1
    assert "- wall time at least " in (out / "summary.md").read_text()


def _tiny_job(tmp_path: Path) -> tuple[LearnerSpec, list]:
    spec = LearnerSpec("sharp", tiny_config(sleep_every=300).to_dict(), "tiny")
    tokens = np.tile(np.array([0, 3, 1, 4, 2, 6, 5]), 300).astype(np.int64)
    return spec, segment_jobs([spec], tokens, segment=1_500, slice_len=100, learners=1)


class Crash(Exception):
    """Stands for a job killed after some steps."""


def _crashed_job(tmp_path: Path) -> tuple[LearnerJob, CheckpointPolicy, tuple, Path]:
    """A tiny job checkpointing every 400 steps (keeping 2), its uninterrupted result, and
    the folder of the same job crashed after 1,300 steps (checkpoints at 800 and 1200)."""
    _, (job,) = _tiny_job(tmp_path)
    policy = CheckpointPolicy(every_tokens=400, keep=2)
    reference = run_learner_job(job, folder=tmp_path / "reference", policy=policy)

    def crash_after_1300(done: list[int], tokens: int) -> None:
        done.append(tokens)
        if sum(done) >= 1_300:
            raise Crash

    folder = tmp_path / "job"
    with pytest.raises(Crash):
        run_learner_job(job, lambda n, done=[]: crash_after_1300(done, n), folder=folder,
                        policy=policy)
    return job, policy, reference, folder


def _assert_same_result(got: tuple, reference: tuple) -> None:
    for frame, expected in zip(got, reference, strict=True):
        pd.testing.assert_frame_equal(frame.drop(columns=TIMING, errors="ignore"),
                                      expected.drop(columns=TIMING, errors="ignore"))


def test_a_truncated_checkpoint_is_detected_and_the_previous_one_used(tmp_path: Path) -> None:
    job, policy, reference, folder = _crashed_job(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [c["step"] for c in manifest["checkpoints"]] == [800, 1200]  # 400 was pruned
    assert sorted(p.name for p in folder.glob("state-*.pt")) == [
        "state-000000000800.pt", "state-000000001200.pt"]
    newest = folder / "state-000000001200.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match=r"state-000000001200\.pt is missing, truncated"):
        rows, curve = run_learner_job(job, folder=folder, policy=policy)
    _assert_same_result((rows, curve), reference)
    attempts = json.loads((folder / "manifest.json").read_text())["attempts"]
    assert [a["resumed_from"] for a in attempts] == [0, 800]
    # a finished job is skipped: its stored result comes back without a learner being built
    again = run_learner_job(job, folder=folder, policy=policy)
    pd.testing.assert_frame_equal(again[0], rows)


def test_a_job_killed_mid_checkpoint_write_resumes_to_the_same_results(tmp_path: Path) -> None:
    """A kill while a checkpoint is written leaves a temporary file (the state's atomic write
    was cut) or a complete state the manifest does not name yet (the kill fell between the
    state and the manifest): both are swept, and the job resumes from the last checkpoint
    the manifest names to the uninterrupted result."""
    job, policy, reference, folder = _crashed_job(tmp_path)
    newest = folder / "state-000000001200.pt"
    cut = folder / ".state-000000001600.pt.x1y2.part"
    cut.write_bytes(newest.read_bytes()[:1000])
    (folder / "state-000000001600.pt").write_bytes(newest.read_bytes())
    _assert_same_result(run_learner_job(job, folder=folder, policy=policy), reference)
    assert not cut.exists()
    attempts = json.loads((folder / "manifest.json").read_text())["attempts"]
    assert [a["resumed_from"] for a in attempts] == [0, 1200]


def test_the_ray_executor_gives_the_serial_table(tmp_path: Path) -> None:
    spec, _ = _tiny_job(tmp_path)
    specs = [spec, baseline_spec("rnn", "quick", vocab_size=7, window=3, hidden=16,
                                 embedding=8)]
    tokens = np.random.default_rng(3).integers(0, 7, 4_000).astype(np.int64)
    runs = {}
    for workers in (1, 2):
        runs[workers] = segment_benchmark(
            specs, tokens, segment=1_200, slice_len=100, learners=2, workers=workers,
            progress=False, execution=Execution(jobs_dir=tmp_path / f"w{workers}",
                                                policy=CheckpointPolicy(every_tokens=500)))
    for table in ("results", "curves"):
        serial, ray = (getattr(runs[w], table).drop(columns=TIMING, errors="ignore")
                       for w in (1, 2))
        pd.testing.assert_frame_equal(serial, ray, check_exact=True)


#: A driver that runs one SHARP job of 25,000 steps, on the cluster at argv[1] forced onto
#: the node with resource ``node2`` (or serially in its own process when argv[1] is
#: empty), writes the tables to argv[2] and prints the second node's id.
DRIVER = """
import json, sys
from pathlib import Path
import numpy as np
from conftest import tiny_config
from sharp.runs.benchmark import Execution, segment_benchmark
from sharp.runs.jobs import CheckpointPolicy
from sharp.runs.registry import LearnerSpec

address, out = sys.argv[1] or None, Path(sys.argv[2])
spec = LearnerSpec("sharp", tiny_config(sleep_every=2_000).to_dict(), "tiny")
tokens = np.random.default_rng(5).integers(0, 7, 30_000).astype(np.int64)
result = segment_benchmark(
    [spec], tokens, segment=25_000, slice_len=200, learners=1, progress=False,
    execution=Execution(address=address, resources={"node2": 1} if address else {},
                        jobs_dir=out / "jobs", policy=CheckpointPolicy(every_tokens=1_000)))
result.results.to_csv(out / "results.csv", index=False)
result.curves.to_csv(out / "curves.csv", index=False)
if address:
    import ray
    print(json.dumps([n["NodeID"] for n in ray.nodes() if "node2" in n["Resources"]]))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_job_on_a_second_node_is_retried_and_resumed_after_its_worker_is_killed(
    tmp_path: Path,
) -> None:
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    # the head node runs with token authentication, and a joining node or driver must too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    common = ["--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats"]
    try:
        subprocess.run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1",
                        "--port", str(port), *common], env=env, check=True,
                       capture_output=True)
        subprocess.run([ray_cli, "start", "--address", f"127.0.0.1:{port}",
                        "--resources", json.dumps({"node2": 1}), "--num-cpus", "1",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True)
        out = tmp_path / "cluster"
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, f"127.0.0.1:{port}",
                                   str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None:
            manifest = _manifest(out)
            if manifest.get("checkpoints") and manifest["checkpoints"][-1]["step"] >= 3_000:
                break
            time.sleep(0.1)
        worker = manifest["attempts"][0]["pid"]
        os.kill(worker, signal.SIGKILL)  # the Ray worker running the job, mid-job
        stdout, stderr = driver.communicate(timeout=300)
        assert driver.returncode == 0, stderr
        node2 = json.loads(stdout.strip().splitlines()[-1])
        attempts = _manifest(out)["attempts"]
        assert len(attempts) == 2 and attempts[1]["pid"] != worker
        assert {a["node"] for a in attempts} == set(node2)  # both ran on the second node
        assert attempts[1]["resumed_from"] >= 3_000
        reference = tmp_path / "serial"
        reference.mkdir()
        subprocess.run([sys.executable, "-c", DRIVER, "", str(reference)], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        same_tables(reference, out)
    finally:
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)


def test_a_bad_checkpoint_policy_names_its_fields_and_the_cli_options() -> None:
    with pytest.raises(ValueError, match=r"CheckpointPolicy.every_tokens must be > 0, got 0; "
                       r"CheckpointPolicy.keep must be > 0, got 0 \(sharp bench, sharp "
                       r"experiment: --checkpoint-tokens, --checkpoint-minutes, "
                       r"--keep-checkpoints\)"):
        CheckpointPolicy(every_tokens=0, keep=0)
