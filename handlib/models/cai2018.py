"""Chapter 3: Cai, Ge, Cai & Yuan, "Weakly-supervised 3D Hand Pose Estimation from Monocular RGB
Images", ECCV 2018.

3D labels are expensive: someone has to fit a hand to every frame. A depth camera next to the
colour camera gives a depth map of every frame for free. Cai et al. train the 3D network with
full labels where there are some, and elsewhere let the depth map supervise it, through a
*learned* renderer:

1. A **2D network** predicts the 21 keypoints' heatmaps from the image.
2. A **3D regressor** takes the heatmaps and the image features and outputs the 21 joints,
   root-relative and scale-normalised: J = (w - w_root) / s.
3. The **depth regulariser** G (fully connected layers, then transposed convolutions) renders a
   depth image from joints. It is trained first, on synthetic (3D pose, depth map) pairs from the
   renderer, then frozen. On an image with a depth map D and no 3D label it supervises the
   regressor:   L_dep = || G(J_hat) - D ||_1  over the hand's pixels.

The loss of the image stage (weights: ``Cai2018Config``):

    L = L_2D + lambda_3D [has 3D] L_3D + lambda_dep [has depth] L_dep

The chapter's experiment hides the 3D labels of most training images (``label_split``: the
labelled part keeps 2D + 3D + depth, the rest 2D + depth) and compares training with and without
L_dep at 1, 5, 25 and 100 % of the labels (the variants ``labels1``, ``labels1_nodepth``, ...;
``benchmarks/cai_label_fraction.py``).

No official code exists (reference/methods.md section 5): the structure follows the paper's text,
the sizes and weights are ours. Differences from the paper, so that it trains on a laptop CPU:

* The 2D network is the course's shared backbone (``handlib.models.backbone``, pre-trained on
  synthetic hands and shipped): its score-map head gives the heatmaps, fine-tuned here by L_2D.
  The 3D losses train the regressor alone (``Cai2018Config.end_to_end``: with few labels, the
  paper's end-to-end training spoils the shared 2D features at our budgets).
* Depth maps are compared at a quarter of the crop (32 x 32 for 128 px crops), as depth relative
  to the median depth of the hand's pixels, in units of ``DEPTH_UNIT`` (see ``depth_targets``).
* G also gets the 2D keypoints (in crop units): the crops are cut around the hand with a random
  margin and shift, so a root-relative pose alone does not say where the hand lies in the crop.
  The 2D tells G *where* each joint is; the 3D joints tell it *how deep*, which is what an RGB
  image leaves ambiguous and the depth map measures.
* The "depth camera" is the renderer's depth with a sensor's flaws drawn over it
  (``handlib.data.depth_sensor``: noise growing as z^2, holes at edges, 1 mm steps); G learns from
  the clean renders.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from handlib import methods
from handlib.data import synth
from handlib.data.depth_sensor import simulate_depth_sensor
from handlib.methods import (ImageTraining, LossContext, Method, Prediction, Schedule, Stage, Variant, image_stage,
                             synthetic_test_set)
from handlib.models import backbone
from handlib.models.backbone import conv_bn_relu, keypoints_from_score_maps, score_map_loss, score_map_size, \
    score_map_targets
from handlib.models.zimmermann2017 import normalized_keypoints
from handlib.skeleton import NUM_KEYPOINTS

# Depth targets are in units of the mean length of the scale bone (middle MCP-PIP,
# ``skeleton.SCALE_BONE``) of the synthetic training hands: 42.9 +- 3.0 mm (measured on the 2048
# quick training hands). The joints are in units of each hand's own bone, which a weakly labelled
# image does not give (no 3D); with the mean bone the two units agree to about 7 %.
DEPTH_UNIT = 0.0429
# The synthetic (pose, depth) pairs G learns from: the "val" split of the renderer, so that they
# are never the training images whose 3D labels the experiment hides.
DEPTH_PAIRS_SPLIT = "val"


# --------------------------------------------------------------------------------------------
# Depth targets and the label split
# --------------------------------------------------------------------------------------------

def depth_targets(depth: torch.Tensor, size: int, min_coverage: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """A depth map as G's target: relative depth on a size x size grid, and where it is known.

        D(cell) = (mean depth of the cell's hand pixels - median depth of all hand pixels) / DEPTH_UNIT

    The reference is the median of the hand's pixels, not the root joint's depth: without a 3D
    label the wrist's depth is unknown, and the median is what any depth map gives, robust to the
    sensor's holes and noise. G learns the offset between the two from the pose.

    Args:
        depth: (B, H, W) metres, 0 where there is no reading (off the hand, or a sensor hole).
        size: side of the output grid (H and W multiples of it, e.g. 128 -> 32).
        min_coverage: a cell is known when at least this fraction of its pixels read.

    Returns:
        (target (B, size, size) in ``DEPTH_UNIT``s, 0 where unknown; known (B, size, size) float 0/1).
    """
    if depth.ndim != 3 or depth.shape[-1] % size or depth.shape[-2] % size:
        raise ValueError(f"depth: expected shape (B, H, W) with H and W multiples of size={size}, "
                         f"got {tuple(depth.shape)}")
    reads = (depth > 0).float()
    reference = torch.where(reads > 0, depth, torch.nan).flatten(1).nanmedian(dim=1).values     # (B,) NaN: no reading
    coverage = F.adaptive_avg_pool2d(reads[:, None], size)[:, 0]                                # (B, s, s)
    cell_depth = F.adaptive_avg_pool2d((depth * reads)[:, None], size)[:, 0] / coverage.clamp_min(1e-6)
    known = (coverage >= min_coverage) & torch.isfinite(reference)[:, None, None]
    target = (cell_depth - torch.nan_to_num(reference)[:, None, None]) / DEPTH_UNIT
    return torch.where(known, target, torch.zeros_like(target)), known.float()


def label_split(num_samples: int, fraction: float, seed: int) -> torch.Tensor:
    """Which training samples keep their 3D labels: the first round(fraction N) of a seeded permutation.

    The same (num_samples, seed) gives the same permutation, so the split is reproducible, and a
    smaller fraction's labelled samples are among a larger one's (1 % within 5 % within 25 %).

    Args:
        num_samples: N, the size of the training set.
        fraction: in [0, 1]; any fraction > 0 keeps at least one sample.
        seed: the permutation's seed.

    Returns:
        (N,) bool, True where the sample keeps its 3D label.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: expected a fraction of the training samples in [0, 1], got {fraction!r}")
    count = max(round(fraction * num_samples), 1 if fraction > 0 else 0)
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(int(seed)))
    labelled = torch.zeros(num_samples, dtype=torch.bool)
    labelled[order[:count]] = True
    return labelled


