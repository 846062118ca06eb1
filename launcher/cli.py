"""``otm-fed``: the command line (``otm-fed COMMAND --help`` describes every flag and its default).

    otm-fed --version
    otm-fed simulate [--scenario NAME|PATH | --data FILE] [--normalisation M[,M...]] [--rounds N] [--seed S]
                     [--out DIR] [--set key=value ...] [--engine simulation|inprocess] [--actors N]
                     [--resume RUN_DIR] [--no-plots]
    otm-fed plot RUN_DIR [RUN_DIR ...] [--out DIR]
    otm-fed keys
    otm-fed deploy certs --out DIR [--host NAME_OR_IP ...]
    otm-fed deploy node-key --out DIR --name NAME
    otm-fed deploy federation --name NAME --address HOST:PORT --ca CA_CERT [--flwr-home DIR]
    otm-fed deploy demo --data FILE --nodes M [--sites S] [--scenario NAME] [--rounds N] [--work DIR] [--set key=value ...]
    otm-fed deploy stop [--flwr-home DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import threading
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import tomli_w

from otm_fed.config import SCENARIO_DIR, ConfigError, resolve_config
from otm_fed.data import DATASET_FILES
from otm_fed.results import (CONFIG_FILE, RUN_DIR_PATTERN, holds_run, is_finished, new_folder, new_run_dir,
                             open_run_dir, read_summary, rounds_done)
from otm_fed.scenario import check_fits, scenario_dataset, site_counts, with_absolute_data

if TYPE_CHECKING:
    from launcher.deploy import SiteFiles

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
    n_nodes = sum(site_counts(config, n_modalities))
    if args.engine == "simulation":
        from launcher.simulation import backend_config

        try:
            backend_config(actors=args.actors)  # more actors than CPUs, refused before anything starts
        except ValueError as error:
            raise ValueError(f"--{error}") from None
    if args.out and not config["resume"] and holds_run(args.out):
        raise ConfigError(f"{args.out} already holds a run; continue it with --resume {args.out}, "
                          "or choose another --out (or none, for a new folder)")
    run_dir = open_run_dir(args.out, config["resume"]) if args.out else new_run_dir(config)
    args.run_dir = run_dir
    sites = f", {n_nodes} sites" if n_nodes > n_modalities else ""
    print(f"otm-fed: scenario {config['scenario']} ({config['dataset']}, {n_modalities} modalities{sites}), "
          f"strategy {config['strategy']}, {config['rounds']} rounds -> {run_dir}", flush=True)
    if args.engine == "inprocess":
        from launcher.inprocess import run_inprocess

        run_dir = run_inprocess(config, n_nodes, run_dir)
    else:
        from launcher.simulation import run_simulation

        run_dir = run_simulation(config, n_nodes, run_dir, actors=args.actors)
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
    """Deployment helpers (launcher.deploy): certificates, node keys, federation entry, local demo,
    stopping what ``flwr run`` left running."""
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
        flwr_home = args.flwr_home or helpers.default_flwr_home()
        print(f"wrote {helpers.write_federation(flwr_home, args.name, args.address, args.ca)}")
    elif args.action == "stop":
        flwr_home = Path(args.flwr_home or helpers.default_flwr_home())
        stopped = helpers.stop_local_superlinks(flwr_home)
        print(f"stopped the local SuperLink of {flwr_home} (PID {', '.join(map(str, stopped))}) and the processes "
              f"it started" if stopped else f"no local SuperLink of {flwr_home} is running")
    else:
        return deploy_demo(args, helpers)
    return 0


def shared_scenario(data: Path) -> str | None:
    """The scenario of a shared data set named by its file (``ORL.mat`` -> ``orl``), or None."""
    name = data.stem.lower()
    return name if name in DATASET_FILES and (SCENARIO_DIR / f"{name}.toml").is_file() else None


def deploy_demo(args: argparse.Namespace, helpers) -> int:
    """A SuperLink and one SuperNode per view of ``--data`` on this machine, a run, then all stopped.
    The settings are ``--scenario``'s, else the shared data set's scenario, else the defaults (as
    ``simulate --data``); the resolved config travels to both apps as the run's scenario file."""
    from otm_fed.data import load_multiview

    data = Path(args.data).expanduser().resolve()
    dataset = load_multiview(data)
    scenario = args.scenario or shared_scenario(data)
    settings = {"dataset": str(data), **({} if scenario else {"scenario": data.stem}), **parse_assignments(args.set),
                "rounds": args.rounds, "num-modalities": args.nodes, "n-clusters": dataset.n_classes,
                "fused-eval": False, "sites": str(args.sites)}
    config = resolve_config(scenario, settings)  # refuses a bad key before anything starts
    if args.nodes > dataset.n_views:
        raise ConfigError(f"--nodes {args.nodes}: {args.data} has {dataset.n_views} views, one per SuperNode")
    check_fits(config, dataset, args.nodes)
    if args.work and holds_run(Path(args.work) / "run"):
        raise ConfigError(f"--work {args.work} holds an earlier demo's run ({Path(args.work) / 'run'}); choose "
                          "another --work (or none, for a new folder)")
    work = (Path(args.work) if args.work else new_folder("runs", "deploy-demo")).resolve()
    run_dir = work / "run"
    config["out-dir"] = str(run_dir)
    work.mkdir(parents=True, exist_ok=True)
    scenario_file = work / "scenario.toml"
    scenario_file.write_text(tomli_w.dumps(config))
    site_files = write_site_files(config, dataset, args.nodes, work / "sites") if args.sites > 1 else None
    print(f"otm-fed: deploy demo: scenario {config['scenario']} ({data.name}), {args.nodes * args.sites} SuperNodes, "
          f"{config['rounds']} rounds -> {work}", flush=True)
    with helpers.LocalFederation(work, data, args.nodes, site_files=site_files) as federation:
        print(f"SuperLink on {federation.address} (TLS, node authentication); logs and keys in {work}", flush=True)
        try:
            result = federation.run(APP_DIR, {"scenario": str(scenario_file), "out-dir": str(run_dir)},
                                    timeout=args.timeout)
        except (helpers.RunFailed, subprocess.TimeoutExpired) as error:
            print(f"otm-fed: the deployed run failed: {error}", file=sys.stderr)
            return 1
    print(result.stdout)  # the run's log, ending with the ServerApp's final table
    summary = read_summary(run_dir)
    if summary is None or not summary["final"]:
        print(f"otm-fed: the deployed run produced no evaluation; see {run_dir} and {work}/*.log", file=sys.stderr)
        return 1
    print(f"wrote {run_dir}/: {', '.join(written_files(run_dir))}")
    return 0


