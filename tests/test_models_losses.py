"""The WAE and the local objective (eq. 6) on hand-checkable cases."""

import pytest
import torch

from otm_fed.losses import LossWeights, local_loss, mmd_penalty, squared_error
from otm_fed.models import WAE


def test_wae_shapes_and_bad_sizes():
    model = WAE(input_dim=7, latent_dim=3, hidden_dim=5)
    codes, reconstruction = model(torch.zeros(4, 7))
    assert codes.shape == (4, 3) and reconstruction.shape == (4, 7)
    with pytest.raises(ValueError, match="positive"):
        WAE(0, 3, 5)


def test_squared_error_is_mean_per_sample_squared_norm():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert squared_error(a, b).item() == pytest.approx((5.0 + 25.0) / 2)


def test_local_loss_terms_and_weights():
    x = torch.ones(2, 3)
    codes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    weights = LossWeights(beta=2.0, eta=0.5)
    terms = local_loss(x, codes, torch.zeros(2, 3), weights, projected_mix=torch.zeros(2, 2),
                       server_gradient=torch.ones(2, 2))
    assert terms["reconstruction"].item() == pytest.approx(3.0)
    assert terms["latent_matching"].item() == pytest.approx(2.0 * 1.0)
    assert terms["server_regulariser"].item() == pytest.approx(0.5 * 2.0)
    assert terms["total"].item() == pytest.approx(3.0 + 2.0 + 1.0)
    local_only = local_loss(x, codes, torch.zeros(2, 3), weights)
    assert set(local_only) == {"reconstruction", "total"}


def test_mmd_is_small_for_prior_samples_and_large_for_shifted_ones():
    generator = torch.Generator().manual_seed(0)
    prior_like = torch.randn(400, 4, generator=generator)
    shifted = prior_like + 3.0
    assert abs(mmd_penalty(prior_like, torch.Generator().manual_seed(1)).item()) < 0.02
    assert mmd_penalty(shifted, torch.Generator().manual_seed(1)).item() > 0.3
