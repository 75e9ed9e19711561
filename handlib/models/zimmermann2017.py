"""Chapter 2: Zimmermann & Brox, "Learning to Estimate 3D Hand Pose from Single RGB Images", ICCV 2017.

The first deep network for 3D hand pose from one RGB image splits the problem in three:

1. **HandSegNet** finds the hand: a per-pixel hand / background classifier.
2. **PoseNet** localises the 21 keypoints in 2D as score maps (one heatmap per keypoint),
   refined over a few stages (as in Convolutional Pose Machines).
3. **PosePrior** lifts the score maps to 3D. It does not regress camera coordinates; it predicts
   the hand's shape in a *canonical frame* w_c and, separately, the *viewpoint* R that rotates
   the canonical hand into the camera: w_rel = R w_c. The 3D output is root-relative and
   normalised by the length of one bone, so metric 3D needs the true root and scale.

The "direct" variant regresses w_rel straight from the score maps; comparing the two is the
paper's lifting ablation (RHD median EPE 20.9 mm direct vs 18.8 mm canonical + viewpoint).

Differences from the paper, so the course trains in minutes (reference/methods.md section 4):

* Inputs are the synthetic samples, already centred on the hand, so the crop step after
  HandSegNet is left out (real images are cropped with ``handlib.data.datasets.crop_to_hand``).
* Image size: the ``quick`` profile uses 64 x 64 images and 16 x 16 score maps, the ``full``
  profile 128 x 128 and 32 x 32 (the paper: 256 x 256 crops, 32 x 32 maps). PoseNet pools twice
  (``POSENET_STRIDE`` = 4) instead of three times.
* Channel widths are smaller (``MODEL_CONFIGS``), and nothing is pre-trained (the paper starts
  from Convolutional Pose Machines' weights).
* BatchNorm after every convolution of HandSegNet and PoseNet (``ModelConfig.batch_norm``).
  Measured: without it, from scratch, PoseNet predicted all-zero maps for the whole 400-step quick
  run (2D error at chance level, 30.8 px on 128 px images).
* The score maps' Gaussian is 2.5 cells wide (``SCORE_MAP_SIGMA_CELLS``; the paper: 2.2 cells),
  and the learning rate is higher (2e-3 quick, 1e-3 full; the paper: 1e-5 to 1e-4 for days).
* The three networks are trained together with one loss. As in the paper, PosePrior learns from
  the ground-truth score maps (with 2D noise) and lifts PoseNet's maps at test time.
* The canonical frame holds a *right* hand (the course's hand) where the paper's holds a left one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handlib.data.heatmaps import gaussian_heatmaps, heatmap_argmax
from handlib.geometry import axis_angle_to_matrix
from handlib.render.camera import check_image_size
from handlib.skeleton import NUM_KEYPOINTS, SCALE_BONE, WRIST
from handlib.train import MethodSpec, TrainingProfile, register_method

# Course indices of the keypoints that define the canonical frame (RHD's 0, 12, 20 in the paper).
ROOT = WRIST                # 0: at the origin
ALIGN_KEYPOINT = 9          # middle MCP: on the +y axis
ROTATION_KEYPOINT = 17      # pinky MCP: in the xy plane (z = 0), x > 0

# PoseNet pools twice: score maps are 1/4 of the image (32 x 32 for 128 px, 16 x 16 for 64 px).
POSENET_STRIDE = 4
# The paper's target is exp(-d^2 / sigma^2) with sigma = 25 px on a 256 px crop and 32 x 32 maps; in
# the usual form exp(-d^2 / (2 s^2)) that is s = 17.7 px = 2.2 cells of 8 px. We use 2.5 cells
# (10 px on 64 px images): measured, PoseNet learns faster with it than with 1.5 cells (2D error
# after 1000 quick steps 10.6 px instead of 12.0 px), and the argmax still finds the peak.
SCORE_MAP_SIGMA_CELLS = 2.5
KEYPOINT_NOISE_FRACTION = 2.5 / 256   # the paper's uv noise of 2.5 px on 256 px, when training PosePrior


def score_map_size(image_size: int) -> int:
    """Side of PoseNet's score maps for square images of ``image_size`` pixels (``POSENET_STRIDE``)."""
    if image_size % (2 * POSENET_STRIDE) != 0:
        raise ValueError(f"image_size: expected a multiple of {2 * POSENET_STRIDE} pixels, got {image_size}")
    return image_size // POSENET_STRIDE