def write_site_files(config: dict, dataset, n_modalities: int, folder: Path) -> dict[tuple[int, int], SiteFiles]:
    """Each site's own file (``--sites``): view m's rows of its share (``sites_rows``: the split
    simulation deals) with their labels, one ``.npz`` per (modality, site); with ``anchors`` also
    its anchors file: per anchor, in anchor order, its row of the site's file or ``-``."""
    import numpy as np

    from launcher.deploy import SiteFiles
    from otm_fed.scenario import anchor_samples, find_values, held_anchors, sites_rows

    folder.mkdir(parents=True, exist_ok=True)
    samples = anchor_samples(config, dataset)
    files = {}
    for modality in range(n_modalities):
        positions, anchor_rows = held_anchors(dataset, modality, samples) if samples is not None else (None, None)
        for site, held in enumerate(sites_rows(config, modality, dataset)):
            rows = np.sort(held)
            stem = f"modality-{modality}.site-{site}"
            np.savez(folder / f"{stem}.npz", X0=dataset.views[modality][rows], y=dataset.view_labels(modality)[rows])
            anchors = None
            if samples is not None:
                lines = ["-"] * len(samples)
                found, at = find_values(rows, anchor_rows)
                for position, row in zip(positions[found], at[found]):
                    lines[position] = str(row)
                anchors = folder / f"{stem}.anchors.txt"
                anchors.write_text("\n".join(lines) + "\n")
            files[(modality, site)] = SiteFiles(folder / f"{stem}.npz", anchors)
    return files


def show_keys(_: argparse.Namespace) -> int:
    """Every configuration key with its default, allowed values and description."""
    from otm_fed.config import format_keys

    print(format_keys())
    return 0


def scenario_names() -> list[str]:
    """The scenarios shipped in scenarios/, sorted."""
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.toml"))


