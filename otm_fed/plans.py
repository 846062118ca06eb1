"""Compact, exact encoding of transport plans T_m for the wire.

An exact OT plan between N_B and N_m points has at most N_B + N_m - 1 non-zeros, so a plan
travels as the (row, column, value) triplets of its support plus its shape: O(N) numbers
instead of N_B x N_m. Decoding gives back the same float64 matrix bit for bit.

``project_to_modality`` (eq. 4) is what an agent does with its plan; it lives here, not in
``otm_fed.transport``, so that an agent never imports POT (about 5 s at every process start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SparsePlan:
    """The support of a plan T: T[rows[k], cols[k]] = values[k], zero elsewhere."""

    rows: np.ndarray  # int64
    cols: np.ndarray  # int64
    values: np.ndarray  # float64
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.values.size)


def encode_plan(plan: np.ndarray) -> SparsePlan:
    """The exact non-zero entries of T, in row-major order."""
    plan = np.asarray(plan, dtype=np.float64)
    if plan.ndim != 2:
        raise ValueError(f"a transport plan is a 2-D matrix, got shape {plan.shape}")
    rows, cols = np.nonzero(plan)
    return SparsePlan(rows.astype(np.int64), cols.astype(np.int64), plan[rows, cols].copy(),
                      (int(plan.shape[0]), int(plan.shape[1])))


def decode_plan(sparse: SparsePlan) -> np.ndarray:
    """The dense T back from its support; refuses indices outside the shape or repeated entries."""
    n_rows, n_cols = sparse.shape
    rows = np.asarray(sparse.rows)
    cols = np.asarray(sparse.cols)
    values = np.asarray(sparse.values, dtype=np.float64)
    if not (rows.shape == cols.shape == values.shape and rows.ndim == 1):
        raise ValueError("plan rows, cols and values must be 1-D arrays of one length")
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows or cols.min() < 0 or cols.max() >= n_cols):
        raise ValueError(f"plan indices fall outside its shape {sparse.shape}")
    if np.unique(rows * n_cols + cols).size != rows.size:
        raise ValueError("plan has repeated (row, col) entries")
    plan = np.zeros((n_rows, n_cols))
    plan[rows, cols] = values
    return plan


def project_to_modality(mixed_barycenter: np.ndarray, transport_plan: np.ndarray) -> np.ndarray:
    """Z~_m = diag(1/mu_m) T_m^T Z~_B, eq. 4 (the factor N_m makes an identical modality map to itself)."""
    mu_m = transport_plan.sum(0)
    return (transport_plan.T @ mixed_barycenter) / mu_m[:, None]