# --------------------------------------------------------------------------------------------
# The canonical frame
# --------------------------------------------------------------------------------------------

@dataclass
class CanonicalFrame:
    """A hand in its canonical frame, and what is needed to go back.

    Attributes:
        canonical: (B, 21, 3) root-relative, scale-normalised, rotated (and mirrored for left hands).
        rotation: (B, 3, 3) R with canonical = R (w - w_root) / s (before mirroring). Its transpose
            is the viewpoint: w_rel = R^T w_c.
        scale: (B,) s, the length of the middle MCP-PIP bone, in the units of the input.
        root: (B, 3) the root (wrist) position.
    """
    canonical: torch.Tensor
    rotation: torch.Tensor
    scale: torch.Tensor
    root: torch.Tensor


def _check_joints(keypoints_3d: torch.Tensor, name: str = "keypoints_3d") -> None:
    if keypoints_3d.ndim != 3 or keypoints_3d.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"{name}: expected shape (B, 21, 3), got {tuple(keypoints_3d.shape)}")


def _mirror_left(points: torch.Tensor, is_right) -> torch.Tensor:
    """Negate z of left hands (is_right == 0) so every canonical hand is a right hand."""
    if is_right is None:
        return points
    is_right = torch.as_tensor(is_right, dtype=points.dtype, device=points.device).reshape(-1, 1, 1)
    sign = torch.ones_like(points[:1, :1])
    sign[..., 2] = -1.0
    return torch.where(is_right > 0.5, points, points * sign)


