"""The per-agent Wasserstein autoencoder (f_m, g_m): two-layer MLPs, as in the paper."""

from __future__ import annotations

import torch
from torch import nn


class WAE(nn.Module):
    """Encoder f_m: R^{D_m} -> R^d and decoder g_m: R^d -> R^{D_m}, each Linear-ReLU-Linear."""

    def __init__(self, input_dim: int, latent_dim: int, hidden_dim: int) -> None:
        super().__init__()
        if min(input_dim, latent_dim, hidden_dim) < 1:
            raise ValueError(f"dimensions must be positive, got input {input_dim}, "
                             f"latent {latent_dim}, hidden {hidden_dim}")
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, input_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)


class Predictor(nn.Module):
    """The local predictor h_m: R^d -> R^K of eq. 8 (logits, or K = 1 for regression),
    Linear-ReLU-Linear like the WAE."""

    def __init__(self, latent_dim: int, hidden_dim: int, n_outputs: int) -> None:
        super().__init__()
        if min(latent_dim, hidden_dim, n_outputs) < 1:
            raise ValueError(f"dimensions must be positive, got latent {latent_dim}, "
                             f"hidden {hidden_dim}, outputs {n_outputs}")
        self.layers = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, n_outputs))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)
