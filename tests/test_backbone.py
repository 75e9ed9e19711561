"""The shared image encoder's candidates (handlib.models.backbone) and their benchmark."""
from __future__ import annotations

import pytest
import torch

from handlib.models.backbone import (ENCODERS, MaskHead, ResidualBlock, ScoreMapHead, build_encoder,
                                     conv_bn_relu, scaled)


@pytest.mark.parametrize("kind", sorted(ENCODERS))
@pytest.mark.parametrize("size", [64, 128])
def test_encoders_give_features_at_a_quarter_of_the_image(kind, size):
    torch.manual_seed(0)
    encoder = build_encoder(kind)
    features = encoder(torch.rand(2, 3, size, size))
    assert features.shape == (2, encoder.out_channels, size // 4, size // 4)
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_width_scales_the_channels(kind):
    narrow, wide = build_encoder(kind, width=0.5), build_encoder(kind, width=1.0)
    assert narrow.out_channels == scaled(wide.out_channels, 0.5) < wide.out_channels
    assert sum(p.numel() for p in narrow.parameters()) < 0.5 * sum(p.numel() for p in wide.parameters())


def test_heads_give_score_maps_and_a_mask_at_the_feature_resolution():
    features = torch.rand(2, 24, 16, 16)
    assert ScoreMapHead(24)(features).shape == (2, 21, 16, 16)
    assert MaskHead(24)(features).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_gradients_reach_the_first_convolution(kind):
    torch.manual_seed(0)
    encoder = build_encoder(kind, width=0.5)
    heads = ScoreMapHead(encoder.out_channels), MaskHead(encoder.out_channels)
    features = encoder(torch.rand(2, 3, 64, 64))
    (heads[0](features).square().mean() + heads[1](features).mean()).backward()
    first = next(m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 3
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_blocks_change_resolution_and_channels_as_documented():
    x = torch.rand(2, 8, 16, 16)
    assert conv_bn_relu(8, 12, stride=2)(x).shape == (2, 12, 8, 8)
    assert conv_bn_relu(8, 12, kernel=1)(x).shape == (2, 12, 16, 16)
    assert ResidualBlock(8, 16, stride=2)(x).shape == (2, 16, 8, 8)
    assert isinstance(ResidualBlock(8, 8).shortcut, torch.nn.Identity)    # same shape: no projection
    assert (ResidualBlock(8, 8)(x) >= 0).all()                              # ReLU after the sum


def test_unknown_kind_or_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match=r"kind: expected one of \['hourglass', 'resnet', 'vgg'\], got 'nope'"):
        build_encoder("nope")
    with pytest.raises(ValueError, match="width"):
        build_encoder("resnet", width=0)
    with pytest.raises(ValueError, match="images"):
        build_encoder("resnet", width=0.25)(torch.rand(1, 3, 30, 30))        # not a multiple of 4
    with pytest.raises(ValueError, match="images"):
        build_encoder("vgg", width=0.25)(torch.rand(1, 1, 32, 32))           # one channel


def test_benchmark_prints_a_table(capsys, benchmark_script):
    bench = benchmark_script("bench_backbone")
    previous = torch.get_num_threads()
    try:
        rows = bench.main(["--quick", "--batch-size", "2", "--image-size", "32", "--width", "0.25", "--threads", "1"])
    finally:
        torch.set_num_threads(previous)
    printed = capsys.readouterr().out
    assert "load average" in printed and "| encoder | width |" in printed
    assert [row["kind"] for row in rows] == list(ENCODERS)
    for row in rows:
        assert f"| {row['kind']} |" in printed
        assert row["params"] > row["encoder_params"] > 0 and row["gflop"] > 0 and row["train"] > 0
    # The work of one 3 x 3 convolution, 3 -> 8 channels on 16 x 16: 2 x 16 * 16 * 8 * 3 * 9 FLOP.
    assert bench.forward_gflop(torch.nn.Conv2d(3, 8, 3, padding=1), 16) == pytest.approx(2 * 16 * 16 * 8 * 3 * 9 / 1e9)


def test_the_coordinate_loss_is_small_on_the_true_maps_and_grows_with_the_peaks_offset():
    from handlib.models.backbone import coordinate_loss, score_map_targets

    generator = torch.Generator().manual_seed(0)
    keypoints = 24 + 80 * torch.rand(2, 21, 2, generator=generator)                # px of a 128 px image
    visible = torch.ones(2, 21)
    losses = [coordinate_loss(score_map_targets(keypoints + shift, visible, 128), keypoints, visible, 128).item()
              for shift in (0.0, 4.0, 16.0)]
    assert losses[0] < 0.01 < losses[1] < losses[2]                                # fractions of the image side
    maps = score_map_targets(keypoints + 8.0, visible, 128).requires_grad_()
    coordinate_loss(maps, keypoints, visible, 128).backward()
    assert maps.grad.abs().sum() > 0
    # Invisible keypoints do not count.
    hidden = visible.clone()
    hidden[:, :10] = 0
    wrong = keypoints.clone()
    wrong[:, :10] += 30.0
    maps = score_map_targets(keypoints, visible, 128)
    assert coordinate_loss(maps, wrong, hidden, 128) == pytest.approx(coordinate_loss(maps, keypoints, hidden, 128))