def _root_relative(keypoints_3d: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(w - w_root) / s (B, 21, 3), the scale s (B,) (middle MCP-PIP bone) and the root (B, 3)."""
    _check_joints(keypoints_3d)
    root = keypoints_3d[:, ROOT]                                                        # (B, 3)
    parent, child = SCALE_BONE
    scale = (keypoints_3d[:, child] - keypoints_3d[:, parent]).norm(dim=-1)             # (B,)
    return (keypoints_3d - root[:, None]) / scale.clamp_min(eps)[:, None, None], scale, root


def canonical_frame(keypoints_3d: torch.Tensor, is_right=None, eps: float = 1e-8) -> CanonicalFrame:
    """Zimmermann & Brox's canonical frame of a hand (``utils/canonical_trafo.py``, course indices).

    1. w_rel = (w - w_wrist) / s, with s = |w_middle_MCP - w_middle_PIP| (``skeleton.SCALE_BONE``).
    2. Rotate so that the middle MCP lies on the +y axis, and the pinky MCP in the xy plane with
       x > 0. The rotation's rows are the new axes::

           y = w_rel[9] / |w_rel[9]|
           x = normalise(w_rel[17] - (w_rel[17] . y) y)       (Gram-Schmidt)
           z = x cross y                                      (det R = +1)
           canonical = R w_rel,  R = [x; y; z]

       The paper builds the same rotation from three angles (about z, x, y).
    3. Left hands (is_right = 0) are mirrored (z -> -z), so the canonical hand is always a right
       hand (the paper mirrors right hands to left ones instead).

    Args:
        keypoints_3d: (B, 21, 3), course order, any unit (metres in handlib).
        is_right: (B,) 1 for right hands, 0 for left, or None (all right).
        eps: guards the divisions.

    Returns:
        ``CanonicalFrame`` (canonical (B, 21, 3), rotation (B, 3, 3), scale (B,), root (B, 3)).

    Example:
        >>> frame = canonical_frame(torch.randn(2, 21, 3, generator=torch.Generator().manual_seed(0)))
        >>> frame.canonical[:, 9, [0, 2]].abs().max() < 1e-5   # the middle MCP is on the y axis
        tensor(True)
    """
    relative, scale, root = _root_relative(keypoints_3d, eps)                         # (B, 21, 3), (B,), (B, 3)
    y_axis = F.normalize(relative[:, ALIGN_KEYPOINT], dim=-1, eps=eps)                  # (B, 3)
    pinky = relative[:, ROTATION_KEYPOINT]
    x_axis = F.normalize(pinky - (pinky * y_axis).sum(-1, keepdim=True) * y_axis, dim=-1, eps=eps)
    z_axis = torch.cross(x_axis, y_axis, dim=-1)
    rotation = torch.stack([x_axis, y_axis, z_axis], dim=1)                             # (B, 3, 3), rows
    canonical = relative @ rotation.transpose(1, 2)                                     # (B, 21, 3)
    return CanonicalFrame(_mirror_left(canonical, is_right), rotation, scale, root)


def from_canonical_frame(canonical: torch.Tensor, rotation: torch.Tensor, is_right=None,
                         scale: torch.Tensor | None = None, root: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of ``canonical_frame``: w = s R^T unmirror(w_c) + w_root.

    Args:
        canonical: (B, 21, 3) canonical coordinates.
        rotation: (B, 3, 3) R of ``canonical_frame`` (so R^T is the viewpoint).
        is_right: (B,) or None (all right); left hands are un-mirrored first.
        scale: (B,) bone length; None keeps the normalised units.
        root: (B, 3); None keeps the result root-relative.

    Returns:
        (B, 21, 3) keypoints.
    """
    _check_joints(canonical, "canonical")
    if rotation.shape != (canonical.shape[0], 3, 3):
        raise ValueError(f"rotation: expected shape ({canonical.shape[0]}, 3, 3), got {tuple(rotation.shape)}")
    points = _mirror_left(canonical, is_right) @ rotation                               # (B, 21, 3)
    if scale is not None:
        points = points * scale[:, None, None]
    if root is not None:
        points = points + root[:, None]
    return points


def normalized_keypoints(keypoints_3d: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Root-relative, scale-normalised keypoints (w - w_wrist) / s: the target of the "direct" lifting.

    Args:
        keypoints_3d: (B, 21, 3).

    Returns:
        (B, 21, 3), in units of the middle MCP-PIP bone.
    """
    return _root_relative(keypoints_3d, eps)[0]


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the three networks (the paper's, for 256 px crops, in brackets).

    Attributes:
        segmentation_widths: HandSegNet conv widths per resolution [64, 128, 256, 512].
        pose_widths: PoseNet encoder widths per resolution [64, 128, 256, 512].
        convs_per_block: 3x3 convolutions per encoder resolution [2 to 4].
        encoding_width: channels of PoseNet's encoding f [128].
        pose_stages: PoseNet stages, the first plus refinements [3].
        refine_width, refine_kernel, refine_convs: refinement stage convolutions [128, 7, 5].
        prior_widths: PosePrior canonical stream widths [32, 64, 128], each twice (stride 1, 2).
        prior_hidden: canonical stream fully connected sizes [512, 512].
        view_widths: viewpoint stream widths [64, 128, 256].
        view_hidden: viewpoint stream fully connected sizes [256, 128].
        image_size: side of the input images in pixels [256]; score maps are a quarter of it.
        batch_norm: BatchNorm after every convolution of HandSegNet and PoseNet [no]. Not in the
            paper: from scratch, without pre-trained VGG weights, PoseNet without it predicts all-zero
            maps for the first thousands of steps (measured: chance-level 2D error after 400 steps).
    """
    segmentation_widths: tuple = (8, 16, 32)
    pose_widths: tuple = (16, 32, 64)
    convs_per_block: int = 2
    encoding_width: int = 32
    pose_stages: int = 2
    refine_width: int = 32
    refine_kernel: int = 5
    refine_convs: int = 2
    prior_widths: tuple = (8, 16, 32)
    prior_hidden: tuple = (128, 128)
    view_widths: tuple = (8, 16, 32)
    view_hidden: tuple = (64, 32)
    image_size: int = 64
    batch_norm: bool = True

    @property
    def score_map_size(self) -> int:
        """Side of the score maps (``score_map_size(image_size)``)."""
        return score_map_size(self.image_size)


MODEL_CONFIGS = {
    "quick": ModelConfig(),
    # 2.2 M parameters (a 9 MB checkpoint), 11 GFLOP per 128 px image and training step (forward and
    # backward). Wider PoseNets (refinement convs of 7 x 7 x 128, as in the paper, encoder to 256
    # channels) measured 15 M parameters and 7 times the work.
    "full": ModelConfig(segmentation_widths=(16, 32, 64, 128), pose_widths=(32, 64, 128), convs_per_block=2,
                        encoding_width=64, pose_stages=3, refine_width=64, refine_kernel=5, refine_convs=4,
                        prior_widths=(16, 32, 64), prior_hidden=(256, 256), view_widths=(16, 32, 64),
                        view_hidden=(128, 64), image_size=128),
}


def conv_block(in_channels: int, out_channels: int, count: int = 2, kernel: int = 3,
               batch_norm: bool = False) -> nn.Sequential:
    """``count`` x (conv kernel x kernel, same padding, [BatchNorm], ReLU)."""
    layers = []
    for i in range(count):
        layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel, padding=kernel // 2,
                                bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def vgg_encoder(widths, pool_after: int, convs_per_block: int, batch_norm: bool = False) -> nn.Sequential:
    """A VGG-like encoder: a ``conv_block`` per width, 2x2 max-pooling after the first ``pool_after``."""
    layers, channels = [], 3
    for i, width in enumerate(widths):
        layers.append(conv_block(channels, width, convs_per_block, batch_norm=batch_norm))
        if i < pool_after:
            layers.append(nn.MaxPool2d(2))
        channels = width
    return nn.Sequential(*layers)


class HandSegNet(nn.Module):
    """Hand segmentation: image (B, 3, H, W) -> logits (B, 2, H, W) (background, hand).

    VGG-like encoder to 1/8 resolution, two 1x1 convolutions, bilinear upsampling to the input.
    """

    def __init__(self, widths=(8, 16, 32), convs_per_block: int = 2, batch_norm: bool = True):
        super().__init__()
        self.encoder = vgg_encoder(widths, pool_after=3, convs_per_block=convs_per_block, batch_norm=batch_norm)
        self.head = nn.Sequential(nn.Conv2d(widths[-1], widths[-1], 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(widths[-1], 2, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.encoder(image))                                          # (B, 2, H/8, W/8)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


class PoseNet(nn.Module):
    """2D keypoints as score maps: image (B, 3, S, S) -> list of (B, 21, S/4, S/4), one per stage.

    An encoder to 1/4 resolution gives the encoding f; stage 1 predicts maps c_1 = g_1(f); every
    refinement stage sees the previous maps too: c_t = g_t([c_{t-1}, f]) (Convolutional Pose
    Machines). Every stage is supervised.
    """

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        encoding = config.encoding_width
        self.encoder = nn.Sequential(vgg_encoder(config.pose_widths, 2, config.convs_per_block, config.batch_norm),
                                     conv_block(config.pose_widths[-1], encoding, count=1,
                                                batch_norm=config.batch_norm))
        self.first_stage = nn.Sequential(nn.Conv2d(encoding, 4 * encoding, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(4 * encoding, NUM_KEYPOINTS, 1))
        width = config.refine_width
        self.refinements = nn.ModuleList(
            nn.Sequential(conv_block(encoding + NUM_KEYPOINTS, width, config.refine_convs, config.refine_kernel,
                                     batch_norm=config.batch_norm),
                          nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Conv2d(width, NUM_KEYPOINTS, 1))
            for _ in range(config.pose_stages - 1))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        encoding = self.encoder(image)                                                   # (B, E, H/4, W/4)
        maps = [self.first_stage(encoding)]                                             # (B, 21, H/4, W/4)
        for refine in self.refinements:
            maps.append(refine(torch.cat([maps[-1], encoding], dim=1)))
        return maps


class ScoreMapStream(nn.Module):
    """One stream of PosePrior: score maps (B, 21, s, s) + hand side (B,) -> vector (B, out).

    Three conv pairs (stride 1 then stride 2) to s/8 x s/8 (4 x 4 for the paper's 32 x 32), flatten,
    append the hand side as one-hot (left, right), fully connected layers with dropout, a linear output.
    """

    def __init__(self, widths, hidden, out_features: int, dropout: float, map_size: int = 32):
        super().__init__()
        layers, channels = [], NUM_KEYPOINTS
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.01),
                       nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.01)]
            channels = width
        self.convs = nn.Sequential(*layers)
        size = math.ceil(map_size / 2 ** len(widths))
        fc, features = [], channels * size * size + 2
        for width in hidden:
            fc += [nn.Linear(features, width), nn.LeakyReLU(0.01), nn.Dropout(dropout)]
            features = width
        self.fc = nn.Sequential(*fc, nn.Linear(features, out_features))

    def forward(self, score_maps: torch.Tensor, is_right: torch.Tensor) -> torch.Tensor:
        features = self.convs(score_maps).flatten(1)                                     # (B, C * 4 * 4)
        side = F.one_hot((is_right > 0.5).long(), 2).to(features.dtype)                  # (B, 2)
        return self.fc(torch.cat([features, side], dim=1))


class PosePrior(nn.Module):
    """The paper's lifting: canonical coordinates w_c and a viewpoint V, with w_rel = V w_c.

    Two ``ScoreMapStream``s on the same score maps: one predicts w_c (63 numbers), the other an
    axis-angle u (3 numbers) whose Rodrigues rotation is V.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        size = config.score_map_size
        self.canonical_stream = ScoreMapStream(config.prior_widths, config.prior_hidden, NUM_KEYPOINTS * 3, 0.2, size)
        self.viewpoint_stream = ScoreMapStream(config.view_widths, config.view_hidden, 3, 0.25, size)

    def forward(self, score_maps: torch.Tensor, is_right: torch.Tensor) -> dict:
        """score maps (B, 21, s, s), is_right (B,) -> dict.

        The canonical stream predicts w_c (B, 21, 3); the viewpoint stream an axis-angle u (B, 3)
        whose rotation (Rodrigues) is the viewpoint V = R^T, so w_rel = V unmirror(w_c).

        Returns:
            {"canonical": (B, 21, 3), "viewpoint": (B, 3, 3), "keypoints_3d": (B, 21, 3)
            root-relative, normalised}.
        """
        canonical = self.canonical_stream(score_maps, is_right).reshape(-1, NUM_KEYPOINTS, 3)
        viewpoint = axis_angle_to_matrix(self.viewpoint_stream(score_maps, is_right))    # (B, 3, 3)
        relative = from_canonical_frame(canonical, viewpoint.transpose(1, 2), is_right)
        return {"canonical": canonical, "viewpoint": viewpoint, "keypoints_3d": relative}


class DirectLifting(nn.Module):
    """The ablation: one stream regresses the normalised, root-relative w_rel (B, 21, 3) directly."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.stream = ScoreMapStream(config.prior_widths, config.prior_hidden, NUM_KEYPOINTS * 3, 0.2,
                                     config.score_map_size)

    def forward(self, score_maps: torch.Tensor, is_right: torch.Tensor) -> dict:
        """score maps (B, 21, s, s), is_right (B,) -> {"keypoints_3d": (B, 21, 3)}."""
        return {"keypoints_3d": self.stream(score_maps, is_right).reshape(-1, NUM_KEYPOINTS, 3)}


class Zimmermann2017(nn.Module):
    """HandSegNet + PoseNet + (PosePrior or DirectLifting).

    Args:
        config: channel widths (``MODEL_CONFIGS[profile]``).
        lifting: "canonical" (PosePrior, the paper's proposal) or "direct" (the ablation).
    """

    def __init__(self, config: ModelConfig = ModelConfig(), lifting: str = "canonical"):
        super().__init__()
        if lifting not in ("canonical", "direct"):
            raise ValueError(f"lifting: expected 'canonical' or 'direct', got {lifting!r}")
        self.lifting_kind = lifting
        self.config = config
        self.handsegnet = HandSegNet(config.segmentation_widths, config.convs_per_block, config.batch_norm)
        self.posenet = PoseNet(config)
        self.lifting = PosePrior(config) if lifting == "canonical" else DirectLifting(config)

    def forward(self, image: torch.Tensor, is_right: torch.Tensor, score_maps: torch.Tensor | None = None) -> dict:
        """Run the three networks.

        Args:
            image: (B, 3, S, S) in [0, 1], S = ``config.image_size``.
            is_right: (B,) hand side.
            score_maps: (B, 21, s, s) maps to lift instead of PoseNet's last stage (e.g. the
                ground truth's, as in training and in the paper's lifting ablation), or None.

        Returns:
            dict: "segmentation" (B, 2, H, W) logits, "score_maps" list of (B, 21, s, s), and the
            lifting's outputs ("keypoints_3d" (B, 21, 3) normalised root-relative, and for PosePrior
            "canonical" and "viewpoint").
        """
        size = self.config.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            raise ValueError(f"image: expected shape (B, 3, {size}, {size}) for this model "
                             f"(ModelConfig.image_size), got {tuple(image.shape)}; resize or crop the images "
                             "(handlib.data.datasets.crop_to_hand) or build the model of another profile")
        maps = self.posenet(image)
        lifted = self.lifting(maps[-1] if score_maps is None else score_maps, is_right)
        return {"segmentation": self.handsegnet(image), "score_maps": maps, **lifted}


# --------------------------------------------------------------------------------------------
# Losses, targets, prediction
# --------------------------------------------------------------------------------------------

def score_map_targets(keypoints_2d: torch.Tensor, visibility: torch.Tensor, image_size) -> torch.Tensor:
    """Gaussian score maps (B, 21, S/4, S/4) of keypoints (B, 21, 2) px in (S, S) images, zero where
    invisible or outside; sigma = ``SCORE_MAP_SIGMA_CELLS`` cells (``POSENET_STRIDE`` px each)."""
    height, width = check_image_size(image_size)
    maps = (score_map_size(height), score_map_size(width))
    return gaussian_heatmaps(keypoints_2d, (height, width), maps, SCORE_MAP_SIGMA_CELLS * POSENET_STRIDE, visibility)


def score_map_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """PoseNet's loss: sum_k v_k sqrt(mean_pixels (c_hat_k - c_k)^2) / (sum_k v_k + 0.001), batch mean.

    Args:
        predicted, target: (B, 21, h, w).
        weights: (B, 21) v_k (visibility).

    Returns:
        scalar tensor.
    """
    rms = ((predicted - target) ** 2).mean(dim=(-2, -1)).clamp_min(1e-12).sqrt()        # (B, 21)
    return ((weights * rms).sum(-1) / (weights.sum(-1) + 0.001)).mean()


def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def zimmermann2017_loss(model: Zimmermann2017, batch: dict) -> tuple[torch.Tensor, dict]:
    """L = L_seg + L_2D + L_3D, each as in the paper (reference/methods.md section 4).

    * L_seg: pixel-wise softmax cross-entropy on the hand mask (samples with ``has_mask``).
    * L_2D: ``score_map_loss`` summed over PoseNet's stages.
    * L_3D, canonical: mean((w_c_hat - w_c)^2) + mean((V_hat - V)^2); direct: mean((w_hat - w)^2) on
      the normalised root-relative keypoints (samples with ``has_3d``). The lifting sees the
      ground-truth score maps of the 2D keypoints jittered by ``KEYPOINT_NOISE_FRACTION`` of the image.

    Args:
        model: a ``Zimmermann2017``.
        batch: a batch of sample dicts (image (B, 3, H, W), mask, keypoints_2d, keypoints_3d, ...).

    Returns:
        (total loss, {"segmentation", "score_maps", "lifting": floats}).
    """
    image, is_right = batch["image"], batch["is_right"]
    visibility = batch["visibility"]
    image_size = tuple(image.shape[-2:])
    target_maps = score_map_targets(batch["keypoints_2d"], visibility, image_size)
    noise_px = KEYPOINT_NOISE_FRACTION * image_size[1]
    noisy_2d = batch["keypoints_2d"] + noise_px * torch.randn_like(batch["keypoints_2d"])
    lifting_maps = score_map_targets(noisy_2d, visibility, image_size)
    out = model(image, is_right, score_maps=lifting_maps)

    has_mask = batch["has_mask"].float()
    cross_entropy = F.cross_entropy(out["segmentation"], batch["mask"].round().long(), reduction="none")
    segmentation = _weighted_mean(cross_entropy.mean(dim=(-2, -1)), has_mask)
    score_maps = sum(score_map_loss(maps, target_maps, visibility) for maps in out["score_maps"])

    has_3d = batch["has_3d"].float()
    keypoints_3d = torch.nan_to_num(batch["keypoints_3d"])
    if model.lifting_kind == "canonical":
        frame = canonical_frame(keypoints_3d, is_right)
        canonical_error = ((out["canonical"] - frame.canonical) ** 2).mean(dim=(-2, -1))
        viewpoint_error = ((out["viewpoint"] - frame.rotation.transpose(1, 2)) ** 2).mean(dim=(-2, -1))
        lifting = _weighted_mean(canonical_error + viewpoint_error, has_3d)
    else:
        error = ((out["keypoints_3d"] - normalized_keypoints(keypoints_3d)) ** 2).mean(dim=(-2, -1))
        lifting = _weighted_mean(error, has_3d)
    total = segmentation + score_maps + lifting
    return total, {"segmentation": segmentation, "score_maps": score_maps, "lifting": lifting}


@torch.no_grad()
def zimmermann2017_predict(model: Zimmermann2017, batch: dict, score_maps_from: str = "image") -> dict:
    """Keypoints from images: PoseNet's last maps, argmax after bilinear upsampling, then lifting.

    Args:
        model: a ``Zimmermann2017``.
        batch: needs "image" (B, 3, H, W) and "is_right" (B,) (and "keypoints_2d", "visibility"
            when ``score_maps_from="ground_truth"``).
        score_maps_from: "image" (the full pipeline) or "ground_truth" (lift the true 2D keypoints'
            maps, the paper's lifting ablation).

    Returns:
        dict: "keypoints_3d" (B, 21, 3) root-relative in units of the middle MCP-PIP bone (evaluate
        with alignment "gt_root_scale"), "keypoints_2d" (B, 21, 2) pixels, "mask" (B, H, W) hand
        probability, "score_maps" (B, 21, s, s).
    """
    image, is_right = batch["image"], batch["is_right"]
    image_size = tuple(image.shape[-2:])
    score_maps = None
    if score_maps_from == "ground_truth":
        score_maps = score_map_targets(batch["keypoints_2d"], batch["visibility"], image_size)
    elif score_maps_from != "image":
        raise ValueError(f"score_maps_from: expected 'image' or 'ground_truth', got {score_maps_from!r}")
    out = model(image, is_right, score_maps=score_maps)
    maps = out["score_maps"][-1]
    upsampled = F.interpolate(maps, size=image_size, mode="bilinear", align_corners=False)
    return {"keypoints_3d": out["keypoints_3d"], "keypoints_2d": heatmap_argmax(upsampled, image_size),
            "mask": out["segmentation"].softmax(dim=1)[:, 1], "score_maps": maps}


def lifting_ablation(canonical_model: Zimmermann2017, direct_model: Zimmermann2017, dataset, device=None,
                     batch_size: int = 32) -> list[dict]:
    """The paper's lifting ablation (its Table 1): direct regression vs canonical frame + viewpoint.

    Each lifting is evaluated on ``dataset`` twice: lifting the score maps of the true 2D keypoints
    (``score_maps_from="ground_truth"``, the paper's protocol: it isolates the lifting) and lifting
    PoseNet's maps (the whole pipeline). 3D errors are root-relative with the true root and
    scale (alignment "gt_root_scale"), in millimetres; AUC of the 3D PCK over 20-50 mm.

    Args:
        canonical_model: a trained ``Zimmermann2017`` with ``lifting="canonical"`` (PosePrior).
        direct_model: a trained ``Zimmermann2017`` with ``lifting="direct"``.
        dataset: a Dataset of sample dicts with 3D ground truth (e.g. the fixed synthetic test set).
        device: None = CUDA when available.
        batch_size: evaluation batch size.

    Returns:
        list of 4 dicts: {"lifting", "score_maps", "median_3d_mm", "epe_3d_mm", "auc_20_50",
        "epe_procrustes_mm" (after the best similarity transform: the shape alone), "num_samples"};
        ``handlib.train.format_table(rows, columns=ABLATION_COLUMNS)`` prints them.
    """
    from functools import partial

    from handlib.train import evaluate_model, get_method

    for name, model, kind in (("canonical_model", canonical_model, "canonical"),
                              ("direct_model", direct_model, "direct")):
        if getattr(model, "lifting_kind", None) != kind:
            raise ValueError(f"{name}: expected a Zimmermann2017 with lifting={kind!r}, "
                             f"got {getattr(model, 'lifting_kind', type(model).__name__)!r}")
    rows = []
    for lifting, method, model in (("direct", "zimmermann2017_direct", direct_model),
                                   ("canonical + viewpoint", "zimmermann2017", canonical_model)):
        for source, label in (("ground_truth", "ground truth 2D"), ("image", "PoseNet (from the image)")):
            row = evaluate_model(get_method(method), model, dataset, device, batch_size,
                                 predict=partial(zimmermann2017_predict, score_maps_from=source))
            rows.append({"lifting": lifting, "score_maps": label, "median_3d_mm": row["median_3d_mm"],
                         "epe_3d_mm": row["epe_3d_mm"], "auc_20_50": row["auc_20_50"],
                         "epe_procrustes_mm": row["epe_procrustes_mm"], "num_samples": row["num_samples"]})
    return rows


ABLATION_COLUMNS = {"lifting": "lifting", "score_maps": "score maps from", "median_3d_mm": "median EPE (mm)",
                    "epe_3d_mm": "mean EPE (mm)", "auc_20_50": "AUC 20-50 mm",
                    "epe_procrustes_mm": "Procrustes EPE (mm)"}


# --------------------------------------------------------------------------------------------
# Registration: the methods "zimmermann2017" and "zimmermann2017_direct"
# --------------------------------------------------------------------------------------------

TRAINING_PROFILES = {
    # On a CPU in minutes: 64 px images, a cached training set read epoch after epoch
    # (``handlib.train.synthetic_dataset``); a step takes about 0.12 s on 2 CPU cores.
    "quick": TrainingProfile(steps=1500, batch_size=16, lr=2e-3, milestones=(1200,), train_samples=2048,
                             test_samples=256, image_size=64, checkpoint_every=250),
    # Sized for one GPU: 128 px images, the wider model.
    "full": TrainingProfile(steps=30_000, batch_size=32, lr=1e-3, milestones=(20_000, 27_000),
                            train_samples=60_000, test_samples=2000, image_size=128, checkpoint_every=1000,
                            num_workers=6),
}


def build_model(profile: str, lifting: str = "canonical") -> Zimmermann2017:
    """The model of a profile: ``Zimmermann2017(MODEL_CONFIGS[profile], lifting)``.

    Its ``config.image_size`` is the profile's ``TrainingProfile.image_size`` (64 quick, 128 full).
    """
    if profile not in MODEL_CONFIGS:
        raise ValueError(f"profile: expected one of {tuple(MODEL_CONFIGS)}, got {profile!r}")
    return Zimmermann2017(MODEL_CONFIGS[profile], lifting)


register_method(MethodSpec(
    name="zimmermann2017", build_model=build_model, loss=zimmermann2017_loss, predict=zimmermann2017_predict,
    profiles=TRAINING_PROFILES, alignment="gt_root_scale",
    description="Zimmermann & Brox 2017: HandSegNet + PoseNet + PosePrior (canonical frame + viewpoint)"))
register_method(MethodSpec(
    name="zimmermann2017_direct", build_model=lambda profile: build_model(profile, "direct"),
    loss=zimmermann2017_loss, predict=zimmermann2017_predict, profiles=TRAINING_PROFILES, alignment="gt_root_scale",
    description="Zimmermann & Brox 2017, lifting ablation: HandSegNet + PoseNet + direct regression"))
