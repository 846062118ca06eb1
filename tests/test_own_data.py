"""Your own data: ``--data FILE`` on the command line, file names found through
data-dir, the benchmark taking scenario files, and what the run folder records of the data."""

import hashlib
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from otm_fed.data import make_synthetic
from launcher.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--engine", "inprocess", "--rounds", "2", "--set", "batch-size=32", "--set", "eval-every=2"]


def write_npz(path: Path, n_samples: int = 90) -> Path:
    dataset = make_synthetic(n_samples, 3, (12, 8), weak_view=None, seed=1)
    np.savez(path, X0=dataset.views[0], X1=np.abs(dataset.views[1]), y=dataset.labels)
    return path


def test_simulate_own_file_records_it_with_its_hash_and_the_code_version(tmp_path, capsys, monkeypatch):
    data = write_npz(tmp_path / "mine.npz")
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--data", "mine.npz", "--normalisation", "zscore,l2", *SMALL, "--out", "run"]) == 0
    out = capsys.readouterr().out
    assert "scenario mine" in out and "2 modalities" in out
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert config["dataset"] == str(data) and config["normalisation"] == "zscore,l2"
    for record in (config["provenance"], summary["provenance"]):
        assert record["data-file"] == str(data) and record["data-sha256"] == digest
        assert record["otm-fed-version"] == "0.1.0"
    assert summary["scenario"] == "mine" and len(summary["final"]["purity_per_modality"]) == 2


@pytest.mark.parametrize("how", ["environment", "--set"])
def test_a_file_name_is_found_through_data_dir_and_recorded_absolutely(tmp_path, monkeypatch, how):
    (tmp_path / "data").mkdir()
    write_npz(tmp_path / "data" / "mine.npz")
    monkeypatch.chdir(tmp_path)
    if how == "environment":
        monkeypatch.setenv("OTM_FED_DATA_DIR", str(tmp_path / "data"))
        extra = []
    else:
        monkeypatch.delenv("OTM_FED_DATA_DIR", raising=False)
        extra = ["--set", f"data-dir={tmp_path / 'data'}"]
    assert main(["simulate", "--data", "mine.npz", *SMALL, *extra, "--out", "run"]) == 0
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert config["dataset"] == str(tmp_path / "data" / "mine.npz")


def test_a_missing_file_is_one_line_that_names_what_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--data", "absent.mat", *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--set data-dir=DIR" in err and "--data-dir" not in err
    assert not (tmp_path / "runs").exists()


def test_two_line_scenario_file_runs(tmp_path):
    data = write_npz(tmp_path / "mine.npz")
    scenario = tmp_path / "mine.toml"
    scenario.write_text(f'dataset = "{data}"\nnormalisation = "zscore"\n')
    assert main(["simulate", "--scenario", str(scenario), *SMALL, "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["scenario"] == "mine"


def test_clustering_benchmark_takes_scenario_paths(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import clustering

    data = write_npz(tmp_path / "mine.npz")
    scenario = tmp_path / "mine.toml"
    scenario.write_text(f'dataset = "{data}"\nbatch-size = 32\neval-every = 2\n')
    assert clustering.main(["--datasets", str(scenario), "--methods", "raw-kmeans,local-only", "--seeds", "1",
                            "--rounds", "2", "--settings", "unaligned", "--runs-dir", str(tmp_path / "runs"),
                            "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(row["dataset"], row["method"]) for row in rows] == [("mine", "raw-kmeans"), ("mine", "local-only")]
    assert (tmp_path / "runs" / "mine-local-only-unaligned-seed0" / "summary.json").is_file()
    assert "| mine | local-only | unaligned | 1 |" in capsys.readouterr().out
