"""The command line as a user meets it: every flag described with its default, the version, the
scenarios and the run-folder pattern in the help, one-line refusals of bad input, the deploy
demo's settings and work folder, stopping the SuperLink ``flwr run`` left, and ``otm-fed keys``."""

import argparse
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from otm_fed.config import DEFAULTS, SCENARIO_DIR, resolve_config
from otm_fed.data import make_synthetic
from otm_fed.results import RUN_DIR_PATTERN
from launcher import deploy
from launcher.cli import build_parser, main
from launcher.deploy import alive, descendants

SMALL = ["--engine", "inprocess", "--rounds", "1", "--no-plots"]


def refusal(capsys, argv: list[str]) -> str:
    """The one line a refused command prints, after checking it exits with code 2."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse refuses before main's handler runs
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    return err


def parsers(parser: argparse.ArgumentParser):
    """The parser and every sub-command's parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                yield from parsers(sub)


def test_every_flag_of_every_command_has_a_description_and_shows_its_default():
    checked = 0
    for parser in parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            text = formatter._expand_help(action)
            assert text, f"{parser.prog} {action.dest}: no description"
            if action.option_strings:
                assert "(required)" in text if action.required else "default" in text, f"{parser.prog}: {text}"
            checked += 1
    assert checked >= 29  # simulate 11, plot 2, deploy certs 2, node-key 2, federation 4, demo 7, stop 1


def test_version_is_the_installed_one(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"otm-fed {metadata.version('otm-fed')}"


def test_simulate_help_lists_the_scenarios_and_the_run_folder_pattern(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    names = sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))
    assert f"one of {', '.join(names)} (scenarios/NAME.toml)" in text
    assert f"a new folder {RUN_DIR_PATTERN} in the current directory" in text


