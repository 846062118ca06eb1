"""Seconds per round on Flower's deployment engine (loopback, TLS, node auth), piggy-backing on/off.

    python benchmarks/deployment_rounds.py [--rounds 3] [--out runs/deploy-bench]

Starts a LocalFederation (SuperLink + one SuperNode per prokaryotic view) per setting and prints
each round's wall seconds as the ServerApp measured them (metrics.jsonl ``seconds.total``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from otm_fed.data import DATASET_FILES, resolve_data_dir
from otm_fed.results import read_rounds
from server.deploy import LocalFederation

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="runs/deploy-bench")
    args = parser.parse_args()
    data = resolve_data_dir() / DATASET_FILES["prokaryotic"]
    results = {}
    for piggyback in (False, True):
        work = Path(args.out).resolve() / f"piggyback-{str(piggyback).lower()}"
        config = {"scenario": "prokaryotic", "rounds": args.rounds, "eval-every": args.rounds, "num-modalities": 3,
                  "n-clusters": 4, "fused-eval": False, "piggyback": piggyback, "out-dir": str(work / "run")}
        with LocalFederation(work, data, n_nodes=3) as federation:
            result = federation.run(ROOT, config, timeout=1800)
        if result.returncode != 0:
            raise SystemExit(f"run failed: {result.stdout}{result.stderr}")
        seconds = [row["seconds"]["total"] for row in read_rounds(work / "run")]
        results[piggyback] = seconds
        print(f"piggyback={piggyback}: seconds per round {', '.join(f'{s:.1f}' for s in seconds)}; "
              f"mean {np.mean(seconds):.1f}; purity {json.loads((work / 'run' / 'summary.json').read_text())['final']['purity']:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
