"""``otm-fed``: the command line.

    otm-fed simulate [--scenario NAME|PATH | --data FILE] [--normalisation M[,M...]] [--rounds N] [--seed S]
                     [--out DIR] [--set key=value ...] [--engine simulation|inprocess] [--actors N]
                     [--resume RUN_DIR] [--no-plots]
    otm-fed plot RUN_DIR [RUN_DIR ...] [--out DIR]
    otm-fed deploy certs --out DIR [--host NAME_OR_IP ...]
    otm-fed deploy node-key --out DIR --name NAME
    otm-fed deploy federation --name NAME --address HOST:PORT --ca CA_CERT [--flwr-home DIR]
    otm-fed deploy demo --data FILE --nodes M [--scenario NAME] [--rounds N] [--work DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from otm_fed.config import ConfigError, resolve_config
from otm_fed.results import (CONFIG_FILE, SUMMARY_FILE, format_summary, holds_run, is_finished, new_run_dir,
                             open_run_dir, read_summary, rounds_done)
from otm_fed.scenario import check_fits, scenario_dataset, with_absolute_data

APP_DIR = Path(__file__).resolve().parent.parent


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``--set key=value`` items as a dict of strings (typed by resolve_config)."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    return overrides


RESUME_MAY_CHANGE = ("rounds", "round-timeout")
"""Keys a resumed run may change: its length (an extension) and how long a round waits."""


def resume_arguments(args: argparse.Namespace, overrides: dict[str, str]) -> str | None:
    """Point a ``--resume RUN_DIR`` at the run folder's own config; returns the message to print
    and stop with when there is nothing to do (a finished run not asked for more rounds).

    Options that would silently change the run are refused: ``--scenario``, ``--data``,
    ``--normalisation``, a different ``--out`` or ``--seed``, ``--set`` of any key but those of
    RESUME_MAY_CHANGE. ``--rounds N`` beyond a finished run's length extends it (the new rounds
    are recorded as an extension)."""
    run_dir = Path(args.resume)
    conflicts = [flag for flag, value in (("--scenario", args.scenario), ("--data", args.data),
                                          ("--normalisation", args.normalisation)) if value is not None]
    if args.out and Path(args.out).resolve() != run_dir.resolve():
        conflicts.append("--out")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume {run_dir}: not a run folder (no {CONFIG_FILE})")
    saved = resolve_config(str(run_dir / CONFIG_FILE))
    if args.seed is not None and args.seed != saved["seed"]:
        conflicts.append("--seed")
    settings = {key: value for key, value in parse_assignments(args.set).items() if key not in RESUME_MAY_CHANGE}
    changed = resolve_config(str(run_dir / CONFIG_FILE), settings)
    conflicts += [f"--set {key}" for key in sorted(settings) if changed[key] != saved[key]]
    if conflicts:
        raise ConfigError(f"--resume continues {run_dir} with its own config; drop {', '.join(conflicts)} "
                          "(or start a new run without --resume)")
    rounds = overrides.get("rounds", str(saved["rounds"]))
    target = resolve_config(str(run_dir / CONFIG_FILE), {"rounds": rounds})["rounds"]
    done = rounds_done(run_dir)
    finished = is_finished(run_dir, saved["rounds"])
    if finished and target <= done:
        return (f"otm-fed: {run_dir} already finished its {done} rounds; nothing to do, its files are untouched "
                f"(to add rounds: otm-fed simulate --resume {run_dir} --rounds N, N > {done})")
    if target < done:
        raise ConfigError(f"--rounds {target} is fewer than the {done} rounds {run_dir} has done")
    if finished:
        print(f"otm-fed: extending the finished run {run_dir} from {done} to {target} rounds; the rounds "
              f"after {done} are recorded as an extension (extension_of, extended_from)", flush=True)
    overrides["resume"] = "true"
    args.scenario, args.out = str(run_dir / CONFIG_FILE), str(run_dir)
    return None


def simulate(args: argparse.Namespace) -> int:
    """One run: config and data checked completely, a run folder that holds no other run, the
    engine, then the plots and the list of files written."""
    overrides = parse_assignments(args.set)
    for key, value in (("rounds", args.rounds), ("seed", args.seed), ("normalisation", args.normalisation)):
        if value is not None:
            overrides[key] = str(value)
    if args.resume:
        message = resume_arguments(args, overrides)
        if message:
            print(message)
            return 0
    else:
        overrides["resume"] = "false"  # a scenario copied from a resumed run must not resume into a new folder
    if args.data:
        overrides.update({"dataset": args.data, "scenario": Path(args.data).stem})
    config = with_absolute_data(resolve_config(args.scenario or (None if args.data else "synthetic"), overrides))
    dataset = scenario_dataset(config)
    check_fits(config, dataset)
    n_modalities = config["num-modalities"] or dataset.n_views
    if args.engine == "simulation":
        from launcher.simulation import backend_config

        try:
            backend_config(actors=args.actors)  # the one check of --actors, before anything starts
        except ValueError as error:
            raise ValueError(f"--{error}") from None
    if args.out and not config["resume"] and holds_run(args.out):
        raise ConfigError(f"{args.out} already holds a run; continue it with --resume {args.out}, "
                          "or choose another --out (or none, for a new folder)")
    run_dir = open_run_dir(args.out, config["resume"]) if args.out else new_run_dir(config)
    args.run_dir = run_dir
    print(f"otm-fed: scenario {config['scenario']} ({config['dataset']}, {n_modalities} modalities), "
          f"strategy {config['strategy']}, {config['rounds']} rounds -> {run_dir}", flush=True)
    if args.engine == "inprocess":
        from launcher.inprocess import run_inprocess

        run_dir = run_inprocess(config, n_modalities, run_dir)
    else:
        from launcher.simulation import run_simulation

        run_dir = run_simulation(config, n_modalities, run_dir, actors=args.actors)
    summary = read_summary(run_dir)
    if summary is None:
        print(f"otm-fed: the run ended without a summary; see {run_dir}", file=sys.stderr)
        return 1
    if not summary["final"]:
        print(f"otm-fed: the run produced no evaluation (every agent failed?); see {run_dir}/metrics.jsonl",
              file=sys.stderr)
        return 1
    if not args.no_plots:
        from otm_fed.plots import plot_runs

        plot_runs([run_dir], run_dir)
    print(f"\nwrote {run_dir}/: {', '.join(written_files(run_dir))}")
    return 0


def plot(args: argparse.Namespace) -> int:
    """The plots of finished or running run folders (otm_fed.plots): into the one run folder, or --out."""
    from otm_fed.plots import plot_runs

    if args.out is None and len(args.runs) > 1:
        raise ConfigError("plots of several runs need --out DIR")
    written = plot_runs([Path(run) for run in args.runs], Path(args.out or args.runs[0]))
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def written_files(run_dir: Path) -> list[str]:
    """The run folder's files and folders, as the closing line names them."""
    return [entry.name + ("/" if entry.is_dir() else "") for entry in sorted(run_dir.iterdir())
            if not entry.name.startswith(".")]


