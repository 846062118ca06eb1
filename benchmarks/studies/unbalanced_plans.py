"""Balanced, partial and unbalanced plans between modalities that hold different patients: how much
of the moved mass lands on samples of one class. With class shift, a plan whose marginals are
both uniform must move mass between classes; partial or unbalanced transport need not.

    python benchmarks/studies/unbalanced_plans.py --runs DIR[,DIR...] [--json PATH]
    python benchmarks/studies/unbalanced_plans.py --table PATH

Reads the ``local-only`` run folders that ``benchmarks/patients.py --runs-dir DIR`` wrote. Per run:
each modality's final encoder encodes ``batch-size`` of its own rows (a seeded draw), every
modality is mapped into modality 0's frame as the server maps them (``align_frames``, with the
run's anchors where it has them), and between modality 0 and each other modality the study
solves, on squared distances of the aligned codes (features) and pairwise distances (structure),
each scaled to a maximum of 1, with the run's ``alpha``:

  balanced      the mixer's plan (``solve_fgw_plan``): uniform marginals, all mass moved
  partial-S     partial fused GW (POT ``partial_fused_gromov_wasserstein``) moving mass S of 1
  unbalanced-R  fused unbalanced GW (POT ``fused_unbalanced_gromov_wasserstein``, KL marginal
                relaxation R, no entropy), the feature term weighed against GW as in the balanced plan

Per plan: class mass (the share of the moved mass between samples of one class), its chance
(sum_c p_a(c) p_b(c), what a plan blind to classes gets) and the most a balanced plan can reach
(sum_c min(p_a(c), p_b(c))). Labels are read only to score.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[1])]

from otm_fed.results import CONFIG_FILE, write_json  # noqa: E402
from patients import paired  # noqa: E402
from sites import call  # noqa: E402

PARTIAL_MASSES = (0.5, 0.75)
RELAXATIONS = (0.1, 1.0)


def class_scores(plan: np.ndarray, labels_a: np.ndarray, labels_b: np.ndarray, n_classes: int) -> dict[str, float]:
    """Class mass of ``plan`` (share of its mass between samples of one class), its chance and the
    balanced ceiling, from the two batches' class shares."""
    same = labels_a[:, None] == labels_b[None, :]
    share_a = np.bincount(labels_a, minlength=n_classes) / len(labels_a)
    share_b = np.bincount(labels_b, minlength=n_classes) / len(labels_b)
    return {"class_mass": float((plan * same).sum() / plan.sum()), "chance": float(share_a @ share_b),
            "ceiling": float(np.minimum(share_a, share_b).sum()), "moved": float(plan.sum())}


