"""Where jobs run (sharp.runs.executor): the embedded Ray is always this process's own, a
cluster address is checked before any work and fails in seconds with what to check, and
the report says where the jobs ran."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from sharp.cli import main
from sharp.runs import executor
from sharp.runs.bench import BenchOptions, plan_bench, run_bench
from sharp.runs.executor import init_ray, probe_cluster


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("found", ["RAY_ADDRESS=auto", "ray start's address file"])
def test_without_an_address_ray_is_always_this_process_own(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, found: str
) -> None:
    # a new user's fault: a `ray start` on the machine, its leftover address file, or
    # RAY_ADDRESS made the embedded multi-worker mode join (or look for) that cluster and
    # fail ("num_cpus and num_gpus must not be provided", "Could not find any running Ray")
    ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if found == "RAY_ADDRESS=auto":
        monkeypatch.setenv("RAY_ADDRESS", "auto")
    else:
        monkeypatch.setattr("ray._private.utils.read_ray_address",
                            lambda temp_dir=None: f"127.0.0.1:{closed_port}")
    handler = signal.getsignal(signal.SIGTERM)
    init_ray(None, 2)
    assert ray.cluster_resources()["CPU"] == 2  # its own, of the CPUs asked for
    assert signal.getsignal(signal.SIGTERM) is handler  # the caller's handler kept


def test_a_cluster_address_that_cannot_work_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
) -> None:
    def loaded(*args: object, **kwargs: object) -> None:
        raise AssertionError("the corpus was loaded before the address was checked")

    out = tmp_path / "run"
    bench = ["bench", "--no-notebook", "--quiet", "--baselines", "--out", str(out)]
    with monkeypatch.context() as patch:
        patch.setattr("sharp.runs.bench.load_corpus", loaded)
        # Ray Client needs ray[client], which is not installed: refused, with what to do
        assert main([*bench, "--address", "ray://nohost:10001"]) == 2
        assert ("--address ray://nohost:10001: Ray Client (ray://) is not supported; run sharp "
                "on a node of the cluster with --address auto or --address HEAD:6379"
                in capsys.readouterr().err)
        assert main([*bench, "--address", "nohost"]) == 2
        assert "--address 'nohost' must be auto or HOST:PORT" in capsys.readouterr().err
    # nothing answers: this hung > 120 s, then left run.json behind, which refused the
    # next run on the folder although no job ever ran; a Ray this process already runs
    # (embedded, from an earlier run: a notebook's) is not taken for that cluster
    init_ray(None, 2)
    earlier = out / "jobs" / "earlier" / "manifest.json"  # an earlier run's checkpointed job
    earlier.parent.mkdir(parents=True)
    earlier.write_text("{}")
    started = time.monotonic()
    assert main([*bench, "--segment", "600", "--slice", "100", "--learners", "1",
                 "--no-resume", "--address", f"127.0.0.1:{closed_port}"]) == 2
    assert time.monotonic() - started < 60
    assert (f"sharp bench: error: no Ray cluster answers at 127.0.0.1:{closed_port} "
            "(Connection refused): check that `ray start --head --port "
            f"{closed_port}` runs on 127.0.0.1" in capsys.readouterr().err)
    assert not (out / "run.json").exists()
    assert earlier.exists()  # the join failed before the run deleted any job of the folder


def test_auto_without_a_cluster_or_with_a_ray_client_address_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ray._private.utils.read_ray_address", lambda temp_dir=None: None)
    monkeypatch.setattr("ray._private.services.find_gcs_addresses", lambda: [])
    with pytest.raises(ConnectionError, match=r"^--address auto found no running Ray cluster "
                       r"\(RAY_ADDRESS is unset and no `ray start` runs on this machine\)"):
        probe_cluster("auto")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # what auto would join
    with pytest.raises(ValueError, match=r"^RAY_ADDRESS \(taken by --address auto\) "
                       r"ray://head:10001: Ray Client \(ray://\) is not supported"):
        probe_cluster("auto")


@pytest.mark.parametrize("mode", ["", "token"])
def test_a_failed_join_names_token_authentication(monkeypatch: pytest.MonkeyPatch,
                                                  mode: str) -> None:
    # against a head with token authentication, without RAY_AUTH_MODE=token, Ray says only
    # "Failed to connect to Ray cluster at ..."
    def refused(**kwargs: object) -> None:
        raise ConnectionError(f"Failed to connect to Ray cluster at {kwargs['address']}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.setattr(executor, "try_join", lambda address: None)
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    with socket.socket() as head:  # something answers at the address
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        with pytest.raises(ConnectionError) as error:
            init_ray(address)
    message = str(error.value)
    assert message.startswith(f"could not join the Ray cluster at {address} (Failed to "
                              f"connect to Ray cluster at {address})")
    hint = "; if the head uses token authentication, set RAY_AUTH_MODE=token"
    assert (hint in message) == (mode != "token")


def test_a_run_on_a_cluster_reports_the_cluster_not_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with --address the header said "on 2 workers", summary.md "2 worker process(es)" and
    # run.json "workers": 2 without the address, though --workers is unused there
    joined = []
    real_init = executor.init_ray

    def local(address: str | None = None, num_cpus: int | None = None) -> None:
        joined.append(address)  # the cluster: this session's embedded Ray
        real_init(None, 2)

    monkeypatch.setattr(executor, "init_ray", local)
    address = "127.0.0.1:6391"
    plan = plan_bench(BenchOptions(segment=600, slice_len=100, learners=1, baselines=[],
                                   workers=2, progress=False, address=address,
                                   out_dir=str(tmp_path)))
    assert "1 run on the Ray cluster at 127.0.0.1:6391, 1 thread each" in plan.headline
    run_bench(plan)
    assert joined and set(joined) == {address}
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["address"] == address and "workers" not in meta
    (invocation,) = meta["invocations"]  # where the run found itself (auto resolved)
    gcs = ray.get_runtime_context().gcs_address
    assert invocation["address"] == gcs and "workers" not in invocation
    assert invocation["cluster_cpus"] == ray.cluster_resources()["CPU"]
    assert (f"s on the Ray cluster at {gcs} ({invocation['cluster_cpus']:g} CPUs), as "
            "tasks of 1 torch thread(s)" in (tmp_path / "summary.md").read_text())


def test_an_address_that_answers_but_is_not_ray_fails_in_seconds() -> None:
    """A port that accepts connections but is no Ray head (an HTTP server, the dashboard)
    made ray.init retry for over ten minutes, deaf to Ctrl-C and SIGTERM."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"127.0.0.1:{other.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=rf"^no Ray cluster answered at {address} "
                           r"within 4 s, though something listens there: give the head's "
                           r"GCS port \(6379 by default"):
            executor.try_join(address, timeout=4.0)
    assert time.monotonic() - started < 30
