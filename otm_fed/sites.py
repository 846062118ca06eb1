"""Several sites per modality: the topology and each site's rows.

A federation holds each modality at one or more sites, each with its own samples (`sites =
"3,3,1"`: three sites of modality 0, three of 1, one of 2). In simulation a modality's rows are
split across its sites, seeded: ``iid`` deals a random permutation into near-equal parts (as
Flower Datasets' ``IidPartitioner`` does), ``dirichlet:ALPHA`` splits every class across the
sites in proportions drawn from Dir(ALPHA) (as its ``DirichletPartitioner`` does, without
resampling: a split that leaves a site without rows is refused, so the user picks another seed,
a larger ALPHA or fewer sites). Flower-free; every error is one line (``SiteError``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class SiteError(ValueError):
    """A topology or split that cannot be used; its message is one line for the user."""


@dataclass(frozen=True)
class SiteSplit:
    """How a modality's rows are dealt to its sites: ``kind`` "iid" or "dirichlet" (with ``alpha``)."""

    kind: str
    alpha: float = 0.0


def parse_sites(text: str, n_modalities: int) -> tuple[int, ...]:
    """Sites per modality from ``sites``: one integer for every modality, or a comma list with one
    per modality; each at least 1."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        counts = [int(part) for part in parts]
    except ValueError:
        raise SiteError(f"sites must be an integer or a comma list of integers, got {text!r}") from None
    if len(counts) == 1:
        counts *= n_modalities
    if len(counts) != n_modalities:
        raise SiteError(f"sites names {len(counts)} modalities, the data has {n_modalities}")
    empty = [m for m, count in enumerate(counts) if count < 1]
    if empty:
        raise SiteError(f"sites gives modality {empty[0]} no site (every modality needs at least 1)")
    return tuple(counts)


def sites_of(text: str, modality: int) -> int:
    """How many sites hold ``modality`` by ``sites`` (one count for all, or the list's entry),
    without knowing how many modalities there are."""
    counts = parse_sites(text, len(str(text).split(",")))
    if len(counts) > 1 and modality >= len(counts):
        raise SiteError(f"sites names {len(counts)} modalities, modality {modality} is not among them")
    return counts[modality] if len(counts) > 1 else counts[0]


def parse_site_split(text: str) -> SiteSplit:
    """``iid`` or ``dirichlet:ALPHA`` (ALPHA > 0) as a SiteSplit."""
    kind, _, alpha = str(text).partition(":")
    if kind == "iid" and not alpha:
        return SiteSplit("iid")
    if kind == "dirichlet":
        try:
            value = float(alpha)
        except ValueError:
            value = 0.0
        if value > 0 and np.isfinite(value):
            return SiteSplit("dirichlet", value)
    raise SiteError(f"site-split must be iid or dirichlet:ALPHA with ALPHA > 0, got {text!r}")


def split_rows(labels: np.ndarray, n_sites: int, split: SiteSplit, seed: int, modality: int = 0) -> list[np.ndarray]:
    """Each site's rows (sorted indices into ``labels``), disjoint, covering every row.

    ``iid``: a permutation seeded by (seed, modality) dealt into ``n_sites`` parts whose sizes
    differ by at most one. ``dirichlet``: ``dirichlet_parts`` with the same generator."""
    n = len(labels)
    if n_sites > n:
        raise SiteError(f"modality {modality} has {n} rows, fewer than its {n_sites} sites")
    rng = np.random.default_rng([seed, modality, 7])
    if split.kind == "iid":
        parts = np.array_split(rng.permutation(n), n_sites)
    else:
        parts = dirichlet_parts(labels, n_sites, split.alpha, rng)
    rows_per_site = [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
    empty = [site for site, rows in enumerate(rows_per_site) if len(rows) == 0]
    if empty:
        raise SiteError(f"site-split {split.kind}:{split.alpha:g} leaves site {empty[0]} of modality {modality} "
                        "without rows; use a larger alpha, fewer sites or another seed")
    return rows_per_site


def dirichlet_parts(labels: np.ndarray, n_sites: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Each class c in sorted order: shares p_c ~ Dir(alpha 1_S) from ``rng``, and c's rows, in
    index order, cut at floor(cumsum(p_c) n_c): the cut Flower Datasets' DirichletPartitioner
    makes (without self-balancing, before any resampling), so the same generator gives the same
    sites (``benchmarks/studies/site_split_check.py``)."""
    parts: list[list[int]] = [[] for _ in range(n_sites)]
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        cuts = (np.cumsum(rng.dirichlet(np.full(n_sites, alpha))) * len(rows)).astype(int)[:-1]
        for site, chunk in enumerate(np.split(rows, cuts)):
            parts[site].extend(chunk.tolist())
    return [np.asarray(part, dtype=np.int64) for part in parts]


def average_weights(site_weights: list[dict[str, np.ndarray]], site_rows: list[int]) -> dict[str, np.ndarray]:
    """FedAvg within a modality: every array the weighted mean of the sites' arrays,
    sum_s (n_s / sum n) W_s, weighted by each site's rows n_s (as Flower's FedAvg weights by
    examples). The sites must hold the same arrays in the same shapes."""
    if not site_weights or len(site_weights) != len(site_rows):
        raise SiteError(f"need one row count per site, got {len(site_weights)} weight sets and {len(site_rows)} counts")
    names = set(site_weights[0])
    for site, weights in enumerate(site_weights):
        if set(weights) != names or any(weights[k].shape != site_weights[0][k].shape for k in names):
            raise SiteError(f"site {site} holds other arrays than site 0; sites of a modality share one WAE")
    shares = np.asarray(site_rows, dtype=np.float64) / float(sum(site_rows))
    return {name: sum(share * weights[name].astype(np.float64) for share, weights in zip(shares, site_weights)
                      ).astype(site_weights[0][name].dtype) for name in site_weights[0]}


Agent = tuple[int, int]
"""An agent of the federation: (modality m, site s); a modality held at one site has site 0."""


def agents_of(counts: tuple[int, ...]) -> list[Agent]:
    """Every (modality, site) of a topology, modality-major: the order in which simulation gives
    its nodes partition ids 0, 1, ..."""
    return [(modality, site) for modality, n_sites in enumerate(counts) for site in range(n_sites)]


def agent_of_partition(partition_id: int, counts: tuple[int, ...]) -> Agent:
    """The (modality, site) a simulated node with ``partition_id`` plays."""
    agents = agents_of(counts)
    if not 0 <= partition_id < len(agents):
        raise SiteError(f"partition {partition_id} does not exist: the topology {counts} has {len(agents)} sites")
    return agents[partition_id]


def batch_shares(rows: dict[Agent, int], batch_size: int) -> dict[Agent, int]:
    """Each site's share of its modality's batch of ``batch_size`` rows, proportional to its rows
    n_s: the largest-remainder rounding of batch_size n_s / sum n (ties to the lower site), at
    least 1 (taken from the largest share) and at most n_s, summing to ``batch_size``; a modality
    with at most ``batch_size`` rows sends all of them."""
    shares: dict[Agent, int] = {}
    for modality in sorted({m for m, _ in rows}):
        sites = sorted(agent for agent in rows if agent[0] == modality)
        counts = np.array([rows[agent] for agent in sites], dtype=np.int64)
        total = int(counts.sum())
        if total <= batch_size:
            shares.update(zip(sites, counts.tolist()))
            continue
        exact = batch_size * counts / total
        share = np.floor(exact).astype(np.int64)
        for index in np.argsort(-(exact - share), kind="stable")[:batch_size - int(share.sum())]:
            share[index] += 1
        for index in np.flatnonzero(share == 0):  # every site sends a row, taken from the largest share
            share[int(np.argmax(share))] -= 1
            share[index] = 1
        shares.update(zip(sites, share.tolist()))
    return shares
