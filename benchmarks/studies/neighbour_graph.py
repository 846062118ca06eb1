"""What the neighbour term learns from: each view's k-NN graph, clustered, beside raw k-means.

    python benchmarks/studies/neighbour_graph.py [--datasets synthetic,orl,...] [--seeds 0,1] [--json PATH]
    python benchmarks/studies/neighbour_graph.py --table PATH

The neighbour term (``otm_fed.losses.neighbour_embedding_loss``) pulls each row's code towards its
k nearest neighbours in the agent's own view, with the agent's k (``neighbour_count``), and pushes
the rest apart: apart from reconstruction, that graph is all it sees of the view. Per view this
prints raw k-means (what the codes must match), the share of each row's k neighbours of
its own class, and spectral clustering of the graph itself (sklearn's ``SpectralClustering`` on
the symmetrised k-NN connectivity): the clustering of the graph alone. With strong attraction a
neighbour embedding tends to the graph's Laplacian eigenmaps, whose k-means is this clustering
(Boehm, Berens and Kobak, JMLR 2022). Where the graph clusters worse
than the raw geometry, a neighbour embedding starts behind raw k-means. The labels score only;
nothing here is a method. Findings: docs/findings/local-training.md, "The neighbour graph bounds the term".
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import SpectralClustering

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from otm_fed.agent import nearest_neighbours, neighbour_count  # noqa: E402
from otm_fed.config import ConfigError, resolve_config  # noqa: E402
from otm_fed.metrics import clustering_scores, kmeans_scores  # noqa: E402
from otm_fed.results import write_json  # noqa: E402
from otm_fed.scenario import normalised_views, scenario_dataset  # noqa: E402
from local_training import DATASETS, rows_file, seed_list  # noqa: E402


def graph_rows(dataset: str, seed: int) -> list[dict[str, Any]]:
    """Per view of one data set and seed: raw k-means, k-NN label agreement, graph clustering."""
    config = resolve_config(dataset, {"seed": str(seed)})
    data = scenario_dataset(config)
    n_clusters = config["n-clusters"] or data.n_classes
    k = neighbour_count(config, len(data.labels), n_clusters)
    rows = []
    for view, x in enumerate(normalised_views(config, data)):
        raw = kmeans_scores(x, data.labels, n_clusters, config["kmeans-init"], seed)
        agreement = float((data.labels[nearest_neighbours(x, k)] == data.labels[:, None]).mean())
        with warnings.catch_warnings():  # a graph in several pieces: sklearn warns, the clustering stands
            warnings.simplefilter("ignore", UserWarning)
            graph = SpectralClustering(n_clusters, affinity="nearest_neighbors", n_neighbors=k, n_init=10,
                                       random_state=seed).fit_predict(x)
        scores = clustering_scores(data.labels, graph)
        rows.append({"dataset": Path(dataset).stem, "seed": seed, "view": view, "k": k, "raw_acc": raw["acc"],
                     "raw_purity": raw["purity"], "knn_agreement": agreement, "graph_acc": scores["acc"],
                     "graph_purity": scores["purity"]})
        print(f"{Path(dataset).stem:12s} seed {seed} view {view}  raw k-means {raw['acc']:.3f}  k-NN agreement "
              f"{agreement:.3f} (k = {k})  graph clustering {scores['acc']:.3f}", flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """Per (data set, view), means over seeds."""
    fields = ("raw_acc", "raw_purity", "knn_agreement", "graph_acc", "graph_purity")
    lines = ["| data set | view | k | raw k-means ACC | purity | k-NN agreement | graph clustering ACC | purity |",
             "|---|---|---|---|---|---|---|---|"]
    for dataset, view in dict.fromkeys((row["dataset"], row["view"]) for row in rows):
        own = [row for row in rows if (row["dataset"], row["view"]) == (dataset, view)]
        lines.append(f"| {dataset} | {view} | {own[0]['k']} | "
                     + " | ".join(f"{np.mean([row[name] for row in own]):.3f}" for name in fields) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="names or scenario .toml paths")
    parser.add_argument("--seeds", type=seed_list, default="0,1")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--table", type=rows_file, help="only print the table of rows written earlier")
    args = parser.parse_args(argv)
    if args.table:
        rows = json.loads(args.table.read_text())
    else:
        datasets, seeds = list(filter(None, args.datasets.split(","))), args.seeds
        try:  # every data set found before the first is read
            for dataset in datasets:
                scenario_dataset(resolve_config(dataset, {}))
        except ConfigError as error:
            parser.error(str(error))
        rows = [row for dataset in datasets for seed in seeds for row in graph_rows(dataset, seed)]
        if args.json:
            write_json(args.json, rows)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
