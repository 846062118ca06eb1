"""Seconds per round and peak memory of full unaligned runs on the real data sets.

    python benchmarks/speed.py [--scenarios orl,movies,prokaryotic,handwritten] [--rounds 120]
        [--engines inprocess,simulation] [--sites 1,2,5,10] [--json PATH]

Each run is a fresh child process; the parent samples the memory of the child's whole process
tree (Ray's processes included) every 0.5 s, two ways: the sum of resident set sizes (RSS, which
counts a shared library page once per process that maps it: torch's pages in every actor) and
the sum of proportional set sizes (PSS, /proc/PID/smaps_rollup: a shared page split between the
processes sharing it, so the tree's physical memory). Per round: ``mixer`` (the server's FGW
barycenter, mask and eq. 7 gradients), ``clients`` (time inside the ClientApp handlers: QUERY,
TRAIN, EVALUATE, summed over agents; measured in-process, and the same computation in Flower's
simulation) and ``overhead`` (the rest: message records, copies, transport, scheduling, the
server's fused-eval k-means). With ``--sites``, each scenario runs once per count of sites per
modality, and the table gives each count's seconds per round and peak memory as ratios to the
first count's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otm_fed.results import read_rounds, write_json  # noqa: E402

SCENARIOS = ("orl", "movies", "prokaryotic", "handwritten")
ENGINES = ("inprocess", "simulation")


class TimedClientApp:
    """The project's ClientApp, timing every call."""

    def __init__(self, app: Any) -> None:
        self.app, self.seconds = app, 0.0

    def __call__(self, message: Any, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.app(message, context)
        finally:
            self.seconds += time.perf_counter() - start


def _kilobytes(text: str, field: str) -> int:
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith(field)))


def tree_memory_bytes(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) of a process and all its descendants, from /proc (Linux)."""
    rss = pss = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            rss += _kilobytes(Path(f"/proc/{current}/status").read_text(), "VmRSS:") * 1024
            pss += _kilobytes(Path(f"/proc/{current}/smaps_rollup").read_text(), "Pss:") * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (OSError, StopIteration):
            continue  # the process ended while being read
    return rss, pss


def child(scenario: str, engine: str, rounds: int, data_dir: str, actors: int, sites: int, out: Path) -> None:
    """One run in this process; writes its timings to ``out``."""
    from clients.client_app import app
    from otm_fed.config import resolve_config
    from otm_fed.scenario import scenario_dataset, site_counts
    from launcher.inprocess import run_inprocess
    from launcher.simulation import run_simulation

    config = resolve_config(scenario, {"rounds": str(rounds), "data-dir": data_dir, "sites": str(sites)})
    n_nodes = sum(site_counts(config, config["num-modalities"] or scenario_dataset(config).n_views))
    started = time.perf_counter()
    timed = TimedClientApp(app)
    if engine == "inprocess":
        run_dir = run_inprocess(config, n_nodes, out.parent / "run", client_app=timed)
    else:
        run_dir = run_simulation(config, n_nodes, out.parent / "run", actors=actors)
    wall = time.perf_counter() - started
    rows = read_rounds(run_dir)
    result = {"wall_seconds": wall, "rounds": len(rows),
              "round_seconds": float(np.mean([r["seconds"]["total"] for r in rows])),
              "mixer_seconds": float(np.mean([r["seconds"].get("mix", 0.0) for r in rows]))}
    if engine == "inprocess":
        result["client_seconds"] = timed.seconds / len(rows)
    out.write_text(json.dumps(result))


def measure(scenario: str, engine: str, rounds: int, data_dir: str, actors: int = 1, sites: int = 1) -> dict[str, Any]:
    """Run ``child`` in a fresh process and sample its process tree's memory (Linux /proc)."""
    with TemporaryDirectory() as folder:
        out = Path(folder) / "timing.json"
        process = subprocess.Popen([sys.executable, __file__, "--child", scenario, engine, str(rounds), data_dir,
                                    str(actors), str(sites), str(out)], stdout=subprocess.DEVNULL)
        peak_rss = peak_pss = 0
        while process.poll() is None:
            rss, pss = tree_memory_bytes(process.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.5)
        if process.returncode != 0:
            raise RuntimeError(f"{scenario} / {engine} failed with exit code {process.returncode}")
        return {"scenario": scenario, "engine": engine, "actors": actors if engine == "simulation" else None, "sites": sites,
                **json.loads(out.read_text()), "peak_rss_mb": peak_rss / 2**20, "peak_pss_mb": peak_pss / 2**20}


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        scenario, engine, rounds, data_dir, actors, sites, out = sys.argv[2:9]
        child(scenario, engine, int(rounds), data_dir, int(actors), int(sites), Path(out))
        return 0
    parser = argparse.ArgumentParser(description="seconds per round and peak memory on the real data sets")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--rounds", type=int, default=120)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--actors", type=int, default=1, help="Ray client actors (default 1, as otm-fed simulate)")
    parser.add_argument("--sites", default="1", help="sites per modality, a comma list (one run each)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    results = []
    for scenario in args.scenarios.split(","):
        for sites in (int(count) for count in args.sites.split(",")):
            client_seconds = None
            for engine in args.engines.split(","):
                result = measure(scenario, engine, args.rounds, args.data_dir, args.actors, sites)
                client_seconds = result.get("client_seconds", client_seconds)
                if client_seconds is not None:
                    result["overhead_seconds"] = result["round_seconds"] - result["mixer_seconds"] - client_seconds
                    result.setdefault("client_seconds", client_seconds)
                results.append(result)
                print(json.dumps(result), flush=True)
    print(table(results))
    if args.json:
        write_json(args.json, results)
    return 0


def table(results: list[dict[str, Any]]) -> str:
    """Seconds per round, its parts and peak memory per run; against sites, ratios to the first
    count of sites of the same scenario and engine."""
    lines = ["| scenario | engine | sites per modality | rounds | wall s | s/round | x first | mixer | client steps | "
             "overhead | peak RSS MB (sum) | peak PSS MB | PSS x first |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    first: dict[tuple, dict[str, Any]] = {}
    for r in results:
        base = first.setdefault((r["scenario"], r["engine"]), r)
        split = [f"{r[key]:.3f}" if key in r else "-" for key in ("mixer_seconds", "client_seconds", "overhead_seconds")]
        engine = r["engine"] if r["engine"] != "simulation" else f"simulation, {r['actors']} actor(s)"
        lines.append(f"| {r['scenario']} | {engine} | {r.get('sites', 1)} | {r['rounds']} | {r['wall_seconds']:.1f} | "
                     f"{r['round_seconds']:.3f} | {r['round_seconds'] / base['round_seconds']:.2f} | {' | '.join(split)} | "
                     f"{r['peak_rss_mb']:.0f} | {r['peak_pss_mb']:.0f} | {r['peak_pss_mb'] / base['peak_pss_mb']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
