"""The agent's local objective (paper eq. 5-6) and the optional WAE-MMD latent penalty.

All terms are means over the batch of per-sample terms (squared norms; for the cosine error and
the neighbour term, per-row cosine distances and InfoNCE losses), so loss weights do not depend
on the batch size; eq. 6's Frobenius norms are the squared-norm means times N_m.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1/N) ||a - b||_F^2."""
    return (a - b).pow(2).sum(1).mean()


def cosine_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i (1 - cos(a_i, b_i)): the reconstruction error of a view whose rows are directions
    (tf-idf or L2-normalised), where squared error on sparse unit rows rewards predicting ~0."""
    return (1.0 - torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-8)).mean()


RECONSTRUCTION_ERRORS = {"squared": squared_error, "cosine": cosine_error}


def neighbour_embedding_loss(codes: torch.Tensor, neighbour_codes: torch.Tensor) -> torch.Tensor:
    """Beyond the paper, a local clustering term: InfoNCE with the Cauchy kernel
    q(a, b) = 1 / (1 + ||a - b||^2) (t-SNE's kernel, UMAP's contrastive form, Damrich et al. 2023),
    row i's positive being a code of one of its k nearest neighbours in the agent's own input space
    and its negatives the other rows' neighbours:
    (1/N) sum_i -log q(z_i, z+_i) / sum_j q(z_i, z+_j). It keeps the input's neighbourhoods and
    pulls them into tight, separated groups, which k-means on the codes then finds."""
    squared = torch.cdist(codes, neighbour_codes).pow(2)
    log_similarity = -torch.log1p(squared)
    return -(log_similarity.diagonal() - torch.logsumexp(log_similarity, 1)).mean()


def mmd_penalty(codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WAE-MMD (Tolstikhin et al. 2018): MMD between the codes and N(0, I) samples with the
    inverse multiquadratic kernel k(x, y) = C / (C + ||x - y||^2), C = 2 d."""
    n, d = codes.shape
    if n < 2:
        return codes.new_zeros(())
    prior = torch.randn(n, d, generator=generator, dtype=codes.dtype).to(codes.device)
    scale = 2.0 * d

    def kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return scale / (scale + torch.cdist(x, y).pow(2))

    off_diagonal = 1.0 - torch.eye(n, dtype=codes.dtype, device=codes.device)
    within = ((kernel(codes, codes) + kernel(prior, prior)) * off_diagonal).sum() / (n * (n - 1))
    return within - 2.0 * kernel(codes, prior).mean()


@dataclass(frozen=True)
class LossWeights:
    """beta: latent matching to Z~_m (eq. 6); eta: server regulariser gradient (eq. 7);
    mmd: WAE-MMD penalty; decode_mix: also reconstruct X_m from g_m(Z~_m) (public code);
    neighbour: the neighbour-embedding term; reconstruction: "squared" or "cosine" error."""

    beta: float = 1.0
    eta: float = 0.0
    mmd: float = 0.0
    decode_mix: bool = False
    neighbour: float = 0.0
    reconstruction: str = "squared"


def local_loss(x: torch.Tensor, codes: torch.Tensor, reconstruction: torch.Tensor,
               weights: LossWeights, projected_mix: torch.Tensor | None = None,
               decoded_mix: torch.Tensor | None = None, server_gradient: torch.Tensor | None = None,
               generator: torch.Generator | None = None,
               neighbour_codes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """L_m = ||X_m - g_m(f_m(X_m))||^2 + beta ||f_m(X_m) - Z~_m||^2 + eta <G_m, f_m(X_m)>
    (+ mmd, + ||X_m - g_m(Z~_m)||^2, + the neighbour term on ``neighbour_codes``); the
    reconstruction error is squared or cosine (``weights.reconstruction``); returns every term and
    their sum under "total". Without a mix (local-only training) the mixing terms are absent."""
    error = RECONSTRUCTION_ERRORS[weights.reconstruction]
    terms = {"reconstruction": error(x, reconstruction)}
    if projected_mix is not None:
        terms["latent_matching"] = weights.beta * squared_error(codes, projected_mix)
    if decoded_mix is not None and weights.decode_mix:
        terms["mix_reconstruction"] = error(x, decoded_mix)
    if server_gradient is not None and weights.eta:
        terms["server_regulariser"] = weights.eta * (server_gradient * codes).sum()
    if neighbour_codes is not None and weights.neighbour:
        terms["neighbour"] = weights.neighbour * neighbour_embedding_loss(codes, neighbour_codes)
    if weights.mmd:
        terms["mmd"] = weights.mmd * mmd_penalty(codes, generator)
    terms["total"] = sum(terms.values())
    return terms


def supervised_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """L_sup of eq. 8: cross-entropy on logits (N x C) and class indices, or MAE / MSE on
    predictions (N x 1) and continuous targets."""
    if loss == "ce":
        return torch.nn.functional.cross_entropy(outputs, targets.long())
    if loss == "mae":
        return (outputs[:, 0] - targets).abs().mean()
    if loss == "mse":
        return (outputs[:, 0] - targets).pow(2).mean()
    raise ValueError(f"unknown supervised loss {loss!r}; expected ce, mae or mse")


def supervised_terms(predictor: torch.nn.Module, codes: torch.Tensor, targets: torch.Tensor, loss: str,
                     weight: float, projected_mix: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Eq. 8, weighted: L_sup(h_m(Z_m), y_m) and, with a mix, L_sup(h_m(Z~_m), y_m); Z~_m's rows
    share the labels of the rows they were mapped to (eq. 4)."""
    terms = {"supervised": weight * supervised_loss(predictor(codes), targets, loss)}
    if projected_mix is not None:
        terms["supervised_mix"] = weight * supervised_loss(predictor(projected_mix), targets, loss)
    return terms
