"""The index of results/: which command wrote each file, and which page of the guide cites it.

    python benchmarks/results_index.py            # print the index
    python benchmarks/results_index.py --write    # write it to results/README.md

The commands are kept by hand below (one per JSON file or plot folder, as the docs and the commit
that added the file give it). A command that needs an option or study since removed names the
commit to run it at. The citations are found afresh in README.md and docs/ each time, so the index
follows the docs: a file named there literally, by a brace list (``{a,b}``) or a glob with a stem
(``clustering-anchor-gate*.json``), or inside a folder named there, is cited by that page.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
PLOT_FOLDERS = ("plots-align", "plots-gate", "plots-orl")
REMOVED_AT = "d78650e"  # the last commit with the refuted switches and the anchor-statistics study
CLUSTERING = "python benchmarks/clustering.py"
STUDIES = "python benchmarks/studies"
ALL_SETS = "--datasets synthetic,orl,movies,prokaryotic,handwritten"
GRID = "--settings unaligned --seeds 5"
SEVEN_SETS = ALL_SETS + ",scenarios/synthetic-strong-weak.toml,scenarios/synthetic-two-strong.toml"
CO_ASSAYS = "scenarios/snare-seq.toml,scenarios/scgem.toml"

COMMANDS: dict[str, str] = {
    "anchor-statistics.json": f"python benchmarks/anchor_statistics.py --datasets "
                              "synthetic,movies,prokaryotic,handwritten --seeds 0,1,2,3 --json results/anchor-statistics.json",
    "anchor-statistics-seeds22-25.json": f"python benchmarks/anchor_statistics.py --datasets "
                                         "synthetic,movies,prokaryotic --seeds 22,23,24,25 --json results/anchor-statistics-seeds22-25.json",
    "clustering-ablations.json": f"{CLUSTERING} --methods otm-dirichlet,otm-wb,otm-w,otm-gw --seeds 1 --jobs 2 "
                                 "--runs-dir runs/clustering-ablations --json results/clustering-ablations.json",
    "clustering-ablations-seeds1-4.json": f"{CLUSTERING} --methods otm-dirichlet,otm-wb,otm-w,otm-gw --settings unaligned "
                                          "--first-seed 1 --seeds 4 --jobs 2 --runs-dir runs/clustering-ablations-1-4 "
                                          "--json results/clustering-ablations-seeds1-4.json",
    "clustering-align-real.json": f"{CLUSTERING} --datasets orl,movies,prokaryotic,handwritten --methods "
                                  f"otm,otm-anchors-10,otm-no-gate,otm-no-shared-init {GRID} --jobs 2 --runs-dir RUNS; "
                                  f"{CLUSTERING} --collect RUNS --json results/clustering-align-real.json",
    "clustering-align-synthetic.json": f"{CLUSTERING} --datasets synthetic --methods local-only,otm,otm-paper,otm-no-gate,"
                                       f"otm-anchors-5,otm-anchors-10,otm-anchors-25,otm-anchors-50 {GRID} --jobs 2 "
                                       f"--runs-dir RUNS; {CLUSTERING} --collect RUNS --json results/clustering-align-synthetic.json",
    "clustering-anchor-gate.json": f"{CLUSTERING} {ALL_SETS} --methods local-only,otm-anchors-10 {GRID} --first-seed 17 "
                                   "--jobs 2 --json results/clustering-anchor-gate.json",
    "clustering-anchor-gate-k.json": f"{CLUSTERING} --datasets synthetic --methods otm-anchors-5,otm-anchors-25,otm-anchors-50 "
                                     f"{GRID} --first-seed 17 --jobs 2 --json results/clustering-anchor-gate-k.json",
    "clustering-anchor-gate-k25.json": f"{CLUSTERING} --datasets movies,prokaryotic,handwritten,orl --methods otm-anchors-25 "
                                       f"{GRID} --first-seed 17 --jobs 2 --json results/clustering-anchor-gate-k25.json",
    "clustering-anchor-open-probe.json": f"{CLUSTERING} --datasets synthetic,prokaryotic --methods "
                                         "local-only,otm-anchors-10 --settings unaligned --seeds 4 --first-seed 22 --jobs 2 "
                                         "--set anchor-gate-threshold=0 --json results/clustering-anchor-open-probe.json",
    "clustering-anchor-rule-seeds26-30.json": f"{CLUSTERING} {ALL_SETS} --methods "
                                              f"local-only,otm-anchors-10,otm-anchors-10-retrieval-partition {GRID} "
                                              "--first-seed 26 --jobs 2 --runs-dir runs/rule-26 "
                                              "--json results/clustering-anchor-rule-seeds26-30.json",
    "clustering-gate.json": f"{CLUSTERING} {ALL_SETS} --methods local-only,otm {GRID} --first-seed 7 --jobs 2 "
                            "--json results/clustering-gate.json",
    "clustering-gate-anchors.json": f"{CLUSTERING} {ALL_SETS} --methods otm-anchors-10 {GRID} --first-seed 7 --jobs 2 "
                                    "--json results/clustering-gate-anchors.json",
    "clustering-gate-orl.json": f"{CLUSTERING} --datasets orl --methods otm-no-shared-init {GRID} --first-seed 7 --jobs 2 "
                                "--json results/clustering-gate-orl.json",
    "clustering-gate-raw.json": f"{CLUSTERING} {ALL_SETS} --methods raw-kmeans {GRID} --first-seed 7 "
                                "--json results/clustering-gate-raw.json",
    "clustering-handwritten-seeds12-16.json": f"{CLUSTERING} --datasets handwritten --methods local-only,otm {GRID} "
                                              "--first-seed 12 --jobs 2 --json results/clustering-handwritten-seeds12-16.json",
    "clustering-handwritten-seeds17-21.json": f"{CLUSTERING} --datasets handwritten --methods otm {GRID} --first-seed 17 "
                                              "--jobs 2 --json results/clustering-handwritten-seeds17-21.json",
    "clustering-local-training.json": f"{CLUSTERING} {ALL_SETS} --methods raw-kmeans,local-only,otm {GRID} --first-seed 2 "
                                      "--jobs 2 --json results/clustering-local-training.json",
    "clustering-main.json": f"{CLUSTERING} --methods local-only,otm-paper --seeds 5 --jobs 2 --runs-dir runs/clustering-main "
                            "--json results/clustering-main.json",
    "clustering-orl-anchors-seeds31-35.json": f"{CLUSTERING} --datasets orl --methods local-only,otm,otm-anchors-10 {GRID} "
                                              "--first-seed 31 --jobs 2 --json results/clustering-orl-anchors-seeds31-35.json",
    "clustering-orl-otm-seeds26-30.json": f"{CLUSTERING} --datasets orl --methods otm {GRID} --first-seed 26 --jobs 2 "
                                          "--json results/clustering-orl-otm-seeds26-30.json",
    "clustering-raw-kmeans.json": f"{CLUSTERING} --methods raw-kmeans "
                                  f"{GRID} --json results/clustering-raw-kmeans.json",
    "clustering-raw-kmeans-scenario.json": f"{CLUSTERING} --methods raw-kmeans {GRID} "
                                           "--json results/clustering-raw-kmeans-scenario.json",
    "clustering-search.json": f"{CLUSTERING} --datasets orl,movies,prokaryotic --methods otm {GRID} --first-seed 7 "
                              "--jobs 2 --json results/clustering-search.json",
    "clustering-structure.json": f"{CLUSTERING} {ALL_SETS} --methods local-only,otm {GRID} --first-seed 7 "
                                 "--jobs 2 --set structure-weight=3 --json results/clustering-structure.json",
    "deployment-rounds-after.json": "python benchmarks/deployment_rounds.py --rounds 3 "
                                    "--json results/deployment-rounds-after.json",
    "deployment-rounds-before.json": "python benchmarks/deployment_rounds.py --rounds 3 "
                                     "--json results/deployment-rounds-before.json",
    "frame-confidence/handwritten-local-only.json": f"{STUDIES}/frame_confidence.py RUNS/handwritten-local-only-unaligned-"
                                                    "seed{2..6}/eval-codes.npz --batch 128 --trials 4 "
                                                    "--json results/frame-confidence/handwritten-local-only.json",
    "frame-confidence/handwritten-pairs.json": f"{STUDIES}/frame_confidence.py RUNS/handwritten-local-only-unaligned-"
                                               "seed{2,3}/eval-codes.npz --batch 128 --trials 2 --pairs "
                                               "--json results/frame-confidence/handwritten-pairs.json",
    "frame-confidence/local-only-anchors-10.json": f"{STUDIES}/frame_confidence.py runs/lo-23/*/eval-codes.npz --trials 4 "
                                                   "--anchors 10 --json results/frame-confidence/local-only-anchors-10.json",
    **{f"frame-confidence/{name}-local-only{suffix}.json":
       f"{STUDIES}/frame_confidence.py RUNS/{name}-local-only-unaligned-seed{{2..6}}/eval-codes.npz --batch B --trials 4 "
       f"--json results/frame-confidence/{name}-local-only{suffix}.json"
       for name, suffix in [*((name, "") for name in ("movies", "orl", "prokaryotic", "synthetic")),
                            *((name, "-search") for name in ("movies", "orl", "prokaryotic"))]},
    "headroom.json": f"{STUDIES}/headroom.py --runs results/clustering-gate.json --json results/headroom.json",
    "headroom-synthetic-seeds26-30.json": f"{STUDIES}/headroom.py --datasets synthetic --seeds 26,27,28,29,30 "
                                          "--runs results/clustering-anchor-rule-seeds26-30.json "
                                          "--json results/headroom-synthetic-seeds26-30.json",
    "joint-matching.json": f"{STUDIES}/joint_matching.py runs/rule-26/{{synthetic,prokaryotic}}-local-only-unaligned-"
                           "seed{26,27,28,29,30}/eval-codes.npz --raw synthetic,prokaryotic --seeds 26,27,28,29,30 "
                           "--json results/joint-matching.json",
    "local-training-neighbours.json": f"{STUDIES}/local_training.py --variants default,k20,k40,refresh-half --seeds 0,1 "
                                      "--json results/local-training-neighbours.json",
    "local-training-structure.json": "python benchmarks/local_training.py --variants "
                                     "no-structure,structure-1,structure-3,structure-10,structure-only-3 --seeds 0,1 "
                                     "--json results/local-training-structure.json",
    "local-training-study.json": "python benchmarks/local_training.py "
                                 "--seeds 0,1 --json results/local-training-study.json",
    "mixer-400x3.json": "python benchmarks/mixer.py --sizes 400 --modalities 3 --repeats 5 --json results/mixer-400x3.json",
    "mixer-align-256.json": "python benchmarks/mixer.py --sizes 256 --modalities 3,6 "
                            "--repeats 3 --max-seconds-per-cell 30 --json results/mixer-align-256.json",
    "mixer-grid.json": "python benchmarks/mixer.py --sizes 100,400,1000 --modalities 2,3,6,12 --repeats 3 "
                       "--max-seconds-per-cell 120 --json results/mixer-grid.json",
    "mixer-search-256.json": "python benchmarks/mixer.py --sizes 256 --modalities 3,6 --repeats 3 --max-seconds-per-cell 30 "
                             "--json results/mixer-search-256.json",
    "neighbour-graph.json": f"{STUDIES}/neighbour_graph.py --seeds 0,1 --json results/neighbour-graph.json",
    "plots-align": "otm-fed plot RUNS/orl-otm-unaligned-seed0 RUNS/orl-otm-no-shared-init-unaligned-seed0 "
                   "RUNS/prokaryotic-otm-unaligned-seed0 --out results/plots-align",
    "plots-gate": "otm-fed plot RUNS/handwritten-otm-unaligned-seed7 RUNS/movies-otm-unaligned-seed7 "
                  "RUNS/synthetic-otm-unaligned-seed7 --out results/plots-gate",
    "plots-orl": "otm-fed plot runs/clustering-main/orl-{local-only,otm}-unaligned-seed0 "
                 "runs/clustering-main/orl-otm-aligned-seed0 --out results/plots-orl",
    "speed-120.json": "python benchmarks/speed.py --rounds 120 --actors 2 --json results/speed-120.json",
    "speed-120-default.json": "python benchmarks/speed.py --engines simulation --rounds 120 --json results/speed-120-default.json",
    "speed-120-search.json": "python benchmarks/speed.py --scenarios synthetic,orl,movies,prokaryotic,handwritten "
                             "--engines inprocess --rounds 120 --json results/speed-120-search.json",
    "speed-local-training.json": "python benchmarks/speed.py --scenarios orl,movies,prokaryotic,handwritten "
                                 "--engines inprocess,simulation --rounds 120 --json results/speed-local-training.json",
    "speed-sites.json": "python benchmarks/speed.py --scenarios handwritten --engines inprocess --sites 1,2,5,10 "
                        "--rounds 20 --json results/speed-sites.json",
    "speed-sites-100.json": "python benchmarks/speed.py --scenarios handwritten --engines inprocess --sites 1,5 "
                            "--rounds 100 --json results/speed-sites-100.json",
    "speed-sites-simulation.json": "python benchmarks/speed.py --scenarios handwritten --engines simulation --actors 2 "
                                   "--sites 1,5 --rounds 20 --json results/speed-sites-simulation.json",
    "sites-fedavg-steps-seeds5-6.json": "python benchmarks/sites.py --datasets handwritten --splits iid --methods "
                                        "fedavg,fedavg-steps,one-site --seeds 2 --first-seed 5 --jobs 2 "
                                        "--json results/sites-fedavg-steps-seeds5-6.json",
    "sites-fedavg-steps-seeds0-4.json": "python benchmarks/sites.py --datasets handwritten --splits iid --methods "
                                        "fedavg-steps --seeds 5 --first-seed 0 --jobs 2 "
                                        "--json results/sites-fedavg-steps-seeds0-4.json",
    "sites-fedavg-steps-more-seeds0-4.json": "python benchmarks/sites.py --datasets synthetic,prokaryotic --methods "
                                             "fedavg-steps --seeds 5 --first-seed 0 --jobs 1 "
                                             "--json results/sites-fedavg-steps-more-seeds0-4.json",
    "sites-fedavg-steps-handwritten-dirichlet-seeds0-4.json": "python benchmarks/sites.py --datasets handwritten "
                                                              "--splits dirichlet:0.5 --methods fedavg-steps --seeds 5 "
                                                              "--first-seed 0 --jobs 1 --json "
                                                              "results/sites-fedavg-steps-handwritten-dirichlet-seeds0-4.json",
    "patients-seeds0-4.json": "python benchmarks/patients.py --datasets synthetic,prokaryotic --cohorts "
                              "overlap=0:shift=0.5:paired=0,overlap=0:shift=0:paired=0.2 --seeds 5 --first-seed 0 "
                              "--jobs 1 --runs-dir runs/patients --json results/patients-seeds0-4.json",
    "patients-handwritten-shift-seeds0-4.json": "python benchmarks/patients.py --datasets handwritten --cohorts "
                                                "overlap=0:shift=0.5:paired=0 --seeds 5 --first-seed 0 --jobs 1 "
                                                "--runs-dir runs/patients --json "
                                                "results/patients-handwritten-shift-seeds0-4.json",
    "patients-handwritten-paired5-seeds0-4.json": "python benchmarks/patients.py --datasets handwritten --cohorts "
                                                  "overlap=0:shift=0:paired=0.05 --seeds 5 --first-seed 0 --jobs 1 "
                                                  "--runs-dir runs/patients --json "
                                                  "results/patients-handwritten-paired5-seeds0-4.json",
    "patients-handwritten-paired20-seeds0-4.json": "python benchmarks/patients.py --datasets handwritten --cohorts "
                                                   "overlap=0:shift=0:paired=0.2 --seeds 5 --first-seed 0 --jobs 1 "
                                                   "--runs-dir runs/patients --json "
                                                   "results/patients-handwritten-paired20-seeds0-4.json",
    "patients-synthetic-grid-seeds0-4.json": "python benchmarks/patients.py --datasets synthetic --seeds 5 "
                                             "--first-seed 0 --jobs 1 --runs-dir runs/patients-grid --json "
                                             "results/patients-synthetic-grid-seeds0-4.json",
    "anchor-confidence-cost.json": "python benchmarks/studies/anchor_confidence_cost.py --json "
                                   "results/anchor-confidence-cost.json",
    "unbalanced-plans-seeds0-4.json": "python benchmarks/studies/unbalanced_plans.py --runs runs/patients --json "
                                      "results/unbalanced-plans-seeds0-4.json",
    "sites-seeds0-4.json": "python benchmarks/sites.py --datasets synthetic,prokaryotic,handwritten --seeds 5 "
                           "--first-seed 0 --jobs 2 --json results/sites-seeds0-4.json",
    "mixing-oracle-seeds36-37.json": f"{CLUSTERING} {ALL_SETS} --methods local-only,otm-oracle,otm-oracle-contrastive "
                                     "--settings unaligned --seeds 2 --first-seed 36 --jobs 2 "
                                     "--json results/mixing-oracle-seeds36-37.json",
    "mixing-aligned-local-only-seeds36-37.json": f"{CLUSTERING} --datasets synthetic,prokaryotic,handwritten,orl,movies,"
                                                 "scenarios/synthetic-strong-weak.toml,scenarios/synthetic-two-strong.toml "
                                                 "--methods local-only --settings aligned --seeds 2 --first-seed 36 "
                                                 "--json results/mixing-aligned-local-only-seeds36-37.json",
    "mixing-scenarios-seeds36-37.json": f"{CLUSTERING} --datasets scenarios/synthetic-strong-weak.toml,"
                                        "scenarios/synthetic-two-strong.toml --methods local-only,otm-oracle,"
                                        "otm-oracle-guard,otm-oracle-contrastive,otm-oracle-70,otm-oracle-70-guard,"
                                        "otm-oracle-70-contrastive --settings unaligned --seeds 2 --first-seed 36 "
                                        "--json results/mixing-scenarios-seeds36-37.json",
    "mixing-flow-seeds36-37.json": f"{CLUSTERING} {ALL_SETS} --methods otm-oracle-flow,otm-oracle-contrastive-flow "
                                   "--settings unaligned --seeds 2 --first-seed 36 --jobs 2 "
                                   "--json results/mixing-flow-seeds36-37.json",
    "mixing-flow-per-round-seeds38-42.json": f"{CLUSTERING} {ALL_SETS} --methods local-only,otm-oracle-flow --settings "
                                             "aligned --seeds 5 --first-seed 38 --jobs 2 --json "
                                             "results/mixing-flow-per-round-seeds38-42.json",
    "mixing-flow-window-seeds36-37.json": f"{CLUSTERING} {ALL_SETS} --methods otm-oracle-flow --settings aligned "
                                          "--seeds 2 --first-seed 36 --jobs 2 --json results/mixing-flow-window-seeds36-37.json",
    "mixing-flow-window-seeds43-47.json": f"{CLUSTERING} {ALL_SETS} --methods local-only,otm-oracle-flow --settings aligned "
                                          "--seeds 5 --first-seed 43 --jobs 2 --json results/mixing-flow-window-seeds43-47.json",
    "headroom-seeds43-47.json": "python benchmarks/oracle.py headroom --datasets synthetic,handwritten --seeds "
                                "43,44,45,46,47 --json results/headroom-seeds43-47.json",
    "mixing-default-route-seeds36-37.json": f"{CLUSTERING} --datasets synthetic,handwritten,orl,"
                                            "scenarios/synthetic-strong-weak.toml,scenarios/synthetic-two-strong.toml "
                                            "--methods local-only,otm,otm-flow-guard --settings unaligned --seeds 2 "
                                            "--first-seed 36 --jobs 2 --json results/mixing-default-route-seeds36-37.json",
    "mirror-start.json": f"{STUDIES}/mirror_start.py runs/<local-only runs>/{{synthetic,orl,movies,prokaryotic,"
                         "handwritten}-local-only-unaligned-seed0/eval-codes.npz runs/<unpaired-alignment runs>/"
                         "{snare-seq,scgem}-local-only-seed{0,1,2}/eval-codes.npz --json results/mirror-start.json",
    "mixing-oracle-seeds48-52.json": f"{CLUSTERING} {SEVEN_SETS} --methods local-only,otm-oracle-flow-guard {GRID} "
                                     "--first-seed 48 --jobs 2 --json results/mixing-oracle-seeds48-52.json",
    "mixing-aligned-local-only-seeds48-52.json": f"{CLUSTERING} {SEVEN_SETS} --methods local-only --settings aligned "
                                                 "--seeds 5 --first-seed 48 --jobs 2 "
                                                 "--json results/mixing-aligned-local-only-seeds48-52.json",
    "mixing-routes-seeds48-52.json": f"{CLUSTERING} {SEVEN_SETS},{CO_ASSAYS} --methods otm,otm-flow-guard,"
                                     f"otm-anchors-10-flow-guard,otm-anchors-50-flow-guard {GRID} --first-seed 48 "
                                     "--jobs 2 --json results/mixing-routes-seeds48-52.json",
    "mixing-co-assays-local-only-seeds48-52.json": f"{CLUSTERING} --datasets {CO_ASSAYS} --methods local-only {GRID} "
                                                   "--first-seed 48 --jobs 2 "
                                                   "--json results/mixing-co-assays-local-only-seeds48-52.json",
    "mixing-snare-seq-l2-seeds48-52.json": f"{CLUSTERING} --datasets scenarios/snare-seq.toml --methods "
                                           f"local-only,otm,otm-flow-guard {GRID} --first-seed 48 --jobs 2 "
                                           "--set normalisation=l2 --json results/mixing-snare-seq-l2-seeds48-52.json",
    "mixing-oracle-swap-seeds48-52.json": f"{CLUSTERING} --datasets scenarios/synthetic-two-strong.toml,"
                                          "scenarios/synthetic-strong-weak.toml,synthetic,orl,prokaryotic --methods "
                                          f"otm-oracle-swap,otm-oracle-swap-flow-guard {GRID} --first-seed 48 --jobs 2 "
                                          "--json results/mixing-oracle-swap-seeds48-52.json",
    "clustering-defaults-seeds53-57.json": f"{CLUSTERING} {SEVEN_SETS},{CO_ASSAYS} --methods raw-kmeans,local-only,otm "
                                           f"{GRID} --first-seed 53 --jobs 2 "
                                           "--json results/clustering-defaults-seeds53-57.json",
    "clustering-defaults-snare-seq-l2-seeds53-57.json": f"{CLUSTERING} --datasets scenarios/snare-seq.toml --methods "
                                                        f"local-only,otm {GRID} --first-seed 53 --jobs 2 --set "
                                                        "normalisation=l2 "
                                                        "--json results/clustering-defaults-snare-seq-l2-seeds53-57.json",
    "headroom-seeds48-52.json": "python benchmarks/oracle.py headroom --datasets synthetic,orl,movies,prokaryotic,"
                                "handwritten --seeds 48,49,50,51,52 --runs results/mixing-oracle-seeds48-52.json,"
                                "results/mixing-routes-seeds48-52.json --json results/headroom-seeds48-52.json",
    "frame-search-tuned.json": f"{STUDIES}/frame_search.py RUNS/{{snare-seq,scgem}}-local-only-seed{{0,1,2,3,4}}/"
                               "eval-codes.npz runs/route-48/{orl,synthetic}-local-only-unaligned-seed48/eval-codes.npz "
                               "--variants today,draws-geodesic,draws-geodesic-tuned --restarts 2 "
                               "--json results/frame-search-tuned.json",
    "anchor-gate-seeds36-37.json": f"{CLUSTERING} {SEVEN_SETS} --methods local-only,otm-anchors-50-flow-guard "
                                   "--settings unaligned --seeds 2 --first-seed 36 --jobs 2 "
                                   "--json results/anchor-gate-seeds36-37.json",
    "anchor-gate-0.25-seeds36-37.json": f"{CLUSTERING} {SEVEN_SETS} --methods otm-anchors-50-flow-guard --settings "
                                        "unaligned --seeds 2 --first-seed 36 --jobs 2 --set anchor-gate-threshold=0.25 "
                                        "--json results/anchor-gate-0.25-seeds36-37.json",
    "unpaired-alignment-seeds0-4.json": "python benchmarks/unpaired_alignment.py --datasets snare-seq,scgem --seeds "
                                        "0,1,2,3,4 --methods frames-local-only,rigid-ceiling --runs-dir RUNS "
                                        "--json results/unpaired-alignment-seeds0-4.json",
    "supervised-quick.json": "python benchmarks/supervised.py --quick --json results/supervised-quick.json",
    "unpaired-alignment.json": "python benchmarks/unpaired_alignment.py --datasets scgem,snare-seq --seeds 0,1,2 "
                               "--json results/unpaired-alignment.json",
}
# Where a command needs more than today's code: the commit to run it at, and why.
REMOVED = f"at {REMOVED_AT}, which still has "
NOTES: dict[str, str] = {
    "unbalanced-plans-seeds0-4.json": "reads the local-only runs of the patients commands and of two more cohorts "
                                      "in runs/patients; all commands in docs/findings/patients.md",
    "mixing-oracle-seeds36-37.json": "at 5daf973, which still has target-pull (the contrastive pull)",
    "mixing-scenarios-seeds36-37.json": "at 5daf973, which still has target-pull (the contrastive pull)",
    "mixing-flow-per-round-seeds38-42.json": "at 97e02d9, whose flow decides on each round's readings alone",
    "mixing-flow-seeds36-37.json": "at 97e02d9, whose flow decides on each round's readings alone",
    "anchor-statistics.json": REMOVED + "the anchor-statistics study",
    "anchor-statistics-seeds22-25.json": REMOVED + "the anchor-statistics study",
    "clustering-anchor-rule-seeds26-30.json": REMOVED + "the retrieval-partition anchor gate",
    "clustering-raw-kmeans.json": "at 24e9423: z-scored views, tf-idf for Movies, not the scenarios' normalisation",
    "clustering-search.json": "the grid's arguments read from its rows",
    "clustering-structure.json": REMOVED + "structure-weight",
    "deployment-rounds-after.json": "at 4b6fc5a",
    "deployment-rounds-before.json": "at bce43a6 with the benchmark added",
    "local-training-structure.json": REMOVED + "structure-weight; the study was then benchmarks/local_training.py",
    "local-training-study.json": REMOVED + "neighbour-dof; the study was then benchmarks/local_training.py",
    "mixer-align-256.json": "at f931f3a, before the cheaper search",
    **{f"frame-confidence/{name}-local-only-search.json": "after the cheaper search, 4a3e6cb"
       for name in ("movies", "orl", "prokaryotic")},
}

# A path under results/ as the docs write it: a brace list is one piece, a comma outside it ends the path.
MENTION = re.compile(r"results/(?:[\w.*/-]|\{[\w.,-]*\})+")


def entries(results: Path = RESULTS) -> list[str]:
    """What the index lists: every file under ``results`` but the index itself, a plot folder as one entry."""
    found = set()
    for path in results.rglob("*"):
        name = path.relative_to(results).as_posix()
        if path.is_file() and name != "README.md":
            found.add(next((folder for folder in PLOT_FOLDERS if name.startswith(folder + "/")), name))
    return sorted(found)


def expand_braces(pattern: str) -> list[str]:
    """``a-{b,c}.json`` -> ``a-b.json``, ``a-c.json`` (every brace list, in order)."""
    pieces = re.split(r"\{([^{}]*)\}", pattern)
    options = [[piece] if i % 2 == 0 else piece.split(",") for i, piece in enumerate(pieces)]
    return ["".join(choice) for choice in itertools.product(*options)]


def mentions(text: str) -> list[str]:
    """The results paths a text names (relative to results/), braces expanded; a glob without a stem
    (``results/*.json``, all of them) names none."""
    names = []
    for match in MENTION.findall(text):
        for name in expand_braces(match.removeprefix("results/").rstrip(".")):
            if name and not name.rsplit("/", 1)[-1].startswith("*"):
                names.append(name)
    return names


def cites(name: str, entry: str) -> bool:
    """Whether a mentioned path names an entry: equal, a glob over it, a file in it, or its folder."""
    name = name.rstrip("/")
    return fnmatch.fnmatchcase(entry, name) or name.startswith(entry + "/") or entry.startswith(name + "/")


def pages(root: Path = ROOT) -> list[Path]:
    """The pages whose citations count: README.md and every Markdown file under docs/."""
    return [path for path in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if path.is_file()]


def citations(entries_: list[str], root: Path = ROOT) -> dict[str, list[str]]:
    """Per entry, the pages (relative to ``root``) that name it."""
    cited: dict[str, list[str]] = {entry: [] for entry in entries_}
    for page in pages(root):
        names = mentions(page.read_text(encoding="utf-8"))
        for entry in entries_:
            if any(cites(name, entry) for name in names):
                cited[entry].append(page.relative_to(root).as_posix())
    return cited


def index(root: Path = ROOT) -> str:
    """results/README.md: one row per entry (file, command, citing pages), then the uncited ones."""
    listed = entries(root / "results")
    cited = citations(listed, root)
    lines = ["# Results", "",
             "Every file here, the command that wrote it and the pages that cite it. Generated by",
             "`python benchmarks/results_index.py --write` from the commands it keeps and the text of",
             "README.md and docs/; rerun it when either changes. Commands run from the repository root;",
             "`RUNS` is the run folder a grid wrote (`--runs-dir`), \"at COMMIT\" means the command needs",
             "an option or study that is no longer in the product. Until the defaults took up the flow",
             "and the guard (`target-flow`, `target-guard`), an `otm` or `otm-oracle` row took every",
             "target, as `otm-take-all` and `otm-oracle-take-all` do now.", "",
             "| file | written by | cited by |", "|---|---|---|"]
    for entry in listed:
        shown = entry + "/" if entry in PLOT_FOLDERS else entry
        command = f"`{COMMANDS[entry]}`" if entry in COMMANDS else "not recorded"
        note = f" ({NOTES[entry]})" if entry in NOTES else ""
        lines.append(f"| `{shown}` | {command}{note} | {', '.join(cited[entry]) or '-'} |")
    uncited = [entry for entry in listed if not cited[entry]]
    lines += ["", "Cited by no page: " + (", ".join(f"`{entry}`" for entry in uncited) if uncited else "none") + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write results/README.md instead of printing it")
    args = parser.parse_args(argv)
    text = index()
    if args.write:
        (RESULTS / "README.md").write_text(text, encoding="utf-8")
        print(f"wrote {RESULTS / 'README.md'}")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