def plans(za: np.ndarray, zb: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """Every solver's plan between two aligned batches (rows of ``za`` and ``zb``)."""
    import ot

    from otm_fed.transport import pairwise_distances, solve_fgw_plan, squared_distances, uniform

    feature = squared_distances(za, zb)
    feature /= feature.max()
    ca, cb = pairwise_distances(za), pairwise_distances(zb)
    ca, cb = ca / ca.max(), cb / cb.max()
    p, q = uniform(len(za)), uniform(len(zb))
    found = {"balanced": solve_fgw_plan(feature, ca, cb, alpha)[0]}
    for mass in PARTIAL_MASSES:  # POT weighs the feature term by 1 - its alpha
        try:
            found[f"partial-{mass:g}"] = ot.gromov.partial_fused_gromov_wasserstein(
                feature, ca, cb, p, q, m=mass, alpha=1.0 - alpha, nb_dummies=len(za), numItermax=1e5)
        except ValueError:  # POT's exact LP failed on this pair: the plan is left out, and counted
            continue
    for relaxation in RELAXATIONS if alpha < 1 else ():
        # POT's FUGW weighs GW by 1 and the feature term by its alpha: the balanced plan's
        # alpha <T, D> + (1 - alpha) GW, divided by 1 - alpha, is GW + alpha / (1 - alpha) <T, D>
        pi, _ = ot.gromov.fused_unbalanced_gromov_wasserstein(
            ca, cb, p, q, reg_marginals=relaxation, epsilon=0, alpha=alpha / (1.0 - alpha), M=feature, max_iter=100)
        found[f"unbalanced-{relaxation:g}"] = pi
    return found


def run_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The study's rows for one local-only run folder: one per (other modality, plan)."""
    from otm_fed.agent import ModalityAgent, latest_checkpoint
    from otm_fed.config import resolve_config
    from otm_fed.frames import align_frames, pooled_anchor_codes
    from otm_fed.scenario import modality_data, scenario_dataset

    stored = tomllib.loads((run_dir / CONFIG_FILE).read_text())
    stored.pop("provenance", None)
    config = resolve_config(None, stored)
    n_modalities = config["num-modalities"] or scenario_dataset(config).n_views
    rng = np.random.default_rng([config["seed"], 31])
    codes, labels, anchors = {}, {}, {}
    for m in range(n_modalities):
        agent = ModalityAgent(m, modality_data(config, m), config)
        agent.load_state_arrays(latest_checkpoint(run_dir / "agents", m, config["rounds"] + 1))
        rows = np.sort(rng.choice(len(agent.data.evaluation), min(config["batch-size"], len(agent.data.evaluation)),
                                  replace=False))
        codes[m], labels[m] = agent.encode(agent.data.evaluation[rows]).astype(np.float64), agent.data.labels[rows]
        if agent.data.anchors is not None:
            anchors[m] = pooled_anchor_codes([(agent.data.anchor_positions, agent.encode(agent.data.anchors))],
                                             config["anchors"], config["latent-dim"])
    alignment = align_frames(codes, {}, config["align-starts"], rng, True, anchors or None)
    common = {m: alignment.frames[m].to_common(z) for m, z in codes.items()}
    n_classes = scenario_dataset(config).n_classes
    rows = []
    for m in range(1, n_modalities):
        for name, plan in plans(common[0], common[m], config["alpha"]).items():
            rows.append({"dataset": Path(config["dataset"]).stem.lower(), "run": run_dir.name, "seed": config["seed"],
                         "overlap": config["overlap"], "class_shift": config["class-shift"],
                         "anchors": config["anchors"], "modality": m, "plan": name,
                         **class_scores(plan, labels[0], labels[m], n_classes)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Per data set, cohort and plan: means over runs and modality pairs, and each plan's class
    mass against the balanced plan's, paired per (run, modality)."""
    lines = ["| data set | cohort | plan | pairs | moved | class mass | chance | balanced ceiling | plan - balanced (paired) |",
             "|---|---|---|---|---|---|---|---|---|"]
    cohorts = dict.fromkeys((r["dataset"], r["overlap"], r["class_shift"], r["anchors"]) for r in rows)
    for dataset, overlap, shift, n_anchors in cohorts:
        group = [r for r in rows if (r["dataset"], r["overlap"], r["class_shift"], r["anchors"]) ==
                 (dataset, overlap, shift, n_anchors)]
        balanced = {(r["run"], r["modality"]): r["class_mass"] for r in group if r["plan"] == "balanced"}
        for plan in dict.fromkeys(r["plan"] for r in group):
            mine = [r for r in group if r["plan"] == plan]
            lines.append(f"| {dataset} | overlap {overlap:g}, shift {shift:g}, anchors {n_anchors} | {plan} | {len(mine)} | "
                         f"{np.mean([r['moved'] for r in mine]):.2f} | {np.mean([r['class_mass'] for r in mine]):.3f} | "
                         f"{np.mean([r['chance'] for r in mine]):.3f} | {np.mean([r['ceiling'] for r in mine]):.3f} | "
                         + ("-" if plan == "balanced" else call(paired(
                             {(r["run"], r["modality"]): r["class_mass"] for r in mine}, balanced))) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", help="folders of benchmarks/patients.py runs, comma separated")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--table", help="print the table of earlier rows and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return 0
    if not args.runs:
        parser.error("give --runs DIR (the --runs-dir of benchmarks/patients.py) or --table PATH")
    folders = sorted(path for folder in args.runs.split(",") for path in Path(folder).glob("*-local-only-seed*"))
    if not folders:
        parser.error(f"no local-only run folders under {args.runs}")
    rows = []
    for folder in folders:
        rows.extend(run_rows(folder))
        print(f"{folder.name}: {len(rows)} rows", flush=True)
        if args.json:
            write_json(args.json, rows)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
