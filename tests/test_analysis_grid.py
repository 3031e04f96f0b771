"""period2_share: the share of a map's variation that repeats every 2 pixels."""

import pytest
import torch

from mxr.course.analysis import period2_share


def test_a_tiled_2x2_pattern_is_all_grid_and_a_ramp_almost_none():
    tile = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).repeat(14, 14)
    ramp = torch.linspace(0, 1, 28)[:, None].expand(28, 28)
    assert float(period2_share(tile)) == pytest.approx(1.0)
    assert float(period2_share(ramp)) < 0.01


def test_a_stride_2_deconvolution_of_a_smooth_map_draws_the_grid():
    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(1, 4, 2, stride=2)
    smooth = torch.linspace(0, 1, 14)[:, None] * torch.linspace(0, 1, 14)[None]  # (14, 14)
    out = torch.relu(deconv(smooth[None, None]))[0].detach()  # (4, 28, 28)
    shares = period2_share(out)
    assert shares.shape == (4,)
    assert float(shares.max()) > 10 * float(period2_share(smooth))


def test_half_a_grid_mixed_into_a_constant_scores_by_energy():
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(4, 4)  # (8, 8), all at (4, 4)
    ramp = torch.linspace(-1, 1, 8)[None].expand(8, 8)
    share = float(period2_share(checker + ramp))
    grid_energy = float((checker**2).sum())
    ramp_energy = float(((ramp - ramp.mean()) ** 2).sum())
    # the ramp has a little energy at the Nyquist column too, so the share is a bit above the ratio
    assert grid_energy / (grid_energy + ramp_energy) <= share < 1.0


def test_odd_sizes_are_refused_with_the_sizes_named():
    with pytest.raises(ValueError, match="7×8"):
        period2_share(torch.zeros(7, 8))
