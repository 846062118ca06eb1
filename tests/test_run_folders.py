"""Run folders that never lose or mix results, and user errors that are one line: all on the
in-process engine, through the command line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from otm_fed import results
from otm_fed.config import resolve_config
from otm_fed.results import new_run_dir, read_rounds, write_atomically
from launcher.cli import main

ROOT = Path(__file__).resolve().parents[1]

SMALL = ["--engine", "inprocess", "--set", "synthetic-samples=120", "--set", "batch-size=32", "--set", "eval-every=2"]


def simulate(*args: str) -> int:
    return main(["simulate", *SMALL, *args])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert simulate("--rounds", "2", "--out", str(run_dir)) == 0
    return run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in run_dir.iterdir() if path.is_file()}


def test_resume_of_a_finished_run_changes_nothing_and_says_so(finished_run, capsys):
    before = snapshot(finished_run)
    assert main(["simulate", "--engine", "inprocess", "--resume", str(finished_run)]) == 0
    assert "already finished its 2 rounds; nothing to do" in capsys.readouterr().out
    assert snapshot(finished_run) == before
    assert json.loads(before["summary.json"])["final"]["purity"] > 0


def test_resume_refuses_options_that_would_change_the_run(finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    for extra in (["--scenario", "orl"], ["--out", str(tmp_path / "elsewhere")], ["--seed", "3"],
                  ["--data", "x.mat"], ["--set", "beta=0.5"], ["--normalisation", "l2"]):
        assert main(["simulate", "--resume", str(finished_run), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("otm-fed: error: --resume continues") and "\n" not in err
    assert main(["simulate", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert snapshot(finished_run) == before and not (tmp_path / "elsewhere").exists()


def test_resume_with_more_rounds_extends_and_records_the_extension(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert simulate("--rounds", "2", "--out", str(run_dir)) == 0
    assert main(["simulate", "--engine", "inprocess", "--resume", str(run_dir), "--rounds", "3"]) == 0
    assert "extending the finished run" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 3 and summary["extended_from"] == [2] and summary["final"]["purity"] > 0
    assert [(row["round"], row.get("extension_of")) for row in read_rounds(run_dir)] == [(1, None), (2, None), (3, 2)]
    assert resolve_config(str(run_dir / "config.toml"))["rounds"] == 3


def test_out_on_an_existing_run_is_refused_and_leaves_it_whole(finished_run, capsys):
    before = snapshot(finished_run)
    assert simulate("--rounds", "2", "--out", str(finished_run)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"otm-fed: error: {finished_run} already holds a run; continue it with --resume {finished_run}, "
                   "or choose another --out (or none, for a new folder)")
    assert snapshot(finished_run) == before
    assert [row["round"] for row in read_rounds(finished_run)] == [1, 2]


def test_default_run_folders_are_unique(tmp_path):
    config = resolve_config("synthetic", {"strategy": "tests.module:Class"})
    folders = {new_run_dir(config, tmp_path) for _ in range(50)}
    assert len(folders) == 50 and all(folder.is_dir() and ":" not in folder.name for folder in folders)


def test_default_run_folder_takes_a_suffix_when_the_name_is_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(results.time, "time_ns", lambda: 1_700_000_000_000_000_000)
    config = resolve_config("synthetic")
    first, second = new_run_dir(config, tmp_path), new_run_dir(config, tmp_path)
    assert second.name == first.name + "-1"


def test_an_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_atomically(path, "old\n")

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "fsync", crash)
    with pytest.raises(OSError):
        write_atomically(path, "new\n")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_unwritable_out_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert simulate("--rounds", "1", "--out", str(tmp_path / "file" / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"otm-fed: error: cannot create the run folder {tmp_path / 'file' / 'run'}")
    assert "\n" not in err and "Traceback" not in err


def test_ctrl_c_is_one_line_with_the_resume_hint(tmp_path, monkeypatch, capsys):
    import launcher.inprocess

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(launcher.inprocess, "run_inprocess", interrupted)
    assert simulate("--rounds", "2", "--out", str(tmp_path / "run")) == 130
    err = capsys.readouterr().err.strip()
    assert err == f"otm-fed: interrupted; continue it exactly with: otm-fed simulate --resume {tmp_path / 'run'}"


@pytest.mark.parametrize("setting,message", [
    ("normalisation=tf-idf", "normalisation 'tf-idf' is not one of"),
    ("batch-size=100000", "batch-size 100000 is larger than the 120 training rows an agent of synthetic holds; "
                      "choose at most 120: --set batch-size=120"),
    ("normalisation=zscore,l2", "normalisation lists 2 methods, but synthetic has 3 views"),
    ("rounds=abc", "rounds must be an integer, got 'abc'"),
    ("num-modalities=4", "4 modalities asked for, but synthetic has 3 views"),
])
def test_config_errors_come_before_any_round(tmp_path, capsys, setting, message):
    assert simulate("--set", setting, "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_deploy_demo_refuses_more_nodes_than_views(tmp_path, capsys):
    data = tmp_path / "three.npz"
    rng = np.random.default_rng(0)
    np.savez(data, X0=rng.normal(size=(30, 4)), X1=rng.normal(size=(30, 3)), X2=rng.normal(size=(30, 2)),
             y=np.arange(30) % 3)
    assert main(["deploy", "demo", "--data", str(data), "--nodes", "5", "--work", str(tmp_path / "work")]) == 2
    assert capsys.readouterr().err.strip() == f"otm-fed: error: --nodes 5: {data} has 3 views, one per SuperNode"
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("engine", ["inprocess", pytest.param("simulation", marks=pytest.mark.simulation)])
def test_ctrl_c_in_a_real_run_stops_at_once_with_its_files_whole(tmp_path, engine):
    """SIGINT to the process group, as a terminal's Ctrl-C: one line, exit 130, no traceback, no
    wait (Flower's ServerApp thread would otherwise wait out round-timeout), consistent files."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "launcher.cli", "simulate", "--engine", engine, "--rounds", "500", "--out",
               str(run_dir), "--set", "synthetic-samples=120", "--set", "batch-size=32", "--no-plots"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while len(read_rounds(run_dir)) < 2 if (run_dir / "metrics.jsonl").is_file() else True:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    interrupted = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and time.monotonic() - interrupted < 60
    hint = f"otm-fed: interrupted; continue it exactly with: otm-fed simulate --resume {run_dir}"
    assert err.strip().splitlines()[-1] == hint
    # No traceback through the CLI. Ray's and Flower's own shutdown may still print theirs (seen
    # once in nine runs on a loaded machine: the actors get the terminal's SIGINT too).
    assert "launcher/cli.py" not in err and ("Traceback" not in err or engine == "simulation"), err
    rows = [row["round"] for row in read_rounds(run_dir)]
    assert rows == list(range(1, len(rows) + 1)) and results.rounds_done(run_dir) in (len(rows), len(rows) - 1)


def test_the_server_app_refuses_a_folder_holding_a_run_too(finished_run):
    """What flwr run with an out-dir of an earlier run meets (the CLI checks before it)."""
    config = {**resolve_config(str(finished_run / "config.toml")), "resume": False}
    with pytest.raises(results.RunFolderError, match="already holds a run; resume it"):
        results.RunRecorder(finished_run, config)


def test_deploy_demo_refuses_a_work_folder_holding_an_earlier_run(tmp_path, capsys):
    data = tmp_path / "two.npz"
    np.savez(data, X0=np.ones((30, 4)) * np.arange(30)[:, None], X1=np.ones((30, 3)), y=np.arange(30) % 3)
    (tmp_path / "work" / "run").mkdir(parents=True)
    (tmp_path / "work" / "run" / "metrics.jsonl").write_text("")
    assert main(["deploy", "demo", "--data", str(data), "--nodes", "2", "--work", str(tmp_path / "work"),
                 "--set", "batch-size=16", "--set", "normalisation=zscore"]) == 2
    assert "holds an earlier demo's run" in capsys.readouterr().err


def test_a_run_stopped_between_its_last_round_and_its_summary_resumes_to_the_same_summary(finished_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    whole = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").unlink()  # the checkpoint of round 2 is written, the summary is not
    assert main(["simulate", "--engine", "inprocess", "--resume", str(run_dir), "--no-plots"]) == 0
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["final"] == whole["final"] and [row["round"] for row in read_rounds(run_dir)] == [1, 2]
