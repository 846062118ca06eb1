"""``otm-fed``: the command line.

    otm-fed simulate [--scenario NAME|PATH] [--rounds N] [--seed S] [--out DIR] [--engine simulation|inprocess]
                     [--set key=value ...] [--resume RUN_DIR]
    otm-fed deploy certs --out DIR [--host NAME_OR_IP ...]
    otm-fed deploy node-key --out DIR --name NAME
    otm-fed deploy federation --name NAME --address HOST:PORT --ca CA_CERT [--flwr-home DIR]
    otm-fed deploy demo --data FILE --nodes M [--scenario NAME] [--rounds N] [--work DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from otm_fed.config import ConfigError, resolve_config
from otm_fed.results import CONFIG_FILE, SUMMARY_FILE

APP_DIR = Path(__file__).resolve().parent.parent


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
    supervised = [name for name in ("accuracy", "mae") if name in final]
    if supervised:
        name = supervised[0]
        print(f"| {name} | mean | per modality | late fusion |\n|---|---|---|---|")
        per = ", ".join(f"{v:.4f}" for v in final[f"{name}_per_modality"])
        print(f"| test fold | {final[name]:.4f} | {per} | {final.get(f'late_fusion_{name}', float('nan')):.4f} |")
        return
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
    from otm_fed.scenario import anchor_ids, scenario_dataset

    dataset = scenario_dataset(config)
    anchor_ids(config, len(dataset.labels))  # refuses more anchors than samples before any round
    n_modalities = config["num-modalities"] or dataset.n_views
    run_dir = Path(args.out) if args.out else Path("runs") / f"{config['scenario']}-{config['strategy']}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"otm-fed: scenario {config['scenario']} ({config['dataset']}, {n_modalities} modalities), "
          f"strategy {config['strategy']}, {config['rounds']} rounds -> {run_dir}", flush=True)
    if args.engine == "inprocess":
        from server.inprocess import run_inprocess

        run_dir = run_inprocess(config, n_modalities, run_dir)
    else:
        from server.simulation import backend_config, run_simulation

        try:
            backend_config(actors=args.actors)  # the one check of --actors, before anything starts
        except ValueError as error:
            print(f"otm-fed: --{error}", file=sys.stderr)
            return 2
        run_dir = run_simulation(config, n_modalities, run_dir, actors=args.actors)
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


def deploy(args: argparse.Namespace) -> int:
    """Deployment helpers (server.deploy): certificates, node keys, federation entry, local demo."""
    from server import deploy as helpers

    if args.action == "certs":
        certificates = helpers.make_certificates(args.out, args.host or ["127.0.0.1", "localhost"])
        print(f"CA certificate (copy to every site): {certificates.ca}\n"
              f"server certificate and key (stay on the SuperLink machine): {certificates.server_cert}, "
              f"{certificates.server_key}")
    elif args.action == "node-key":
        private, public = helpers.make_node_key(args.out, args.name)
        print(f"private key (stays at the site): {private}\npublic key (register it: flwr supernode register "
              f"{public} <federation>): {public}")
    elif args.action == "federation":
        flwr_home = args.flwr_home or os.environ.get("FLWR_HOME") or str(Path.home() / ".flwr")
        print(f"wrote {helpers.write_federation(flwr_home, args.name, args.address, args.ca)}")
    else:
        return deploy_demo(args, helpers)
    return 0


def deploy_demo(args: argparse.Namespace, helpers) -> int:
    """A SuperLink and one SuperNode per view of ``--data`` on this machine, a run, then all stopped."""
    from otm_fed.data import load_multiview

    dataset = load_multiview(args.data)
    run_dir = (Path(args.work) / "run").resolve()
    overrides = parse_assignments(args.set)
    typed = resolve_config(args.scenario, overrides)  # refuses a bad key before anything starts
    run_config = {"scenario": args.scenario, "rounds": args.rounds, "num-modalities": args.nodes,
                  "n-clusters": dataset.n_classes, "fused-eval": False, "out-dir": str(run_dir),
                  **{key: typed[key] for key in overrides}}
    with helpers.LocalFederation(Path(args.work), Path(args.data), args.nodes) as federation:
        print(f"SuperLink on {federation.address} (TLS, node authentication); {args.nodes} SuperNodes; "
              f"logs and keys in {federation.work_dir}", flush=True)
        result = federation.run(APP_DIR, run_config, timeout=args.timeout)
    print(result.stdout[-4000:])
    if result.returncode != 0 or not (run_dir / SUMMARY_FILE).is_file():
        print(f"otm-fed: the deployed run failed: {result.stderr[-2000:]}", file=sys.stderr)
        return 1
    print_final_table(json.loads((run_dir / SUMMARY_FILE).read_text()))
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
    sim.add_argument("--actors", type=int, help="simulation engine: Ray client actors (default 1; up to one per "
                     "core runs clients in parallel, about 0.5 GB each)")
    sim.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    sim.add_argument("--resume", metavar="RUN_DIR",
                     help="continue a stopped run from its last completed round (its config, seeds and checkpoints)")
    sim.set_defaults(handler=simulate)
    dep = commands.add_parser("deploy", help="deployment helpers: certificates, node keys, federation, local demo")
    actions = dep.add_subparsers(dest="action", required=True)
    certs = actions.add_parser("certs", help="a CA and a SuperLink server certificate")
    certs.add_argument("--out", required=True)
    certs.add_argument("--host", action="append", help="the SuperLink's DNS name or IP (repeat); default 127.0.0.1")
    key = actions.add_parser("node-key", help="a SuperNode's key pair (OpenSSH EC P-384)")
    key.add_argument("--out", required=True)
    key.add_argument("--name", required=True)
    federation = actions.add_parser("federation", help="write the SuperLink connection into $FLWR_HOME/config.toml")
    federation.add_argument("--name", required=True)
    federation.add_argument("--address", required=True, help="HOST:PORT of the SuperLink")
    federation.add_argument("--ca", required=True, help="the CA certificate")
    federation.add_argument("--flwr-home", help="default $FLWR_HOME or ~/.flwr")
    demo = actions.add_parser("demo", help="SuperLink + one SuperNode per view on this machine, one run")
    demo.add_argument("--data", required=True, help="a multi-view .mat/.npz file; SuperNode m reads view m")
    demo.add_argument("--nodes", type=int, required=True)
    demo.add_argument("--scenario", default="prokaryotic")
    demo.add_argument("--rounds", type=int, default=2)
    demo.add_argument("--work", default="runs/deploy-demo", help="certificates, keys, logs, run folder")
    demo.add_argument("--timeout", type=float, default=1800.0)
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    dep.set_defaults(handler=deploy)
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
