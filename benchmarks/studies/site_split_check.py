"""Our seeded site splits against Flower Datasets' partitioners, on a small case.

Flower Datasets pulls the Hugging Face ``datasets`` stack, so it is not a dependency: run this in
a throwaway environment that has it (``pip install flwr-datasets``) and this checkout on the path.
It checks that ``otm_fed.sites.dirichlet_parts`` with ``numpy.random.default_rng(seed)`` gives the
same sites as ``DirichletPartitioner(alpha, seed, min_partition_size=0, self_balancing=False)``,
and that the IID parts have the sizes of ``IidPartitioner`` on the same rows.

    python benchmarks/studies/site_split_check.py [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from otm_fed.sites import SiteSplit, dirichlet_parts, split_rows  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    try:
        from datasets import Dataset
        from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner
    except ImportError:
        parser.error("needs flwr-datasets (pip install flwr-datasets, in a throwaway environment)")
    labels = np.repeat(np.arange(5), [40, 25, 20, 10, 5])
    dataset = Dataset.from_dict({"label": labels.tolist(), "row": list(range(len(labels)))})
    failures = 0
    for seed in (int(s) for s in args.seeds.split(",")):
        for sites, alpha in ((3, 0.5), (4, 2.0), (5, 100.0)):
            theirs = DirichletPartitioner(num_partitions=sites, partition_by="label", alpha=alpha, seed=seed,
                                          min_partition_size=0, self_balancing=False)
            theirs.dataset = dataset
            their_sites = [sorted(theirs.load_partition(i)["row"]) for i in range(sites)]
            ours = [sorted(p.tolist()) for p in dirichlet_parts(labels, sites, alpha, np.random.default_rng(seed))]
            same = ours == their_sites
            failures += not same
            print(f"seed {seed} sites {sites} dirichlet:{alpha:g}: {'same sites' if same else 'DIFFERENT'} "
                  f"(sizes {[len(s) for s in ours]})")
            iid = IidPartitioner(num_partitions=sites)
            iid.dataset = dataset
            their_sizes = [iid.load_partition(i).num_rows for i in range(sites)]
            our_sizes = [len(p) for p in split_rows(labels, sites, SiteSplit("iid"), seed)]
            failures += our_sizes != their_sizes
            print(f"seed {seed} sites {sites} iid sizes: ours {our_sizes}, theirs {their_sizes}")
    print("all agree" if not failures else f"{failures} disagreements")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
