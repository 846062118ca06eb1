"""Run the OTM ServerApp and ClientApp in Flower's simulation engine from Python.

Flower 1.42 has no public in-Python entry to its simulation engine that takes a run config: the
public ``flwr.simulation.run_simulation`` is deprecated (it points to ``flwr run``) and gives the
apps an empty run config, and ``flwr run`` needs a SuperLink and ships the app as a FAB. So this
drives the engine the way ``flwr-simulation`` does, through its private ``_run_simulation``
(flwr is pinned to 1.42.0; ``tests/test_simulation.py`` runs it).
The resolved config is written to the run folder and handed to both apps as the scenario, so
they see exactly what the command line resolved. Ray is sized for the machine: by default one
client actor with every core, which keeps a 120-round run of every real-data scenario under
1.5 GB (proportional set size, Ray's own processes included). More actors (at most one per core,
each with cores // actors CPUs) run clients in parallel, at about 0.5 GB each (a Python process
with torch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

from flwr.app import Context, RecordDict  # noqa: E402
from flwr.common.config import get_fused_config_from_dir  # noqa: E402
from flwr.common.constant import SUPERLINK_NODE_ID  # noqa: E402
from flwr.simulation.run_simulation import _run_simulation  # noqa: E402
from flwr.supercore.constant import NOOP_FEDERATION_ID  # noqa: E402
from flwr.supercore.run import Run  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402
from flwr.supercore.telemetry import EventType  # noqa: E402

from otm_fed.results import CONFIG_FILE, RunRecorder  # noqa: E402

APP_DIR = Path(__file__).resolve().parent.parent


def backend_config(cpus: int | None = None, actors: int | None = None) -> dict[str, Any]:
    """Ray sized for ``cpus`` cores (default: this machine's) and ``actors`` client actors
    (default: one)."""
    cpus = cpus or os.cpu_count() or 1
    actors = 1 if actors is None else actors
    if not 1 <= actors <= cpus:
        raise ValueError(f"actors must be between 1 and the {cpus} CPUs, got {actors}")
    return {"client_resources": {"num_cpus": cpus // actors, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "logging_level": "ERROR", "log_to_driver": True,
                          "include_dashboard": False}}


def run_simulation(config: Mapping[str, Any], num_supernodes: int, run_dir: str | Path,
                   cpus: int | None = None, actors: int | None = None) -> Path:
    """Simulate ``num_supernodes`` modality agents and the server; returns the run folder."""
    if not (APP_DIR / "pyproject.toml").is_file():
        raise RuntimeError(f"the Flower app directory {APP_DIR} has no pyproject.toml: "
                           "run otm-fed from a checkout (pip install -e .)")
    run_dir = Path(run_dir).resolve()
    config = {**config, "out-dir": str(run_dir)}
    RunRecorder(run_dir, config)  # writes the resolved config.toml the apps will read
    overrides = {"scenario": str(run_dir / CONFIG_FILE), "out-dir": str(run_dir)}
    run = Run.create_empty(run_id=int.from_bytes(os.urandom(6), "big"))
    run.override_config = overrides
    run.primary_task_id = 1
    run.federation_id = NOOP_FEDERATION_ID
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    run_config = get_fused_config_from_dir(APP_DIR, overrides)
    server_context = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(),
                             run_config=run_config)
    from clients.client_app import app as client_app
    from server.server_app import app as server_app

    _run_simulation(num_supernodes=num_supernodes, exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                    server_app=server_app, client_app=client_app, backend_name="ray",
                    backend_config=backend_config(cpus, actors), server_app_context=server_context,
                    app_dir=str(APP_DIR), is_app=True, run=run, verbose_logging=False)
    return run_dir
