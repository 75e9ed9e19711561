"""The course's shared image encoder ("backbone"): candidate designs, their blocks and two heads.

Every image method of the course (Zimmermann & Brox's PoseNet and HandSegNet, Cai, Boukhayma,
Zhou's DetNet, Ge) starts from one image encoder, pre-trained once on synthetic 128 x 128 hand
crops to predict the 21 keypoint score maps at 1/4 resolution (32 x 32) and the hand mask. This
file holds the candidates for that encoder, all with the same contract:

    images (B, 3, S, S), RGB in [0, 1]  ->  features (B, C, S/4, S/4),  C = encoder.out_channels

* ``ResNetEncoder``: residual stages down to 1/16, a feature-pyramid path back up to 1/4
  (He et al. 2016; Lin et al. 2017; Xiao et al. 2018, "simple baselines").
* ``HourglassEncoder``: one stacked-hourglass module at 1/4 (Newell et al. 2016).
* ``VGGEncoder``: plain 3 x 3 convolutions and max-pooling, the design PoseNet uses today.

``ScoreMapHead`` and ``MaskHead`` turn the features into the two pre-training targets.
``benchmarks/bench_backbone.py`` measures the candidates' size, work and speed.

The images need no normalisation: each encoder's first convolution has no bias and is followed by
BatchNorm, which removes the mean and scale of its input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handlib.data.heatmaps import gaussian_heatmaps, heatmap_argmax, heatmap_soft_argmax
from handlib.methods import ImageTraining, LossContext, Method, Prediction, Stage, image_stage, synthetic_test_set
from handlib.render.camera import check_image_size
from handlib.skeleton import NUM_KEYPOINTS

# Every encoder returns features at 1/4 of the image side (32 x 32 for 128 px images).
ENCODER_STRIDE = 4


def scaled(channels: int, width: float) -> int:
    """``channels`` times the width multiplier, rounded to a multiple of 8 (at least 8).

    Example:
        >>> scaled(48, 1.0), scaled(48, 0.75), scaled(48, 0.1)
        (48, 32, 8)
    """
    if not width > 0:
        raise ValueError(f"width: expected a positive multiplier, got {width!r}")
    return max(8, int(round(channels * width / 8)) * 8)


def check_images(images: torch.Tensor) -> None:
    """Raise ValueError unless ``images`` is (B, 3, H, W) with H and W multiples of ``ENCODER_STRIDE``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 \
            or images.shape[2] % ENCODER_STRIDE or images.shape[3] % ENCODER_STRIDE:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images: expected a tensor (B, 3, H, W) with H and W multiples of {ENCODER_STRIDE}, "
                         f"got {got}")


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------

def conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution (no bias: BatchNorm has one), BatchNorm, ReLU.

    (B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride)); the padding
    ``kernel // 2`` keeps the size at stride 1.
    """
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """He et al.'s basic block: y = ReLU(F(x) + P(x)).

    F is conv 3 x 3 (stride ``stride``) - BN - ReLU - conv 3 x 3 - BN. The shortcut P is the
    identity, or a 1 x 1 convolution with BN (a projection) when the block changes the number of
    channels or the resolution.

    (B, in_channels, H, W) -> (B, out_channels, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(conv_bn_relu(in_channels, out_channels, stride=stride),
                                      nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


def stem(out_channels: int) -> nn.Sequential:
    """Two stride-2 3 x 3 conv-BN-ReLU: images (B, 3, S, S) -> (B, out_channels, S/4, S/4).

    The only layer at full resolution is the first, with out_channels / 2 filters.
    """
    return nn.Sequential(conv_bn_relu(3, out_channels // 2, stride=2),            # (B, C/2, S/2, S/2)
                         conv_bn_relu(out_channels // 2, out_channels, stride=2))  # (B, C, S/4, S/4)


# ----------------------------------------------------------------------------------------------
# The candidate encoders: images (B, 3, S, S) in [0, 1] -> features (B, out_channels, S/4, S/4)
# ----------------------------------------------------------------------------------------------

class ResNetEncoder(nn.Module):
    """Residual stages down to 1/16, then a top-down path back to 1/4 (a small feature pyramid).

    stem                      (B, 3, S, S)          -> (B, c1, S/4, S/4)
    stage i = 1, 2, 3         ``blocks`` ResidualBlocks, the first of stages 2 and 3 at stride 2:
                              x1 (B, c1, S/4), x2 (B, c2, S/8), x3 (B, c3, S/16)
    top-down                  t3 = L3(x3);  t_i = up2(t_{i+1}) + L_i(x_i), L_i a 1 x 1 conv-BN
    output                    conv-BN-ReLU 3 x 3 of t1 -> (B, out_channels, S/4, S/4)

    The deep stages see a large context cheaply (most of the depth runs at 1/8 and 1/16); the
    lateral skips bring back the 1/4 detail that score maps need (Lin et al. 2017, FPN; Xiao et
    al. 2018 upsample the last stage instead, with transposed convolutions).

    Args:
        width: multiplier of every channel count (``scaled``).
        stage_channels: (c1, c2, c3) at width 1.
        blocks: residual blocks per stage.
        out_channels: C at width 1.
    """

    def __init__(self, width: float = 1.0, stage_channels: tuple = (48, 96, 160), blocks: int = 2,
                 out_channels: int = 64):
        super().__init__()
        channels = [scaled(c, width) for c in stage_channels]
        self.out_channels = scaled(out_channels, width)
        self.stem = stem(channels[0])
        self.stages = nn.ModuleList()
        for i, c in enumerate(channels):
            previous = channels[max(i - 1, 0)]
            self.stages.append(nn.Sequential(
                ResidualBlock(previous, c, stride=1 if i == 0 else 2),
                *(ResidualBlock(c, c) for _ in range(blocks - 1))))
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, self.out_channels, 1, bias=False), nn.BatchNorm2d(self.out_channels))
            for c in channels)
        self.output = conv_bn_relu(self.out_channels, self.out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        x = self.stem(images)                                                          # (B, c1, S/4, S/4)
        pyramid = []                                                                   # S/4, S/8, S/16
        for stage in self.stages:
            x = stage(x)
            pyramid.append(x)
        top = self.laterals[-1](pyramid[-1])                                           # (B, C, S/16, S/16)
        for lateral, skip in zip(reversed(self.laterals[:-1]), reversed(pyramid[:-1])):
            top = F.interpolate(top, size=skip.shape[-2:], mode="nearest") + lateral(skip)
        return self.output(F.relu(top))                                                # (B, C, S/4, S/4)


class Hourglass(nn.Module):
    """One hourglass level (Newell et al. 2016), recursive: (B, C, H, W) -> (B, C, H, W).

        out = skip(x) + up2(after(inner(before(pool2(x)))))

    ``skip``, ``before`` and ``after`` are ResidualBlocks; ``inner`` is the next level (depth - 1)
    or, at the bottom, one more ResidualBlock. Depth d reaches 1/2^d of the input resolution.
    """

    def __init__(self, channels: int, depth: int):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: expected a positive int, got {depth!r}")
        self.skip = ResidualBlock(channels, channels)
        self.before = ResidualBlock(channels, channels)
        self.inner = Hourglass(channels, depth - 1) if depth > 1 else ResidualBlock(channels, channels)
        self.after = ResidualBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.after(self.inner(self.before(F.max_pool2d(x, 2))))                  # (B, C, H/2, W/2)
        return self.skip(x) + F.interpolate(low, size=x.shape[-2:], mode="nearest")   # (B, C, H, W)


class HourglassEncoder(nn.Module):
    """A stem to 1/4, then one hourglass of depth 3 (1/4 -> 1/32 -> 1/4), then a 1 x 1 conv-BN-ReLU.

    stem              (B, 3, S, S)   -> (B, c, S/4, S/4)
    Hourglass(c, 3)   pools to S/8, S/16, S/32 and comes back, a skip at every level
    output            1 x 1 conv-BN-ReLU -> (B, out_channels, S/4, S/4)

    Unlike ``ResNetEncoder`` it keeps the same width at every resolution and spends a residual
    block at 1/4 on every level's way back: more work at high resolution, a symmetric design.
    Newell et al. stack eight of these (with intermediate supervision); one fits the CPU budget.

    Args:
        width: multiplier of every channel count (``scaled``).
        channels: c at width 1, the same at every level of the hourglass.
        depth: levels of the hourglass.
        out_channels: C at width 1.
    """

    def __init__(self, width: float = 1.0, channels: int = 64, depth: int = 3, out_channels: int = 64):
        super().__init__()
        channels = scaled(channels, width)
        self.out_channels = scaled(out_channels, width)
        self.stem = stem(channels)
        self.hourglass = Hourglass(channels, depth)
        self.output = conv_bn_relu(channels, self.out_channels, kernel=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return self.output(self.hourglass(self.stem(images)))                          # (B, C, S/4, S/4)


class VGGEncoder(nn.Sequential):
    """Plain 3 x 3 conv-BN-ReLU blocks with 2 x 2 max-pooling after the first two: the reference.

    block 1           ``convs`` x conv c1, max-pool   (B, 3, S, S) -> (B, c1, S/2, S/2)
    block 2           ``convs`` x conv c2, max-pool                -> (B, c2, S/4, S/4)
    block 3           ``convs`` x conv c3                          -> (B, c3, S/4, S/4)
    output            one conv to out_channels                     -> (B, C, S/4, S/4)

    At width 1 these are exactly the layers of today's PoseNet encoder (``handlib.models.
    zimmermann2017``, profile ``full``: widths (32, 64, 128), two convs each, encoding 64), so the
    benchmark compares the new designs against the current one. Its weakness is where the work
    is: the two convolutions at full resolution and two at 1/2 cost more than everything at 1/4,
    and the receptive field stays small (a 3 x 3 conv at 1/4 sees 4 pixels further).

    Args:
        width: multiplier of every channel count (``scaled``).
        block_channels: (c1, c2, c3) at width 1.
        convs: convolutions per block.
        out_channels: C at width 1.
    """

    def __init__(self, width: float = 1.0, block_channels: tuple = (32, 64, 128), convs: int = 2,
                 out_channels: int = 64):
        layers, previous = [], 3
        for i, c in enumerate(scaled(c, width) for c in block_channels):
            layers += [conv_bn_relu(previous if j == 0 else c, c) for j in range(convs)]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            previous = c
        super().__init__(*layers, conv_bn_relu(previous, scaled(out_channels, width)))
        self.out_channels = scaled(out_channels, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return super().forward(images)                                                 # (B, C, S/4, S/4)


ENCODERS = {"resnet": ResNetEncoder, "hourglass": HourglassEncoder, "vgg": VGGEncoder}


def build_encoder(kind: str, width: float = 1.0) -> nn.Module:
    """The encoder ``ENCODERS[kind]`` at ``width`` times its channel counts.

    Args:
        kind: "resnet", "hourglass" or "vgg".
        width: channel multiplier (1.0: the design measured in ``benchmarks/bench_backbone.py``).

    Returns:
        an nn.Module: images (B, 3, S, S) in [0, 1] -> features (B, out_channels, S/4, S/4).
    """
    if kind not in ENCODERS:
        raise ValueError(f"kind: expected one of {sorted(ENCODERS)}, got {kind!r}")
    return ENCODERS[kind](width=width)


# ----------------------------------------------------------------------------------------------
# Heads for pre-training: features (B, C, s, s) -> per-cell predictions at the same resolution
# ----------------------------------------------------------------------------------------------

class ScoreMapHead(nn.Sequential):
    """Keypoint score maps: features (B, in_channels, s, s) -> (B, num_keypoints, s, s).

    A 3 x 3 conv-BN-ReLU, then a 1 x 1 convolution to one map per keypoint (a heatmap whose peak
    is the keypoint, compared with Gaussian targets by a mean squared error).
    """

    def __init__(self, in_channels: int, num_keypoints: int = NUM_KEYPOINTS):
        super().__init__(conv_bn_relu(in_channels, in_channels), nn.Conv2d(in_channels, num_keypoints, 1))


class MaskHead(nn.Sequential):
    """Hand mask: features (B, in_channels, s, s) -> logits (B, 1, s, s), hand where > 0.

    A 3 x 3 conv-BN-ReLU, then a 1 x 1 convolution to one logit per cell (trained with a binary
    cross-entropy against the mask at the feature resolution).
    """

    def __init__(self, in_channels: int):
        super().__init__(conv_bn_relu(in_channels, in_channels), nn.Conv2d(in_channels, 1, 1))


# --------------------------------------------------------------------------------------------
# Score maps: the targets and the loss every heatmap method shares
# --------------------------------------------------------------------------------------------

# The paper's target (Zimmermann & Brox) is exp(-d^2 / sigma^2) with sigma = 25 px on a 256 px crop
# and 32 x 32 maps; in the usual form exp(-d^2 / (2 s^2)) that is s = 17.7 px = 2.2 cells of 8 px. We
# use 2.5 cells: measured, the maps learn faster with it than with 1.5 cells (2D error after 1000
# quick steps 10.6 px instead of 12.0 px), and the argmax still finds the peak.
SCORE_MAP_SIGMA_CELLS = 2.5


def score_map_size(image_size: int) -> int:
    """Side of the score maps (and features) for square images of ``image_size`` px (``ENCODER_STRIDE``)."""
    if image_size % (2 * ENCODER_STRIDE) != 0:
        raise ValueError(f"image_size: expected a multiple of {2 * ENCODER_STRIDE} pixels, got {image_size}")
    return image_size // ENCODER_STRIDE


def score_map_targets(keypoints_2d: torch.Tensor, visibility: torch.Tensor, image_size) -> torch.Tensor:
    """Gaussian score maps (B, 21, S/4, S/4) of keypoints (B, 21, 2) px in (S, S) images, zero where
    invisible or outside; sigma = ``SCORE_MAP_SIGMA_CELLS`` cells (``ENCODER_STRIDE`` px each)."""
    height, width = check_image_size(image_size)
    maps = (score_map_size(height), score_map_size(width))
    return gaussian_heatmaps(keypoints_2d, (height, width), maps, SCORE_MAP_SIGMA_CELLS * ENCODER_STRIDE, visibility)


def score_map_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k v_k sqrt(mean_pixels (c_hat_k - c_k)^2) / (sum_k v_k + 0.001), batch mean (Zimmermann & Brox).

    Args:
        predicted, target: (B, 21, h, w).
        weights: (B, 21) v_k (visibility).

    Returns:
        scalar tensor.
    """
    rms = ((predicted - target) ** 2).mean(dim=(-2, -1)).clamp_min(1e-12).sqrt()        # (B, 21)
    return ((weights * rms).sum(-1) / (weights.sum(-1) + 0.001)).mean()


def mask_loss(mask_logits: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of hand-mask logits (B, 1, h, w) against the true mask (B, H, W), read
    at the logits' resolution (area average), over samples with ``has_mask`` (B,)."""
    target = F.adaptive_avg_pool2d(mask[:, None], mask_logits.shape[-2:])                 # (B, 1, h, w)
    per_sample = F.binary_cross_entropy_with_logits(mask_logits, target, reduction="none").mean(dim=(1, 2, 3))
    weights = has_mask.float()
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


# The soft-argmax's sharpness on score maps with values in [0, 1]: the ~1000 background cells of a
# 32 x 32 map weigh exp(0) each, the ~40 cells of the peak exp(20 x ~0.6); the background pulls less
# than a tenth of a cell.
COORDINATE_BETA = 20.0


def coordinate_loss(score_maps: torch.Tensor, keypoints_2d: torch.Tensor, weights: torch.Tensor,
                    image_size) -> torch.Tensor:
    """Mean |soft-argmax(score map) - keypoint| over visible keypoints, in units of the image side.

    The score-map loss rewards the right shape everywhere on the map, even when the peak is in the
    wrong place; this term pulls the peak itself towards the keypoint ("integral regression",
    ``heatmap_soft_argmax`` with ``COORDINATE_BETA``).

    Args:
        score_maps: (B, 21, h, w).
        keypoints_2d: (B, 21, 2) pixels.
        weights: (B, 21) visibility.
        image_size: (H, W) of the images, or one int.

    Returns:
        scalar tensor.
    """
    height, width = check_image_size(image_size)
    predicted = heatmap_soft_argmax(score_maps, (height, width), COORDINATE_BETA)          # (B, 21, 2)
    error = (predicted - torch.nan_to_num(keypoints_2d)).abs().sum(-1) / max(height, width)  # (B, 21)
    return (weights * error).sum() / weights.sum().clamp_min(1.0)


def keypoints_from_score_maps(score_maps: torch.Tensor, image_size) -> torch.Tensor:
    """2D keypoints (B, 21, 2), pixels: the argmax of each map after bilinear upsampling to the image."""
    size = check_image_size(image_size)
    return heatmap_argmax(F.interpolate(score_maps, size=size, mode="bilinear", align_corners=False), size)


# --------------------------------------------------------------------------------------------
# The backbone as a method: pre-trained once, shipped, and loaded by every image method
# --------------------------------------------------------------------------------------------

# The shipped backbone's architecture: every image method builds its encoder with these.
ENCODER = "hourglass"
ENCODER_WIDTH = 1.0


class HandEncoder(nn.Module):
    """The shared backbone: an encoder to 1/4 resolution with a score-map head and a mask head.

    Args:
        encoder: a kind of ``ENCODERS``.
        width: its width multiplier.
    """

    def __init__(self, encoder: str = ENCODER, width: float = ENCODER_WIDTH):
        super().__init__()
        self.encoder = build_encoder(encoder, width)
        self.score_map_head = ScoreMapHead(self.encoder.out_channels)
        self.mask_head = MaskHead(self.encoder.out_channels)

    @property
    def out_channels(self) -> int:
        return self.encoder.out_channels

    def forward(self, image: torch.Tensor) -> dict:
        """image (B, 3, S, S) in [0, 1] -> {"features": (B, C, S/4, S/4), "score_maps": (B, 21, S/4, S/4),
        "mask_logits": (B, 1, S/4, S/4)}."""
        check_images(image)
        features = self.encoder(image)
        return {"features": features, "score_maps": self.score_map_head(features),
                "mask_logits": self.mask_head(features)}


def load_pretrained(encoder: HandEncoder) -> HandEncoder:
    """Load the shipped backbone's weights (``backbone-full.pt``) into ``encoder``, in place.

    Raises:
        FileNotFoundError: no shipped backbone (train it: ``python -m handlib train backbone --profile full``).
        ValueError: ``encoder`` is not of the shipped architecture (``ENCODER``, ``ENCODER_WIDTH``).
    """
    from handlib.checkpoints import find_checkpoint, read_checkpoint

    state = read_checkpoint(find_checkpoint("backbone", "full"), "cpu")
    weights = {key.removeprefix("network."): value for key, value in state["model"].items()}
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as error:
        raise ValueError(f"the shipped backbone is a {state['run']['config']['encoder']} encoder of width "
                         f"{state['run']['config']['width']}; build the HandEncoder with those ({error})") from None
    return encoder


@dataclass(frozen=True)
class BackboneConfig(ImageTraining):
    """One run of the backbone's pre-training (data and schedule: ``methods.ImageTraining``).

    Attributes:
        encoder, width: the architecture (``ENCODERS``; the shipped one: ``ENCODER``, ``ENCODER_WIDTH``).
        mask_weight: weight of the mask loss beside the score-map loss.
        coordinate_weight: weight of the coordinate loss (``coordinate_loss``) beside it; 0 = none.
    """
    encoder: str = ENCODER
    width: float = ENCODER_WIDTH
    lr: float = 2e-3
    mask_weight: float = 1.0
    coordinate_weight: float = 1.0


class Backbone(nn.Module):
    """The backbone's training model: a ``HandEncoder`` built from a ``BackboneConfig``."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        self.network = HandEncoder(config.encoder, config.width)

    def forward(self, image: torch.Tensor) -> dict:
        return self.network(image)


def backbone_loss(model: Backbone, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """L = score-map loss (visible keypoints) + mask_weight * mask BCE (samples with a mask)
    + coordinate_weight * coordinate loss (visible keypoints)."""
    config, size = model.config, tuple(batch["image"].shape[-2:])
    out = model(batch["image"])
    targets = score_map_targets(batch["keypoints_2d"], batch["visibility"], size)
    terms = {"score_maps": score_map_loss(out["score_maps"], targets, batch["visibility"]),
             "mask": mask_loss(out["mask_logits"], batch["mask"], batch["has_mask"])}
    total = terms["score_maps"] + config.mask_weight * terms["mask"]
    if config.coordinate_weight > 0:
        terms["coordinates"] = coordinate_loss(out["score_maps"], batch["keypoints_2d"], batch["visibility"], size)
        total = total + config.coordinate_weight * terms["coordinates"]
    return total, terms


def backbone_stages(config: BackboneConfig) -> list[Stage]:
    return [image_stage(config, backbone_loss, "keypoints_and_mask")]


@torch.no_grad()
def backbone_predict(model: Backbone, batch: dict, config: BackboneConfig) -> Prediction:
    """2D keypoints from the score maps (argmax); no 3D. Extras: "mask" (B, S, S) hand probability."""
    image = batch["image"]
    out = model(image)
    mask = F.interpolate(out["mask_logits"], size=image.shape[-2:], mode="bilinear", align_corners=False)
    return Prediction(keypoints_2d=keypoints_from_score_maps(out["score_maps"], tuple(image.shape[-2:])),
                      extras={"mask": mask[:, 0].sigmoid(), "score_maps": out["score_maps"]})


METHOD = Method(
    name="backbone",
    description="the shared image encoder: 2D score maps and a hand mask, pre-trained on synthetic hands",
    configs={"quick": BackboneConfig(checkpoint_every=100),
             # About 40 minutes on a 2-core CPU (0.9 s a step): 3 passes over 24 576 rendered hands.
             "full": BackboneConfig(train_samples=24_576, test_samples=512, steps=2400, batch_size=32,
                                    lr=2e-3, milestones=(1800,), checkpoint_every=200)},
    build_model=Backbone, stages=backbone_stages, predict=backbone_predict, test_data=synthetic_test_set,
    alignment="root")
