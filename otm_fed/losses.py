"""The agent's local objective (paper eq. 5-6) and the optional WAE-MMD latent penalty.

All terms are means over the batch of per-sample squared norms, so loss weights do not depend
on the batch size; eq. 6's Frobenius norms are these times N_m.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def squared_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(1/N) ||a - b||_F^2."""
    return (a - b).pow(2).sum(1).mean()


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
    mmd: WAE-MMD penalty; decode_mix: also reconstruct X_m from g_m(Z~_m) (public code)."""

    beta: float = 1.0
    eta: float = 0.0
    mmd: float = 0.0
    decode_mix: bool = False


def local_loss(x: torch.Tensor, codes: torch.Tensor, reconstruction: torch.Tensor,
               weights: LossWeights, projected_mix: torch.Tensor | None = None,
               decoded_mix: torch.Tensor | None = None, server_gradient: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """L_m = ||X_m - g_m(f_m(X_m))||^2 + beta ||f_m(X_m) - Z~_m||^2 + eta <G_m, f_m(X_m)>
    (+ mmd, + ||X_m - g_m(Z~_m)||^2); returns every term and their sum under "total".
    Without a mix (local-only training) the mixing terms are absent."""
    terms = {"reconstruction": squared_error(x, reconstruction)}
    if projected_mix is not None:
        terms["latent_matching"] = weights.beta * squared_error(codes, projected_mix)
    if decoded_mix is not None and weights.decode_mix:
        terms["mix_reconstruction"] = squared_error(x, decoded_mix)
    if server_gradient is not None and weights.eta:
        terms["server_regulariser"] = weights.eta * (server_gradient * codes).sum()
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
