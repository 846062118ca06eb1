"""The README's ``flwr run .`` example, as written, for 2 rounds: Flower unpacks the app into
$FLWR_HOME/apps, so the data are found through the absolute data-dir; the local SuperLink runs the
installed environment (no runtime dependency installation); the final table is streamed. The
SuperLink it leaves running in the background is stopped as the README says, with
``otm-fed deploy stop``."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.deploy import BIN_DIR, alive, descendants, free_port, local_superlinks, stop_local_superlinks

pytestmark = pytest.mark.simulation

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = re.compile(r"```bash\n(FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 flwr run \. --stream.*?)\n```", re.S)


def test_readme_flwr_run_example_on_real_data(tmp_path, data_dir):
    command = EXAMPLE.search((ROOT / "README.md").read_text()).group(1).replace("\\\n", " ")
    assert "rounds=5" in command and "data-dir='$PWD/../shared/data'" in command
    command = command.replace("rounds=5", f"rounds=2 eval-every=2 out-dir='{tmp_path / 'run'}'")
    flwr_home = tmp_path / "flwr-home"
    env = {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(free_port()), "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
           "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")])}  # flwr starts flower-superlink by name
    try:
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stdout + result.stderr
        [superlink] = local_superlinks(flwr_home)  # left running, detached, with its SuperExec
        family = [superlink, *descendants(superlink)]
        assert len(family) >= 2
        assert main(["deploy", "stop", "--flwr-home", str(flwr_home)]) == 0
        assert not local_superlinks(flwr_home) and not alive(family)
    finally:
        stop_local_superlinks(flwr_home)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["rounds"] == 2 and summary["provenance"]["data-file"] == str((data_dir / "ORL.mat").resolve())
    assert "| acc |" in result.stdout and "round   2/2" in result.stdout
    assert not list(flwr_home.rglob("site-packages"))  # no runtime environment was built
