"""Supervised mode (paper eq. 8, Tables 3-5): folds, targets, test-input noise, scores, late fusion.

Flower-free. The agents own their targets (class labels or a continuous target); the server
sees test targets only in simulation, for the late-fusion diagnostic. scikit-learn is imported
where a fold is split (supervised mode only), since ``otm_fed.config`` imports this module.
"""

from __future__ import annotations

import numpy as np

TASKS = ("clustering", "classification", "regression")
LOSSES = {"classification": ("ce",), "regression": ("mae", "mse")}
SCORE_OF_TASK = {"classification": "accuracy", "regression": "mae"}


def fold_indices(labels: np.ndarray, n_folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of fold ``fold`` of a seeded stratified ``n_folds``-fold split;
    both in file order (the test set is aligned across modalities)."""
    from sklearn.model_selection import StratifiedKFold

    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must lie in 0..{n_folds - 1}, got {fold}")
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    labels = np.asarray(labels)
    train, test = list(splitter.split(np.zeros((len(labels), 1)), labels))[fold]
    return np.sort(train), np.sort(test)


def regression_target(hidden: np.ndarray, seed: int) -> np.ndarray:
    """A continuous target of the hidden factors h (``make_synthetic(..., return_hidden=True)``):
    y = sin(h w_1) + h w_2 with seeded w_k ~ N(0, I / dim h), standardised to mean 0, std 1."""
    rng = np.random.default_rng([seed, 2])
    weights = rng.normal(scale=1.0 / np.sqrt(hidden.shape[1]), size=(hidden.shape[1], 2))
    projected = np.asarray(hidden, np.float64) @ weights
    target = np.sin(projected[:, 0]) + projected[:, 1]
    return ((target - target.mean()) / target.std()).astype(np.float32)


def parse_noise_levels(text: str) -> list[float]:
    """``"0,0.1,0.5"`` -> [0.0, 0.1, 0.5]: noise energy / data energy ratios, non-negative, the
    first 0 (the clean score)."""
    try:
        levels = [float(item) for item in text.split(",")]
    except ValueError as error:
        raise ValueError(f"noise-levels must be a comma list of numbers, got {text!r}") from error
    if not all(np.isfinite(level) and level >= 0 for level in levels):
        raise ValueError(f"noise levels must be finite and non-negative, got {levels}")
    if levels[0] != 0:
        raise ValueError(f"the first noise level must be 0 (the clean score), got {levels}")
    return levels


def noisy_copies(x: np.ndarray, ratios: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    """X + E_r for each ratio r, with ||E_r||_F^2 = r ||X||_F^2 exactly; one Gaussian direction
    E shared by all r (E_r = sqrt(r) ||X||_F / ||E||_F E), so a curve over r is one draw."""
    direction = rng.standard_normal(x.shape)
    scale = np.linalg.norm(x) / np.linalg.norm(direction)
    return [(x + np.sqrt(ratio) * scale * direction).astype(x.dtype) for ratio in ratios]


def score(outputs: np.ndarray, targets: np.ndarray, task: str) -> float:
    """Accuracy of class probabilities (N x C), or MAE of predictions (N x 1)."""
    if task == "classification":
        return float(np.mean(outputs.argmax(1) == targets))
    if task == "regression":
        return float(np.mean(np.abs(outputs[:, 0] - targets)))
    raise ValueError(f"no supervised score for task {task!r}")


def late_fusion(outputs: list[np.ndarray]) -> np.ndarray:
    """The average of the modalities' outputs (class probabilities or predictions) on the
    aligned test set."""
    return np.mean(np.stack(outputs), axis=0)