def test_the_readme_names_the_run_folder_as_the_help_does():
    assert f"`{RUN_DIR_PATTERN}/`" in (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_run_folder_pattern_is_what_new_run_dir_makes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", *SMALL, "--set", "synthetic-samples=60", "--set", "batch-size=16"]) == 0
    [run_dir] = (tmp_path / "runs").iterdir()
    pattern = RUN_DIR_PATTERN.removeprefix("runs/")
    for word, digits in (("YYYYMMDD", 8), ("HHMMSS", 6), ("MICROSECONDS", 6)):
        pattern = pattern.replace(word, r"\d" * digits)
    assert re.fullmatch(pattern.replace("SCENARIO", "synthetic").replace("STRATEGY", "otm"), run_dir.name)


def test_zero_actors_is_refused(capsys):
    err = refusal(capsys, ["simulate", "--actors", "0"])
    assert err == "otm-fed: error: argument --actors: must be at least 1, got 0 (see otm-fed simulate --help)"


def test_a_directory_given_as_data_is_named_as_one(tmp_path, capsys):
    err = refusal(capsys, ["simulate", "--data", str(tmp_path), *SMALL])
    assert err.startswith(f"otm-fed: error: {tmp_path} is a directory, not a data file: give a .mat or .npz file")
    assert "absolute path" not in err


def test_an_absolute_file_that_is_missing_is_not_told_to_be_absolute(tmp_path, capsys):
    err = refusal(capsys, ["simulate", "--data", str(tmp_path / "absent.mat"), *SMALL])
    assert f"dataset file not found: {tmp_path / 'absent.mat'};" in err and "absolute path" not in err


def test_a_text_file_named_mat_is_not_a_matlab_file(tmp_path, capsys):
    (tmp_path / "notes.mat").write_text("these are notes, not a MATLAB file\n")
    err = refusal(capsys, ["simulate", "--data", str(tmp_path / "notes.mat"), *SMALL])
    assert err.startswith(f"otm-fed: error: {tmp_path / 'notes.mat'}: not a MATLAB .mat file that can be read")
    assert "IndexError" not in err


def test_a_small_data_set_gets_a_batch_size_that_fits(tmp_path, capsys):
    dataset = make_synthetic(90, 3, (12, 8), weak_view=None, seed=1)
    np.savez(tmp_path / "small.npz", X0=dataset.views[0], X1=dataset.views[1], y=dataset.labels)
    err = refusal(capsys, ["simulate", "--data", str(tmp_path / "small.npz"), *SMALL])
    assert err == ("otm-fed: error: batch-size 128 is larger than the 90 training rows an agent of small holds; "
                   "choose at most 90: --set batch-size=90 (flwr run: --run-config batch-size=90)")
    assert main(["simulate", "--data", str(tmp_path / "small.npz"), *SMALL, "--set", "batch-size=90",
                 "--out", str(tmp_path / "run")]) == 0


def test_messages_name_the_synthetic_data_set_as_users_name_it(capsys):
    err = refusal(capsys, ["simulate", *SMALL, "--set", "num-modalities=4"])
    assert err == "otm-fed: error: 4 modalities asked for, but synthetic has 3 views"


class FakeFederation:
    """Stands in for LocalFederation: records what the demo would run, and the run fails."""

    runs: list[tuple[Path, dict]] = []

    def __init__(self, work_dir: Path, data_path: Path, n_nodes: int, site_files: dict | None = None) -> None:
        self.work_dir, self.address = work_dir, "127.0.0.1:0"

    def __enter__(self) -> "FakeFederation":
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def run(self, app_dir: Path, run_config: dict, timeout: float) -> None:
        FakeFederation.runs.append((self.work_dir, run_config))
        raise deploy.RunFailed("run 1 of main ended finished:failed: ServerApp failed with exception: refused")


def test_deploy_demo_follows_the_data_file_and_takes_a_new_work_folder_each_time(tmp_path, monkeypatch, capsys,
                                                                                 data_dir):
    monkeypatch.setattr(deploy, "LocalFederation", FakeFederation)
    monkeypatch.chdir(tmp_path)
    FakeFederation.runs.clear()
    dataset = make_synthetic(60, 3, (12, 8), weak_view=None, seed=1)
    np.savez(tmp_path / "mine.npz", X0=dataset.views[0], X1=dataset.views[1], y=dataset.labels)
    for data in (data_dir / "ORL.mat", data_dir / "ORL.mat", tmp_path / "mine.npz"):
        assert main(["deploy", "demo", "--data", str(data), "--nodes", "2", "--set", "batch-size=32"]) == 1
        assert capsys.readouterr().err.strip() == ("otm-fed: the deployed run failed: run 1 of main ended "
                                                   "finished:failed: ServerApp failed with exception: refused")
    works = [work for work, _ in FakeFederation.runs]
    assert len(set(works)) == 3 and all(work.parent == tmp_path / "runs" for work in works)
    assert all(work.name.startswith("deploy-demo-") for work in works)
    configs = [resolve_config(run_config["scenario"]) for _, run_config in FakeFederation.runs]
    orl = resolve_config("orl")
    assert configs[0]["scenario"] == "orl" and configs[0]["normalisation"] == orl["normalisation"]
    assert configs[0]["latent-dim"] == orl["latent-dim"] and configs[0]["batch-size"] == 32
    assert configs[0]["n-clusters"] == 40 and configs[0]["rounds"] == 2 and configs[0]["num-modalities"] == 2
    assert configs[2]["scenario"] == "mine" and configs[2]["dataset"] == str(tmp_path / "mine.npz")
    assert configs[2]["latent-dim"] == DEFAULTS["latent-dim"] and configs[2]["n-clusters"] == 3
    assert FakeFederation.runs[2][1]["out-dir"] == str(works[2] / "run")


FAKE_SUPERLINK = "import subprocess, time\nsubprocess.Popen(['sleep', '300'])\ntime.sleep(300)\n"


def start_fake_superlink(tmp_path: Path, flwr_home: Path) -> subprocess.Popen:
    """A process that looks like the SuperLink ``flwr run`` starts for ``flwr_home``, with a child."""
    script = tmp_path / "bin" / "flower-superlink"
    script.parent.mkdir(exist_ok=True)
    script.write_text(FAKE_SUPERLINK)
    log_file = flwr_home / "local-superlink" / "superlink.log"
    return subprocess.Popen([sys.executable, str(script), "--simulation", "--log-file", str(log_file)])


def test_deploy_stop_stops_the_superlink_flwr_run_left_and_only_that_one(tmp_path, capsys):
    mine, other = tmp_path / "flwr-home", tmp_path / "other-home"
    target, bystander = start_fake_superlink(tmp_path, mine), start_fake_superlink(tmp_path, other)
    try:
        deadline = time.monotonic() + 30
        while len(descendants(target.pid)) < 1 or len(descendants(bystander.pid)) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        family = [target.pid, *descendants(target.pid)]
        assert main(["deploy", "stop", "--flwr-home", str(mine)]) == 0
        assert capsys.readouterr().out.strip() == (f"stopped the local SuperLink of {mine} (PID {target.pid}) and "
                                                   "the processes it started")
        target.wait(10)
        assert not alive(family) and alive([bystander.pid])
        assert main(["deploy", "stop", "--flwr-home", str(mine)]) == 0
        assert capsys.readouterr().out.strip() == f"no local SuperLink of {mine} is running"
    finally:
        for process in (target, bystander):
            deploy.terminate(process.pid, grace=2)
            process.wait()


def test_keys_lists_every_configuration_key(capsys):
    assert main(["keys"]) == 0
    out = capsys.readouterr().out
    missing = [key for key in DEFAULTS if not re.search(rf"^{re.escape(key)}\s", out, re.M)]
    assert not missing, missing