class LabelSplit(Dataset):
    """A training set whose 3D labels are hidden outside ``label_split``: there ``has_3d`` is False
    and ``keypoints_3d`` NaN (the 2D keypoints, the mask and the depth map stay).

    Attributes:
        dataset: the wrapped Dataset of sample dicts.
        labelled: (N,) bool, the samples that keep their 3D labels.
    """

    def __init__(self, dataset: Dataset, fraction: float, seed: int):
        self.dataset, self.labelled = dataset, label_split(len(dataset), fraction, seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index) -> dict:
        sample = self.dataset[index]
        if self.labelled[index]:
            return sample
        return {**sample, "has_3d": torch.zeros_like(torch.as_tensor(sample["has_3d"])),
                "keypoints_3d": torch.full_like(sample["keypoints_3d"], torch.nan)}


# --------------------------------------------------------------------------------------------
# Config and networks
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cai2018Config(ImageTraining):
    """One run of Cai et al. on the course's platform.

    Attributes:
        encoder, encoder_width, pretrained_backbone: the shared backbone (``backbone.ENCODER``...), its
            score-map head the 2D network, started from the shipped weights.
        end_to_end: the 3D losses (L_3D, L_dep) train the 2D network too, through the heatmaps and
            features the regressor reads, as in the paper. False (ours): they train the regressor
            alone and the 2D network learns from L_2D only. Measured at 200 steps on the quick data with 5 % of
            the labels: end to end, the 2D error grows from 19 to 31 px (a batch's one or two
            labelled hands pull hard on the shared features) and the 3D EPE is 100 mm; detached, the
            2D error falls to 18 px and the 3D EPE is 79 mm.
        regressor_widths: the 3D regressor's stride-2 convolutions on [heatmaps, features].
        regressor_hidden: its fully connected layer before the 63 outputs.
        depth_size: side of the depth maps G renders and L_dep compares (a multiple of 8).
        regulariser_hidden: G's fully connected sizes; regulariser_widths: channels of its three
            transposed convolutions (each doubles the side, from depth_size / 8).
        depth_pairs: synthetic (pose, depth) pairs G learns from (``depth_pair_set``).
        regulariser_steps, regulariser_batch_size, regulariser_lr: G's stage (the learning rate drops
            tenfold for its last quarter). Measured on 4096 pairs, G's L1 on the sensor depth of the
            test images (``DEPTH_UNIT``s): 0.49 predicting 0, 0.32 after 1000 steps (the mean pose
            instead of the true one: 0.69; the true one mirrored in depth: 0.73), 0.30 after 2000.
            Four times wider layers (0.31) or coordinate channels before each transposed convolution
            (0.32) do no better in 1000 steps.
        label_fraction: the fraction of training images that keep their 3D labels (``label_split``).
        depth_supervision: use L_dep on the images with a depth map (the chapter's ablation).
        weight_3d, weight_depth: lambda_3D and lambda_dep (L_2D has weight 1). The paper's are not
            known. lambda_3D = 1 as in chapter 2's direct lifting (same units: bone lengths squared).
            lambda_dep = 1 makes the two pulls on the predicted joints about equally strong: measured
            with a G of 2000 steps on 64 training images, joints 0.3 (1.0) bone lengths off the truth get a
            gradient of norm 0.018 (0.022) from L_dep and 0.009 (0.031) from L_3D. So a depth map
            counts about as much as a 3D label where both exist, and is the only 3D signal where the
            label is hidden. L_2D's weight 1 is the backbone's own.
        depth_sensor: draw a depth camera's flaws over the training depth maps (``handlib.data.
            depth_sensor``); False compares with the perfect renders.
    """
    encoder: str = backbone.ENCODER
    encoder_width: float = backbone.ENCODER_WIDTH
    pretrained_backbone: bool = True
    end_to_end: bool = False
    regressor_widths: tuple = (64, 96, 128)
    regressor_hidden: int = 256
    depth_size: int = 32
    regulariser_hidden: tuple = (256, 512)
    regulariser_widths: tuple = (64, 32, 16)
    depth_pairs: int = 4096
    regulariser_steps: int = 1000
    regulariser_batch_size: int = 64
    regulariser_lr: float = 2e-3
    label_fraction: float = 1.0
    depth_supervision: bool = True
    weight_3d: float = 1.0
    weight_depth: float = 1.0
    depth_sensor: bool = True

    def __post_init__(self):
        if not 0.0 <= self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction: expected a fraction in [0, 1], got {self.label_fraction!r}")
        if self.depth_size < 8 or self.depth_size % 8:
            raise ValueError(f"depth_size: expected a multiple of 8 pixels, got {self.depth_size!r}")
        if self.image_size % self.depth_size:
            raise ValueError(f"depth_size: expected a divisor of image_size={self.image_size}, got {self.depth_size}")

    @property
    def score_map_size(self) -> int:
        return score_map_size(self.image_size)