def at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each flag's help ends with its default, unless the help states it or there is none to state;
    lines break between words only, so a folder pattern such as RUN_DIR_PATTERN stays whole."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.default in (None, False, argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2) and defaults in every help."""

    def __init__(self, **kwargs) -> None:
        super().__init__(formatter_class=HelpFormatter, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"otm-fed: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="otm-fed", description="Federated multi-modal learning with the OT latent mixer")
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('otm-fed')}",
                        help="print the installed version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser("simulate", help="run a scenario in Flower's simulation engine (or in this process)",
                              description="Run a scenario: Flower's simulation engine (or the same apps in this "
                              "process), then the plots. Every user error is one line and exit code 2.")
    sim.add_argument("--scenario", metavar="NAME|PATH", help=f"scenario: one of {', '.join(scenario_names())} "
                     "(scenarios/NAME.toml), or a .toml path (default synthetic; with --data, the defaults)")
    sim.add_argument("--data", metavar="FILE", help="your own multi-view .mat/.npz file, run with the default "
                     "settings; the number of clusters is the file's number of labels (default: none, the "
                     "scenario's data)")
    sim.add_argument("--normalisation", metavar="M[,M...]", help="per-agent normalisation: zscore (dense "
                     "features), tfidf (counts), l2 (already weighted text, heavy tails), minmax, none, or a comma "
                     "list, one per view (default: the scenario's)")
    sim.add_argument("--rounds", type=int, metavar="N", help="number of rounds (default: the scenario's)")
    sim.add_argument("--seed", type=int, metavar="S", help="seed of every draw (default: the scenario's)")
    sim.add_argument("--out", metavar="DIR", help=f"run folder, which must not hold another run (default: a new "
                     f"folder {RUN_DIR_PATTERN} in the current directory)")
    sim.add_argument("--engine", choices=("simulation", "inprocess"), default="simulation",
                     help="Flower's simulation engine (Ray), or the same apps called in this process")
    sim.add_argument("--actors", type=at_least_one, metavar="N", help="simulation engine: Ray client actors, "
                     "up to one per core runs clients in parallel, about 0.5 GB each (default 1)")
    sim.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, repeatable; otm-fed keys lists them (default: none)")
    sim.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last completed round "
                     "(its config, seeds and checkpoints) (default: a new run)")
    sim.add_argument("--no-plots", action="store_true", help="do not draw the run's plots at the end (scores and "
                     "losses per round, t-SNE of the final codes; otm-fed plot RUN_DIR draws them later) "
                     "(default: draw them)")
    sim.set_defaults(handler=simulate)
    plots = commands.add_parser("plot", help="scores and losses per round, t-SNE of the final codes, of run folders",
                                description="Draw the plots of finished or running run folders.")
    plots.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders to plot")
    plots.add_argument("--out", metavar="DIR", help="where the PNGs go (default: the run folder; needed for "
                       "several runs)")
    plots.set_defaults(handler=plot)
    keys = commands.add_parser("keys", help="every configuration key: default, allowed values, description",
                               description="Every key that --set, scenario files and flwr run's --run-config "
                               "take, with its default, allowed values and a one-line description.")
    keys.set_defaults(handler=show_keys)
    dep = commands.add_parser("deploy", help="deployment helpers: certificates, node keys, federation, local demo, "
                              "stop", description="Deployment helpers for Flower's deployment engine.")
    actions = dep.add_subparsers(dest="action", required=True, metavar="ACTION")
    certs = actions.add_parser("certs", help="a CA and a SuperLink server certificate",
                               description="Write a CA and a SuperLink server certificate signed by it.")
    certs.add_argument("--out", required=True, metavar="DIR", help="folder for the certificates and keys (required)")
    certs.add_argument("--host", action="append", metavar="NAME_OR_IP", help="the SuperLink's DNS name or IP, "
                       "repeatable (default: 127.0.0.1 and localhost)")
    key = actions.add_parser("node-key", help="a SuperNode's key pair (OpenSSH EC P-384)",
                             description="Write a SuperNode's key pair (OpenSSH EC P-384).")
    key.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair (required)")
    key.add_argument("--name", required=True, help="the key's file name, e.g. the site's name (required)")
    federation = actions.add_parser("federation", help="write the SuperLink connection into $FLWR_HOME/config.toml",
                                    description="Add the SuperLink connection to $FLWR_HOME/config.toml for flwr.")
    federation.add_argument("--name", required=True, help="the connection's name, as flwr run names it (required)")
    federation.add_argument("--address", required=True, metavar="HOST:PORT", help="the SuperLink's address (required)")
    federation.add_argument("--ca", required=True, metavar="FILE", help="the CA certificate (required)")
    federation.add_argument("--flwr-home", metavar="DIR",
                            help="Flower's home folder (default: $FLWR_HOME, else ~/.flwr)")
    demo = actions.add_parser("demo", help="SuperLink + one SuperNode per view on this machine, one run",
                              description="A SuperLink and one SuperNode per view on 127.0.0.1 (TLS, node "
                              "authentication), one run, then every process stopped.")
    demo.add_argument("--data", required=True, metavar="FILE", help="a multi-view .mat/.npz file; SuperNode m "
                      "reads view m (required)")
    demo.add_argument("--nodes", type=at_least_one, required=True, metavar="M",
                      help="SuperNodes, at most the file's views (required)")
    demo.add_argument("--scenario", metavar="NAME|PATH", help="settings (default: the scenario of a shared data "
                      "set named by the file, e.g. ORL.mat -> orl, else the defaults, as simulate --data)")
    demo.add_argument("--sites", type=at_least_one, default=1, metavar="S",
                      help="SuperNodes per modality, each with its own file of its share of the rows (default 1)")
    demo.add_argument("--rounds", type=at_least_one, default=2, metavar="N", help="number of rounds")
    demo.add_argument("--work", metavar="DIR", help="certificates, keys, logs and the run folder DIR/run (default: "
                      "a new folder runs/deploy-demo-YYYYMMDD-HHMMSS-MICROSECONDS)")
    demo.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS", help="longest wait for the run")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key, repeatable (default: none)")
    stop = actions.add_parser("stop", help="stop the local SuperLink that flwr run left running",
                              description="Stop the SuperLink that flwr run starts for a local simulation and "
                              "leaves running in the background, with its SuperExec and app processes.")
    stop.add_argument("--flwr-home", metavar="DIR", help="the Flower home folder flwr run used (default: "
                      "$FLWR_HOME, else ~/.flwr)")
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