def deploy(args: argparse.Namespace) -> int:
    """Deployment helpers (launcher.deploy): certificates, node keys, federation entry, local demo."""
    from launcher import deploy as helpers

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
    if not 1 <= args.nodes <= dataset.n_views:
        raise ConfigError(f"--nodes {args.nodes}: {args.data} has {dataset.n_views} views, one per SuperNode")
    check_fits(typed, dataset, args.nodes)
    if holds_run(run_dir):
        raise ConfigError(f"--work {args.work} holds an earlier demo's run ({run_dir}); choose another --work")
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
    print(format_summary(read_summary(run_dir)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otm-fed", description="Federated multi-modal learning with the OT latent mixer")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a scenario in Flower's simulation engine")
    sim.add_argument("--scenario", help="scenario name (scenarios/NAME.toml) or a .toml path (default synthetic)")
    sim.add_argument("--data", metavar="FILE", help="your own multi-view .mat/.npz file (the scenario's settings, "
                     "default DEFAULTS, with this data; the number of clusters is the file's number of labels)")
    sim.add_argument("--normalisation", help="per-agent normalisation: zscore (dense features), tfidf (counts), "
                     "l2 (already weighted text, heavy tails), minmax, none, or a comma list, one per view")
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
    sim.add_argument("--no-plots", action="store_true", help="do not draw the run's plots at the end "
                     "(scores and losses per round, t-SNE of the final codes; otm-fed plot RUN_DIR draws them later)")
    sim.set_defaults(handler=simulate)
    plots = commands.add_parser("plot", help="scores and losses per round, t-SNE of the final codes, of run folders")
    plots.add_argument("runs", nargs="+", metavar="RUN_DIR")
    plots.add_argument("--out", help="where the PNGs go (default: the run folder; needed for several runs)")
    plots.set_defaults(handler=plot)
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


def leave(code: int) -> int:
    """``code``, or exit at once where a thread would keep the process alive: Flower's simulation
    runs the ServerApp in a non-daemon thread that, once interrupted, waits out round-timeout
    for replies that will not come. Every run file is written atomically, so nothing is lost."""
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
           if thread is not threading.main_thread()):
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    """Every user error is one line on stderr and exit code 2; Ctrl-C is one line naming how to
    continue and exit code 130 (128 + SIGINT, the shell's convention)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        run_dir = getattr(args, "run_dir", None)
        hint = f"; continue it exactly with: otm-fed simulate --resume {run_dir}" if run_dir else ""
        print(f"\notm-fed: interrupted{hint}", file=sys.stderr)
        return leave(130)
    except OSError as error:  # a file or folder that cannot be read or written
        print(f"otm-fed: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except ValueError as error:  # ConfigError, RunFolderError, DatasetFormatError, bad --actors
        print(f"otm-fed: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
