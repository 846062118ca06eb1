"""Seconds per round on Flower's deployment engine against Flower's own floor, side by side.

    python benchmarks/deployment_rounds.py [--rounds 3] [--json PATH] [--out DIR]

One LocalFederation (127.0.0.1, TLS, node authentication, 3 SuperNodes, prokaryotic's views from
../shared/data) runs the floor (benchmarks/floor_app: a ClientApp that imports torch and replies
at once, one exchange per round), then OTM (piggy-backing on, the evaluation piggy-backed on the
last round's TRAIN), then the floor again, so that a load drifting on a shared machine weighs on
both. Rows ``{"app": "floor" | "otm-fed", "round", "seconds"}``: the floor's as its ServerApp
timed each exchange (numbered on through its second run), OTM's from metrics.jsonl
(``seconds.total``). Prints each round's ratio to the floor's median exchange; the goals are at
most 1.2x after round 1 and 2.4x for round 1 (its QUERY and TRAIN exchanges).

Every run writes into a new folder ``runs/deploy-bench-YYYYmmdd-HHMMSS-microseconds`` (or an empty
``--out``), and the benchmark stops, saying why, when any of its runs fails.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from otm_fed.data import DATASET_FILES, resolve_data_dir
from otm_fed.results import read_rounds, read_summary, write_json
from launcher.deploy import LocalFederation, RunFailed, add_work_folder_option, open_work_folder

ROOT = Path(__file__).resolve().parents[1]
FLOOR_APP = ROOT / "benchmarks" / "floor_app"
N_NODES = 3
GOALS = {"first": 2.4, "later": 1.2}


def run_app(federation: LocalFederation, app_dir: Path, config: dict) -> None:
    """One run to its end; a run that failed (or that its ServerApp refused) stops the benchmark."""
    try:
        federation.run(app_dir, config, timeout=1800)
    except RunFailed as error:
        raise SystemExit(f"deployment_rounds: {error}") from None


def floor_config(rounds: int, out_path: Path) -> dict:
    return {"rounds": rounds, "num-nodes": N_NODES, "out-path": str(out_path)}


def otm_config(rounds: int, run_dir: Path) -> dict:
    return {"scenario": "prokaryotic", "rounds": rounds, "eval-every": rounds, "num-modalities": N_NODES,
            "n-clusters": 4, "fused-eval": False, "piggyback": True, "out-dir": str(run_dir)}


def main(argv: list[str] | None = None) -> Path:
    """Runs the benchmark and returns its work folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each run")
    parser.add_argument("--json", help="write the rows here (default: not written)")
    add_work_folder_option(parser, "deploy-bench")
    args = parser.parse_args(argv)
    work = open_work_folder(args.out, "deploy-bench", "deployment_rounds")
    with LocalFederation(work / "federation", resolve_data_dir() / DATASET_FILES["prokaryotic"],
                         n_nodes=N_NODES) as federation:
        for app_dir, run_config in ((FLOOR_APP, floor_config(args.rounds, work / "floor-1.json")),
                                    (ROOT, otm_config(args.rounds, work / "run")),
                                    (FLOOR_APP, floor_config(args.rounds, work / "floor-2.json"))):
            run_app(federation, app_dir, run_config)
    floor_rows = [row for part in (1, 2) for row in json.loads((work / f"floor-{part}.json").read_text())]
    rounds = read_rounds(work / "run")
    rows = [{**row, "round": number} for number, row in enumerate(floor_rows, 1)] + [
        {"app": "otm-fed", "round": row["round"], "seconds": row["seconds"]["total"]} for row in rounds]
    floor = float(np.median([row["seconds"] for row in rows if row["app"] == "floor"]))
    print(f"floor median exchange {floor:.2f} s")
    print(f"{'app':8} {'round':>5} {'seconds':>8} {'x floor':>8}  goal")
    for row in rows:
        ratio = row["seconds"] / floor
        goal = "" if row["app"] == "floor" else GOALS["first" if row["round"] == 1 else "later"]
        verdict = "" if not goal else f"<= {goal}  {'met' if ratio <= goal else 'missed'}"
        print(f"{row['app']:8} {row['round']:>5} {row['seconds']:8.2f} {ratio:8.2f}  {verdict}")
    first = rounds[0]["seconds"]
    print(f"otm-fed round 1: QUERY {first['query']:.2f} s + TRAIN {first['train']:.2f} s; final purity "
          f"{read_summary(work / 'run')['final']['purity']:.4f}")
    if args.json:
        write_json(args.json, rows)
    return work


if __name__ == "__main__":
    main()