class PoseRegressor(nn.Module):
    """The 3D regressor: [heatmaps, image features] (B, 21 + C, s, s) -> joints (B, 21, 3), normalised.

    Stride-2 conv-BN-ReLU blocks down to s / 8, flatten, one hidden fully connected layer, then the
    63 coordinates of J = (w - w_root) / s_bone.
    """

    def __init__(self, in_channels: int, widths, hidden: int, map_size: int):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            layers.append(conv_bn_relu(channels, width, stride=2))
            channels = width
        self.convs = nn.Sequential(*layers)
        side = -(-map_size // 2 ** len(widths))
        self.fc = nn.Sequential(nn.Linear(channels * side * side, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, NUM_KEYPOINTS * 3))

    def forward(self, score_maps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        x = self.convs(torch.cat([score_maps, features], dim=1)).flatten(1)             # (B, C' (s/8)^2)
        return self.fc(x).view(-1, NUM_KEYPOINTS, 3)                                    # (B, 21, 3)


class DepthRegulariser(nn.Module):
    """G: joints -> a depth image of the hand, D_hat = G(J, u).

    Input: the normalised joints J (B, 21, 3) and the 2D keypoints u (B, 21, 2) in crop units
    ([0, 1] across the crop: pixels / image side), 105 numbers. Fully connected layers
    (LeakyReLU) to a (C, d/8, d/8) map, then three 4 x 4 transposed convolutions of stride 2 to
    (1, d, d): the relative depth ``depth_targets`` defines, in ``DEPTH_UNIT``s. No BatchNorm: G is
    frozen in the image stage, and nothing of it should change there.
    """

    def __init__(self, hidden=(256, 512), widths=(64, 32, 16), depth_size: int = 32):
        super().__init__()
        self.start, self.widths = depth_size // 8, widths
        layers, features = [], NUM_KEYPOINTS * 5
        for size in hidden:
            layers += [nn.Linear(features, size), nn.LeakyReLU(0.1)]
            features = size
        layers += [nn.Linear(features, widths[0] * self.start ** 2), nn.LeakyReLU(0.1)]
        self.fc = nn.Sequential(*layers)
        upsampling = []
        for channels, out in zip(widths, [*widths[1:], None]):
            upsampling.append(nn.ConvTranspose2d(channels, out or 1, 4, stride=2, padding=1))
            if out is not None:
                upsampling.append(nn.LeakyReLU(0.1))
        self.upsampling = nn.Sequential(*upsampling)

    def forward(self, joints: torch.Tensor, keypoints_uv: torch.Tensor) -> torch.Tensor:
        """joints (B, 21, 3) normalised, keypoints_uv (B, 21, 2) crop units -> depth (B, d, d)."""
        x = self.fc(torch.cat([joints.flatten(1), keypoints_uv.flatten(1)], dim=1))      # (B, C (d/8)^2)
        x = x.view(-1, self.widths[0], self.start, self.start)                           # (B, C, d/8, d/8)
        return self.upsampling(x)[:, 0]                                                  # (B, d, d)


class Cai2018(nn.Module):
    """The 2D network (the shared backbone), the 3D regressor and the depth regulariser G.

    Args:
        config: ``Cai2018Config``.
    """

    def __init__(self, config: Cai2018Config = Cai2018Config()):
        super().__init__()
        self.config = config
        self.backbone = backbone.HandEncoder(config.encoder, config.encoder_width)
        self.regressor = PoseRegressor(NUM_KEYPOINTS + self.backbone.out_channels, config.regressor_widths,
                                       config.regressor_hidden, config.score_map_size)
        self.depth_regulariser = DepthRegulariser(config.regulariser_hidden, config.regulariser_widths,
                                                  config.depth_size)

    def forward(self, image: torch.Tensor) -> dict:
        """image (B, 3, S, S) in [0, 1] -> {"score_maps": (B, 21, S/4, S/4), "keypoints_3d": (B, 21, 3)
        root-relative in units of the scale bone}. Unless ``config.end_to_end``, the regressor reads
        the heatmaps and features detached: the 3D losses do not reach the 2D network."""
        size = self.config.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            raise ValueError(f"image: expected shape (B, 3, {size}, {size}) for this model (config.image_size), "
                             f"got {tuple(image.shape)}; crop or resize the images "
                             "(handlib.data.datasets.crop_to_hand)")
        encoded = self.backbone(image)
        score_maps, features = encoded["score_maps"], encoded["features"]
        if not self.config.end_to_end:
            score_maps, features = score_maps.detach(), features.detach()
        joints = self.regressor(score_maps, features)                                   # (B, 21, 3)
        return {"score_maps": encoded["score_maps"], "keypoints_3d": joints}

    def render_depth(self, joints: torch.Tensor, keypoints_2d: torch.Tensor) -> torch.Tensor:
        """G(J, u): joints (B, 21, 3) normalised and 2D keypoints (B, 21, 2) pixels of the crop ->
        relative depth (B, d, d) in ``DEPTH_UNIT``s (``depth_targets``)."""
        return self.depth_regulariser(joints, torch.nan_to_num(keypoints_2d) / self.config.image_size)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def depth_loss(rendered: torch.Tensor, target: torch.Tensor, known: torch.Tensor,
               has_depth: torch.Tensor) -> torch.Tensor:
    """L_dep = || G(J) - D ||_1 over the known cells (the hand's), mean per sample, then over the
    samples with a depth map.

    Args:
        rendered: (B, d, d) G's depth. target, known: ``depth_targets``'s (B, d, d).
        has_depth: (B,) the samples that have a depth map.

    Returns:
        scalar tensor, 0 when no sample has a known cell.
    """
    per_sample = ((rendered - target).abs() * known).sum((-2, -1)) / known.sum((-2, -1)).clamp_min(1.0)  # (B,)
    weights = has_depth.float() * (known.sum((-2, -1)) > 0).float()
    return _weighted_mean(per_sample, weights)


def regulariser_loss(model: Cai2018, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """G's stage: L1 between G(true joints, true 2D) and the clean rendered depth, on the hand's cells."""
    target, known = depth_targets(batch["depth"], model.config.depth_size)
    has_pair = batch["has_depth"].bool() & batch["has_3d"].bool()
    joints = normalized_keypoints(torch.nan_to_num(batch["keypoints_3d"]))
    keypoints_uv = torch.nan_to_num(batch["keypoints_2d"]) / batch["depth"].shape[-1]     # crop units
    rendered = model.depth_regulariser(joints, keypoints_uv)
    loss = depth_loss(rendered, target, known, has_pair)
    return loss, {"depth": loss}


def cai2018_loss(model: Cai2018, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """L = L_2D + weight_3d [has 3D] L_3D + weight_depth [has depth] L_dep (``Cai2018Config``).

    * L_2D: the score maps' loss (``backbone.score_map_loss``, visible keypoints).
    * L_3D: mean over joints and axes of (J_hat - J)^2, J normalised root-relative, samples with ``has_3d``.
    * L_dep: ``depth_loss`` of G(J_hat, true 2D) against the sample's depth map, read through the
      depth sensor's flaws (drawn from ``context.generator``), samples with ``has_depth``. G is
      frozen: its stage trained it, and this stage's optimiser does not hold its parameters.

    Returns:
        (total, {"score_maps", "joints_3d", "depth"}); "depth" is reported also when it is not used.
    """
    config, image = model.config, batch["image"]
    out = model(image)
    targets_2d = score_map_targets(batch["keypoints_2d"], batch["visibility"], tuple(image.shape[-2:]))
    loss_2d = score_map_loss(out["score_maps"], targets_2d, batch["visibility"])
    joints = normalized_keypoints(torch.nan_to_num(batch["keypoints_3d"]))
    error_3d = ((out["keypoints_3d"] - joints) ** 2).mean(dim=(-2, -1))                  # (B,)
    loss_3d = _weighted_mean(error_3d, batch["has_3d"].float())
    depth = simulate_depth_sensor(batch["depth"], context.generator) if config.depth_sensor else batch["depth"]
    target, known = depth_targets(depth, config.depth_size)
    rendered = model.render_depth(out["keypoints_3d"], batch["keypoints_2d"])
    loss_depth = depth_loss(rendered, target, known, batch["has_depth"])
    total = loss_2d + config.weight_3d * loss_3d
    if config.depth_supervision:
        total = total + config.weight_depth * loss_depth
    return total, {"score_maps": loss_2d, "joints_3d": loss_3d, "depth": loss_depth}


# --------------------------------------------------------------------------------------------
# Prediction and the figure of G at work
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def cai2018_predict(model: Cai2018, batch: dict, config: Cai2018Config | None = None) -> Prediction:
    """Keypoints from images: 2D from the heatmaps, 3D from the regressor; G's depth as an extra.

    Args:
        model: a ``Cai2018``.
        batch: needs "image" (B, 3, S, S) in [0, 1].
        config: unused (the model holds its config); the ``Method.predict`` signature.

    Returns:
        ``Prediction``: keypoints_2d (B, 21, 2) pixels of the crop (argmax of the upsampled heatmaps),
        keypoints_3d (B, 21, 3) root-relative in units of the middle MCP-PIP bone (frame "normalized":
        the method's alignment "gt_root_scale" multiplies them by the true bone); extras "score_maps"
        (B, 21, S/4, S/4) and "depth" (B, d, d) G's rendering of the predicted joints at the
        predicted 2D keypoints (``DEPTH_UNIT``s relative to the hand's median depth).
    """
    image = batch["image"]
    out = model(image)
    keypoints_2d = keypoints_from_score_maps(out["score_maps"], tuple(image.shape[-2:]))
    depth = model.render_depth(out["keypoints_3d"], keypoints_2d)
    return Prediction(keypoints_2d=keypoints_2d, keypoints_3d=out["keypoints_3d"], frame="normalized",
                      extras={"score_maps": out["score_maps"], "depth": depth})


@torch.no_grad()
def depth_views(model: Cai2018, batch: dict, generator: torch.Generator | None = None) -> dict:
    """G at work, for the chapter's figure: the sensor's depth, G of the true joints, G of the predicted ones.

    Args:
        model: a trained ``Cai2018`` (put in eval mode here).
        batch: sample dicts with image, depth, keypoints_2d and keypoints_3d, collated.
        generator: draws the depth sensor's flaws (None: torch's global generator).

    Returns:
        dict of (B, d, d) maps in ``DEPTH_UNIT``s: "sensor" (the target D), "known" (where D is known),
        "true_joints" G(J, u), "predicted_joints" G(J_hat, u), both at the true 2D keypoints u.
    """
    model.eval()
    measured = simulate_depth_sensor(batch["depth"], generator)
    target, known = depth_targets(measured, model.config.depth_size)
    joints = normalized_keypoints(torch.nan_to_num(batch["keypoints_3d"]))
    predicted = model(batch["image"])["keypoints_3d"]
    return {"sensor": target, "known": known, "true_joints": model.render_depth(joints, batch["keypoints_2d"]),
            "predicted_joints": model.render_depth(predicted, batch["keypoints_2d"])}


# --------------------------------------------------------------------------------------------
# The method: its two stages and the label-fraction variants
# --------------------------------------------------------------------------------------------

def depth_pair_set(config: Cai2018Config, seed: int) -> Dataset:
    """The synthetic (3D pose, depth map) pairs G learns from: ``config.depth_pairs`` renders of the
    "val" split (never the training images), at the smallest size the renderer makes (16 px) or
    ``depth_size`` if larger, cached. Their images are not used."""
    size = max(config.depth_size, 16)
    knobs = {**dict(config.synth_knobs), "image_size": size}
    return synth.cached_set(DEPTH_PAIRS_SPLIT, config.depth_pairs, seed=seed, image_size=size,
                            cache_dir=methods.CACHE_DIR, config=synth.make_config(**knobs), workers=0)


def _not_the_regulariser(model: Cai2018):
    return (p for name, p in model.named_parameters() if not name.startswith("depth_regulariser."))


def _stages(config: Cai2018Config) -> list[Stage]:
    regulariser = Stage("depth_regulariser",
                        Schedule(config.regulariser_steps, config.regulariser_batch_size, config.regulariser_lr,
                                 milestones=(config.regulariser_steps * 3 // 4,),
                                 checkpoint_every=max(config.regulariser_steps, 1)),
                        lambda seed: depth_pair_set(config, seed), regulariser_loss,
                        parameters=lambda model: model.depth_regulariser.parameters())
    images = image_stage(config, cai2018_loss)
    rendered = images.data                                   # seed -> the cached synthetic training set
    images = dataclasses.replace(images, data=lambda seed: LabelSplit(rendered(seed), config.label_fraction, seed),
                                 parameters=_not_the_regulariser)
    return [regulariser, images]


def _initialize(model: Cai2018, config: Cai2018Config) -> None:
    if config.pretrained_backbone:
        backbone.load_pretrained(model.backbone)


CONFIGS = {
    # Live in the notebook and in CI: a few minutes on a laptop CPU, from the shipped backbone.
    "quick": Cai2018Config(),
    # What ships: about an hour on one core of a 2-core CPU, from the shipped backbone.
    "full": Cai2018Config(train_samples=24_576, test_samples=512, steps=2400, batch_size=16, lr=1e-3,
                          milestones=(1800,), checkpoint_every=200, depth_pairs=16_384, regulariser_steps=6000,
                          regulariser_batch_size=64),
}

LABEL_FRACTIONS = {"labels1": 0.01, "labels5": 0.05, "labels25": 0.25}
# The arms of the chapter's experiment (benchmarks/cai_label_fraction.py trains and reports them; only
# the method itself, all labels with L_dep, ships).
VARIANTS = {"nodepth": Variant("all 3D labels, without the depth regulariser", {"depth_supervision": False},
                               ships=False)}
for _name, _fraction in LABEL_FRACTIONS.items():
    VARIANTS[_name] = Variant(f"3D labels on {_fraction:.0%} of the training images, depth on all",
                              {"label_fraction": _fraction}, ships=False)
    VARIANTS[f"{_name}_nodepth"] = Variant(f"3D labels on {_fraction:.0%} of the training images, no L_dep",
                                           {"label_fraction": _fraction, "depth_supervision": False}, ships=False)

METHOD = Method(
    name="cai2018",
    description="Cai et al. 2018: heatmaps + 3D regressor, weakly supervised by a learned joints-to-depth renderer",
    configs=CONFIGS, build_model=Cai2018, stages=_stages, predict=cai2018_predict, test_data=synthetic_test_set,
    alignment="gt_root_scale", initialize=_initialize, variants=VARIANTS)
