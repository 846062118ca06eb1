"""Which samples each modality holds: different patients at each site.

A data set whose views hold the same samples (one ``y``) is simulated as the federations real
users have: each modality holds its own patients, a few measured in several modalities, with
class mixes that differ.

* ``anchors`` = K samples (a seeded draw) are held by every modality and declared as such: the
  rows a site holds in every modality, the only correspondence a run is told of.
* ``overlap`` in [0, 1]: the share of the other samples held by every modality too (1: every
  modality holds every sample, the setting of the paper; 0: each of them lives in exactly one
  modality). Shared samples are not declared: no one knows which rows they are.
* ``class-shift`` = ALPHA > 0: the samples held by one modality are dealt to the modalities class
  by class in Dir(ALPHA) proportions (the cut of ``otm_fed.sites.dirichlet_parts``), so the
  modalities' class mixes differ; 0 deals them in near-equal random parts.

Torch-free and Flower-free; every error is one line (``CohortError``).
"""

from __future__ import annotations

import numpy as np

from otm_fed.sites import dirichlet_parts


class CohortError(ValueError):
    """A split of samples across modalities that cannot be used; its message is one line."""


def split_samples(labels: np.ndarray, n_modalities: int, overlap: float, class_shift: float, seed: int,
                  declared: np.ndarray | None = None) -> list[np.ndarray]:
    """Each modality's samples (sorted ids into ``labels``): the ``declared`` ones, a seeded
    round(overlap x rest) of the rest, and its part of the remaining samples, which are dealt to
    exactly one modality each (near-equal random parts, or class by class in Dir(class_shift)
    proportions). Every sample is held by at least one modality."""
    if not 0.0 <= overlap <= 1.0:
        raise CohortError(f"overlap must lie in [0, 1], got {overlap}")
    declared = np.zeros(0, dtype=np.int64) if declared is None else np.asarray(declared, dtype=np.int64)
    rng = np.random.default_rng([seed, 11])
    rest = rng.permutation(np.setdiff1d(np.arange(len(labels)), declared))
    n_shared = int(round(overlap * len(rest)))
    shared = np.concatenate([declared, rest[:n_shared]])
    own = np.sort(rest[n_shared:])
    if class_shift > 0:
        parts = dirichlet_parts(labels[own], n_modalities, class_shift, rng)
    else:
        parts = np.array_split(rng.permutation(len(own)), n_modalities)
    held = [np.sort(np.concatenate([shared, own[part]])).astype(np.int64) for part in parts]
    empty = [m for m, samples in enumerate(held) if len(samples) == 0]
    if empty:
        raise CohortError(f"overlap {overlap:g} and class-shift {class_shift:g} leave modality {empty[0]} without "
                          "samples; use a larger class-shift, a larger overlap or another seed")
    return held


def anchor_candidates(view_samples: list[np.ndarray]) -> np.ndarray:
    """The samples view 0 holds together with at least one other view, sorted: the candidates for
    anchors (every modality's frame is fitted to modality 0's, so a pair counts when view 0 is in it)."""
    others = np.concatenate(view_samples[1:]) if len(view_samples) > 1 else np.empty(0, np.int64)
    return np.intersect1d(view_samples[0], others)
