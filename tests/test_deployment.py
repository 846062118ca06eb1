"""Flower's deployment engine on 127.0.0.1: a SuperLink and three SuperNodes with TLS and node
authentication, an unregistered node refused, two rounds of prokaryotic with one SuperNode
killed after the first; a run whose ServerApp refuses to run fails, and the deployment benchmark
with it. Ports are chosen free at run time; every process is stopped by PID."""

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from otm_fed.results import read_rounds
from launcher.deploy import LocalFederation, alive, descendants, work_folder

pytestmark = pytest.mark.deployment

ROOT = Path(__file__).resolve().parents[1]
RUN_CONFIG = {"scenario": "prokaryotic", "rounds": 2, "eval-every": 2, "num-modalities": 3, "n-clusters": 4,
              "fused-eval": False, "batch-size": 96, "gate-threshold": 0.0,
              "round-timeout": 240.0}  # generous for loaded CI machines; a dead node is reported within ~60 s


@pytest.fixture
def federation(request, tmp_path, data_dir):
    federation = LocalFederation(tmp_path / "federation", data_dir / "Prokaryotic.mat",
                                 n_nodes=getattr(request, "param", 3))
    try:
        yield federation.start()
    finally:
        started = [pid for process in federation.processes.values()
                   for pid in (process.pid, *descendants(process.pid))]
        federation.stop()
    assert not running(started), "processes left running"


def running(pids: list[int], grace: float = 15.0) -> list[int]:
    """Those of ``pids`` still running (not zombies) after a grace period for the kernel to reap them."""
    deadline = time.monotonic() + grace
    while True:
        left = alive(pids)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def kill_after_first_round(federation: LocalFederation, metrics: Path, label: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            federation.kill(label)
            return
        time.sleep(0.5)


def test_two_rounds_with_tls_node_auth_and_a_killed_supernode(federation, tmp_path):
    intruder = federation.start_supernode(0, register=False, label="intruder")
    run_dir = tmp_path / "run"
    killer = threading.Thread(target=kill_after_first_round, daemon=True,
                              args=(federation, run_dir / "metrics.jsonl", "supernode-2", time.monotonic() + 400))
    killer.start()
    result = federation.run(ROOT, {**RUN_CONFIG, "out-dir": str(run_dir)}, timeout=480)  # raises unless completed
    killer.join(1)
    assert result.returncode == 0, result.stdout + result.stderr
    # The node whose key was never registered was refused and never joined.
    assert intruder.wait(60) != 0 and "Failed to activate SuperNode" in federation.log("intruder")
    listed = json.loads(federation.flwr("supernode", "ls", federation.name, "--format", "json").stdout)
    assert len(listed["nodes"]) == 3
    rows = read_rounds(run_dir)
    assert [row["round"] for row in rows] == [1, 2]
    assert rows[0]["missing_modalities"] == [] and rows[0]["failures"] == []
    assert rows[0]["mixer"]["objective"] <= rows[0]["mixer"]["initial_objective"] + 1e-9
    assert all(value == 96 * 16 * 4 for value in rows[0]["bytes_up"].values())
    # Modality 2's SuperNode died after round 1: its round-2 TRAIN failed, the others went on.
    assert rows[1]["missing_modalities"] == [2]
    stages = [failure["stage"] for failure in rows[1]["failures"]]  # its TRAIN failed, or it was already gone
    assert stages in (["train"], ["connect"])
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    assert len(final["purity_per_modality"]) == 2 and "fused_purity" not in final
    assert 0.56 <= final["purity"] <= 1.0  # never below prokaryotic's majority share 0.568


@pytest.mark.parametrize("federation", [0], indirect=True)  # the ServerApp refuses before it needs a node
def test_the_benchmark_run_twice_into_one_folder_fails_saying_why(federation, tmp_path, monkeypatch):
    """The deployment benchmark, run twice into one folder, once printed the first run's rounds: the
    second run's ServerApp refused the folder, and ``flwr run`` returned 0 all the same. Now each
    run gets a new folder, a named one holding files is refused, and a refused run fails."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import deployment_rounds

    monkeypatch.chdir(tmp_path)
    first, second = work_folder(None, "deploy-bench"), work_folder(None, "deploy-bench")
    assert first != second and first.parent == second.parent == tmp_path / "runs"
    (first / "run").mkdir()
    (first / "run" / "metrics.jsonl").write_text("")  # what the first benchmark's OTM run left
    with pytest.raises(SystemExit, match=f"deployment_rounds: {first} holds an earlier run's files; choose an "
                                         r"empty --out \(or none, for a new folder\)"):
        deployment_rounds.main(["--out", str(first)])
    with pytest.raises(SystemExit, match=r"deployment_rounds: run \d+ of \S+ ended finished:failed: ServerApp "
                                         f"failed with exception: {first / 'run'} already holds a run"):
        deployment_rounds.run_app(federation, ROOT, deployment_rounds.otm_config(1, first / "run"))
