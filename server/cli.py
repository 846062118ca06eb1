"""``otm-fed``: the command line.

    otm-fed simulate [--scenario NAME|PATH] [--rounds N] [--seed S] [--out DIR] [--engine simulation|inprocess]
                     [--set key=value ...] [--resume RUN_DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from otm_fed.config import ConfigError, resolve_config
from otm_fed.results import CONFIG_FILE, SUMMARY_FILE


def parse_assignments(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def print_final_table(summary: dict) -> None:
    final = summary["final"]
    print(f"\n{summary['scenario']} / {summary['strategy']}: {summary['rounds']} rounds, seed {summary['seed']}, "
          f"{summary['wall_seconds']:.1f} s")
    print("| metric | mean | per modality |\n|---|---|---|")
    for name in ("purity", "acc", "nmi", "ari"):
        per = ", ".join(f"{v:.4f}" for v in final.get(f"{name}_per_modality", []))
        print(f"| {name} | {final.get(name, float('nan')):.4f} | {per} |")
    if "fused_purity" in final:
        print(f"| fused purity (concatenated aligned codes) | {final['fused_purity']:.4f} | |")


def simulate(args: argparse.Namespace) -> int:
    overrides = parse_assignments(args.set)
    for key, value in (("rounds", args.rounds), ("seed", args.seed)):
        if value is not None:
            overrides[key] = str(value)
    if args.resume:  # the run folder's own resolved config, continued after its last completed round
        overrides["resume"] = "true"
        args.scenario, args.out = str(Path(args.resume) / CONFIG_FILE), args.resume
    config = resolve_config(args.scenario, overrides)
    from otm_fed.agent import scenario_dataset

    n_modalities = config["num-modalities"] or scenario_dataset(config).n_views
    run_dir = Path(args.out) if args.out else Path("runs") / f"{config['scenario']}-{config['strategy']}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"otm-fed: scenario {config['scenario']} ({config['dataset']}, {n_modalities} modalities), "
          f"strategy {config['strategy']}, {config['rounds']} rounds -> {run_dir}", flush=True)
    if args.engine == "inprocess":
        from server.inprocess import run_inprocess as run
    else:
        from server.simulation import run_simulation as run
    run_dir = run(config, n_modalities, run_dir)
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.is_file():
        print(f"otm-fed: the run ended without a summary; see {run_dir}", file=sys.stderr)
        return 1
    summary = json.loads(summary_path.read_text())
    if not summary["final"]:
        print(f"otm-fed: the run produced no evaluation (every agent failed?); see {run_dir}/metrics.jsonl",
              file=sys.stderr)
        return 1
    print_final_table(summary)
    print(f"\nwrote {run_dir}/config.toml, metrics.jsonl, summary.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otm-fed", description="Federated multi-modal learning with the OT latent mixer")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a scenario in Flower's simulation engine")
    sim.add_argument("--scenario", default="synthetic", help="scenario name (scenarios/NAME.toml) or a .toml path")
    sim.add_argument("--rounds", type=int)
    sim.add_argument("--seed", type=int)
    sim.add_argument("--out", help="run folder (default runs/SCENARIO-STRATEGY-TIME)")
    sim.add_argument("--engine", choices=("simulation", "inprocess"), default="simulation",
                     help="Flower's simulation engine (Ray), or the same apps called in this process")
    sim.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    sim.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a stopped run from its last completed round (its config, seeds and checkpoints)")
    sim.set_defaults(handler=simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"otm-fed: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
