"""Chapter 4: Boukhayma, de Bem & Torr, "3D Hand Shape and Pose from Images in the Wild", CVPR 2019.

Instead of keypoints, the network regresses the *parameters of a hand model*: an encoder reads the
crop, a fully connected layer outputs a weak-perspective camera and MANO's pose and shape, and the
hand model (a fixed, differentiable layer) turns them into a mesh and its 21 keypoints:

    image -> encoder -> pooled features -> FC -> [s, t (2), r (3), theta (P), beta (10)] + offset
    (r, theta, beta) -> MANO -> vertices V (778, 3), keypoints X (21, 3), metres
    x_2D = s X_xy + t                         (weak perspective, crop pixels)

Every output is a hand: the mesh, the 3D keypoints and the 2D keypoints always agree. The loss
compares each with what the training image has:

    L = L_2D + 100 L_3D + 100 L_mask + 10 L_reg                                 (paper, Eq. 7)

* L_2D: the L1 distances of the projected keypoints to the visible 2D labels, summed over the
  keypoints (the paper's sum, not a mean), pixels.
* L_3D: root-relative 3D keypoints against the 3D labels, on the samples that have them.
* L_mask: the fraction of projected vertices that fall outside the hand mask (``vertex_mask_loss``).
* L_reg: ||theta||^2 + w_beta ||beta||^2, a pull towards MANO's mean hand.

Training starts with a **pre-training** stage on synthetic images, an L2 loss on the camera and
MANO parameters themselves (``parameter_targets``), so that the camera and hand start from
acceptable values; then the **image** stage minimises L. The "2D fit" column of the paper's
tables is no network: MANO fitted to the detected 2D keypoints (``fit_detected_keypoints``, or
``fit_to_detections`` for another detector's keypoints).

Differences from the paper (so that it trains on a laptop CPU, and fits the course's data):

* The encoder is the course's shared backbone (``handlib.models.backbone``, shipped pre-trained on
  synthetic hands) instead of an ImageNet ResNet-34; a small convolutional head, flattened,
  replaces ResNet's last stages and AvgPool(7) (``Boukhayma2019Config.head_widths``).
* The 2D input of the "rgb2d" and "2d" columns is the score maps of the shipped backbone (frozen),
  at 1/4 of the crop, instead of OpenPose's heatmaps fed to the first convolution: they join the
  encoder's features (or replace them) at the head's input.
* MANO is the course's open hand model with its own PCA pose basis (``hands_components``,
  ``NUM_PCA_COMPONENTS`` = 12 instead of 6: see there), around its mean pose (``hands_mean``).
  The synthetic hands are posed in the camera frame, so no fixed root rotation (π, 0, 0) is needed.
* The crops are 128 px and cut 1.25 to 1.6 times the keypoints' box (the paper: 256 px, 2.2 times
  the hand's box), so the scale offset is measured on the course's crops (``INITIAL_SCALE``).
* Masks are the renderer's (the paper: GrabCut seeded by the 2D keypoints). ``mask_term =
  "silhouette"`` replaces the sampled mask by the fraction of a soft silhouette outside the mask.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from handlib.geometry import axis_angle_to_matrix
from handlib.mano.layer import ManoLayer
from handlib.methods import ImageTraining, LossContext, Method, Prediction, Schedule, Stage, Variant, check_shape, \
    image_stage, synthetic_test_set
from handlib.models import backbone
from handlib.models.backbone import conv_bn_relu, keypoints_from_score_maps
from handlib.skeleton import NUM_KEYPOINTS, WRIST

# Pose coefficients in the hand model's PCA basis. Measured on 2000 poses of the course's prior
# (the synthetic hands' poses), projected on the first P components around ``hands_mean``: the
# 21 keypoints move by 6.2 mm on average with P = 6 (the paper's), 3.1 mm with 10, 1.8 mm with
# 12, 1.3 mm with 15. 12 keeps the loss of the projection under the 2D labels' precision.
NUM_PCA_COMPONENTS = 12
NUM_BETAS = 10
# The weak-perspective scale that puts the hand at its usual size, in crop sides per metre: the
# median over 512 training crops of the least-squares fit x_2D = s X_xy + t (``fit_weak_perspective``)
# is 729 px/m at 128 px (5 % / 95 %: 495 / 1065), i.e. 5.7 crop sides per metre. The paper's 545 px/m
# on 256 px crops cut 2.2 times the hand's box is 2.1 crop sides per metre; our crops are cut closer
# (1.25 to 1.6 times the keypoints' box) around smaller (grasping) hands, hence the larger scale.
INITIAL_SCALE = 5.7
# L_3D's length unit: 1 dm. See ``Boukhayma2019Config``.
LENGTH_UNIT_3D = 0.1
INPUTS = ("rgb", "rgb2d", "2d")
MASK_TERMS = ("vertices", "silhouette")


# --------------------------------------------------------------------------------------------
# The weak-perspective camera
# --------------------------------------------------------------------------------------------

def hand_centre(keypoints: torch.Tensor) -> torch.Tensor:
    """The origin of the weak-perspective camera: the centre of the keypoints' bounding box.

    The course's crops are cut around the 2D keypoints' box (``handlib.data.synth``), so with this
    origin the translation t is the crop's centre up to the crop's jitter, and the offset
    t0 = (S / 2, S / 2) puts a new network's hand in the middle of the crop.

    Args:
        keypoints: (B, 21, 3) metres.

    Returns:
        (B, 1, 3): (max_j X_j + min_j X_j) / 2, per axis.
    """
    check_shape("keypoints", keypoints, (None, NUM_KEYPOINTS, 3), " in metres")
    return (keypoints.amax(1, keepdim=True) + keypoints.amin(1, keepdim=True)) / 2


def project_weak_perspective(points: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
    """x_2D = s X_xy + t: a scaled orthographic projection.

    Args:
        points: (B, N, 3) metres, camera axes, any origin (the camera's t says where it lands).
        camera: (B, 3) [s (pixels per metre), t_x, t_y (pixels)].

    Returns:
        (B, N, 2) pixels.
    """
    check_shape("points", points, (None, None, 3), " in metres")
    check_shape("camera", camera, (points.shape[0], 3), " [s, t_x, t_y]")
    return camera[:, None, :1] * points[..., :2] + camera[:, None, 1:]                  # (B, N, 2)


def fit_weak_perspective(points_3d: torch.Tensor, points_2d: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """The camera [s, t] of least squares: min_{s,t} sum_j w_j ||s X_j,xy + t - x_j||^2.

    With a = X_xy and b = x centred on their weighted means (a_bar, b_bar):
        s = sum_j w_j a_j . b_j / sum_j w_j |a_j|^2,     t = b_bar - s a_bar.

    Args:
        points_3d: (B, N, 3) metres, camera axes.
        points_2d: (B, N, 2) pixels.
        weights: (B, N) or None (all 1); at least two points with weight > 0 per row.

    Returns:
        (B, 3) [s, t_x, t_y], s in pixels per metre, t in pixels.
    """
    check_shape("points_3d", points_3d, (None, None, 3), " in metres")
    check_shape("points_2d", points_2d, (points_3d.shape[0], points_3d.shape[1], 2), " in pixels")
    if weights is None:
        weights = torch.ones(points_3d.shape[:2], dtype=points_3d.dtype, device=points_3d.device)
    check_shape("weights", weights, tuple(points_3d.shape[:2]))
    w = (weights / weights.sum(1, keepdim=True).clamp_min(1e-12))[..., None]         # (B, N, 1)
    a_bar, b_bar = (w * points_3d[..., :2]).sum(1), (w * points_2d).sum(1)             # (B, 2)
    a, b = points_3d[..., :2] - a_bar[:, None], points_2d - b_bar[:, None]            # (B, N, 2)
    scale = (w * a * b).sum((1, 2)) / (w * a * a).sum((1, 2)).clamp_min(1e-12)         # (B,)
    return torch.cat([scale[:, None], b_bar - scale[:, None] * a_bar], dim=1)          # (B, 3)


def initial_parameters(image_size: int, num_pca_components: int = NUM_PCA_COMPONENTS) -> torch.Tensor:
    """The offset the network's output is added to: [s0, t0 (2), r0 (3), theta0 (P), beta0 (10)].

    s0 = ``INITIAL_SCALE`` x image_size pixels per metre, t0 the crop's centre, and zero rotation,
    pose (MANO's mean pose) and shape (the mean hand): the paper's [545, 128, 128, 0, ...] on its
    256 px crops.

    Returns:
        (6 + P + 10,) float32.
    """
    offset = torch.zeros(6 + num_pca_components + NUM_BETAS)
    offset[0] = INITIAL_SCALE * image_size
    offset[1:3] = image_size / 2
    return offset


# --------------------------------------------------------------------------------------------
# Config and network
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Boukhayma2019Config(ImageTraining):
    """One run of Boukhayma et al. on the course's platform.

    Attributes:
        input: "rgb" (the image, the paper's default column), "rgb2d" (the image and the 21 score
            maps of the frozen shipped backbone) or "2d" (the score maps only).
        encoder, encoder_width, pretrained_backbone: the shared backbone (``backbone.ENCODER``...),
            started from the shipped weights; it also gives the frozen score maps of "rgb2d" / "2d".
        head_widths: the head's stride-2 convolutions on the encoder's features (1/4 of the crop),
            then flattened. The paper averages ResNet's last map (AvgPool); on our shallower encoder
            averaging loses where things are: measured over 150 pre-training steps (quick data, lr
            1e-3), the rotation term falls from 0.65 to 0.53 with two convolutions and average
            pooling, to 0.41 with three and flattening (a random rotation scores 0.67).
        head_hidden: the fully connected layer before the 6 + P + 10 parameters.
        num_pca_components: P, the pose coefficients (``NUM_PCA_COMPONENTS``).
        pretrain_steps, pretrain_lr, pretrain_milestones: the pre-training stage (same data and batch
            size as the images; the learning rate drops tenfold at each milestone).
        weight_3d, weight_mask, weight_reg: the paper's 100, 100 and 10 (L_2D has weight 1). Units:
            L_2D in pixels of the crop (the sum over visible keypoints of |dx| + |dy|, as the paper
            writes it), L_3D the mean over the 21 root-relative keypoints of the squared error in
            ``LENGTH_UNIT_3D`` = 1 dm (a hand is about 2 dm long), L_mask a fraction in [0, 1]
            (100 L_mask is the percentage of vertices outside the mask), L_reg the *mean* squared PCA
            coefficient plus w_beta times the mean squared beta (means, so that P does not change its
            weight). Measured in a quick run of 200 image steps (seed 0; mean of the first / last 5 steps of
            the image stage): L_2D 901 / 722 px, 100 L_3D 150 / 79, 100 L_mask 38 / 16, 10 L_reg 0.5 / 8.6.
            L_2D leads: near the answer, on one keypoint 1 cm off (s ~ 730 px/m), its gradient is
            s ~ 730 per metre whatever the error (an L1), 100 L_3D's is 100 x 2 x 0.01 / (21 x 0.1^2)
            ~ 10 per metre and grows with the error. With the mean over keypoints instead (L_2D 21
            times weaker) the mask term won and the hand shrank (``keypoint_loss_2d``).
            L_mask is not zero at the true hand: the renderer's mask leaves out what occluders and
            the forearm cover, and the mask's border reads 0.5, so 12 % of the true hand's vertices
            (perspective; median 9 %) and 25 % of its weak-perspective projection fall outside. The
            quick run brings it to 16 %, by drawing the hand a little smaller or off the occluded
            parts: the "no_mask" variant measures what that costs.
        weight_beta: w_beta. The course's shapes are drawn from N(0, 1) (the reimplementation's
            10^4 suits shapes drawn at 0.03 of that): 0.1 makes the true shapes cost 10 x 0.1 = 1.
        mask_term: "vertices" (the paper: vertices sampled on the mask) or "silhouette" (the
            fraction of the soft silhouette outside the mask, ``silhouette_mask_loss``).
        silhouette_size: side of the soft silhouette's grid, pixels (a divisor of image_size). Measured
            on 16 training crops at their true parameters: 0.40 of the silhouette lies off the mask on
            a 32 grid, 0.25 on the full 128 grid (the blur's halo is wider in crop pixels on a coarse
            grid), against 0.25 of the vertices; a step of 16 crops costs about twice the vertex term's.
        silhouette_sigma: its blur, pixels^2 of that grid.
    """
    input: str = "rgb"
    encoder: str = backbone.ENCODER
    encoder_width: float = backbone.ENCODER_WIDTH
    pretrained_backbone: bool = True
    head_widths: tuple = (64, 96, 128)
    head_hidden: int = 256
    num_pca_components: int = NUM_PCA_COMPONENTS
    pretrain_steps: int = 100
    pretrain_lr: float = 1e-3
    pretrain_milestones: tuple = ()
    weight_3d: float = 100.0
    weight_mask: float = 100.0
    weight_reg: float = 10.0
    weight_beta: float = 0.1
    mask_term: str = "vertices"
    silhouette_size: int = 32
    silhouette_sigma: float = 0.5

    def __post_init__(self):
        if self.input not in INPUTS:
            raise ValueError(f"input: expected one of {INPUTS}, got {self.input!r}")
        if self.mask_term not in MASK_TERMS:
            raise ValueError(f"mask_term: expected one of {MASK_TERMS}, got {self.mask_term!r}")
        if not 1 <= self.num_pca_components <= 45:
            raise ValueError(f"num_pca_components: expected 1..45 PCA coefficients, got {self.num_pca_components!r}")
        if self.image_size % self.silhouette_size:
            raise ValueError(f"silhouette_size: expected a divisor of image_size={self.image_size}, "
                             f"got {self.silhouette_size!r}")

    @property
    def num_parameters(self) -> int:
        """6 + P + 10: s, t (2), r (3), theta (P), beta (10)."""
        return 6 + self.num_pca_components + NUM_BETAS


class ParameterHead(nn.Module):
    """Features (B, C, s, s) -> parameters (B, 6 + P + 10), before the offset.

    Stride-2 conv-BN-ReLU blocks down to s / 2^n, flattened (not averaged: see
    ``Boukhayma2019Config.head_widths``), one hidden fully connected layer, then the output layer.
    The output layer starts at zero bias and tiny weights, so that a new network answers the offset
    (``initial_parameters``): a mean hand, centred, at the usual size.
    """

    def __init__(self, in_channels: int, widths, hidden: int, num_outputs: int, map_size: int):
        super().__init__()
        layers, channels = [], in_channels
        for width in widths:
            layers.append(conv_bn_relu(channels, width, stride=2))
            channels = width
        self.convs = nn.Sequential(*layers)
        side = -(-map_size // 2 ** len(widths))
        self.fc = nn.Sequential(nn.Linear(channels * side * side, hidden), nn.ReLU(inplace=True))
        self.out = nn.Linear(hidden, num_outputs)
        nn.init.normal_(self.out.weight, std=1e-3)
        nn.init.zeros_(self.out.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.convs(features).flatten(1)                                              # (B, C' (s / 2^n)^2)
        return self.out(self.fc(x))                                                     # (B, 6 + P + 10)


class Boukhayma2019(nn.Module):
    """Encoder, parameter head, offset and MANO.

    The head's outputs are in natural units, then added to the offset: s = s0 (1 + o_s), t = t0 +
    (S / 2) o_t, and r, theta, beta = o (radians, PCA coefficients, shape coefficients). This is the
    paper's "output + offset" with the output layer scaled, so that one learning rate moves the
    scale (hundreds of pixels per metre) and the pose (radians) alike.

    Args:
        config: ``Boukhayma2019Config``.
    """

    def __init__(self, config: Boukhayma2019Config = Boukhayma2019Config()):
        super().__init__()
        self.config = config
        self.mano = ManoLayer(num_pca_comps=config.num_pca_components, flat_hand_mean=False)
        channels = 0
        self.encoder = self.detector = None
        if config.input in ("rgb", "rgb2d"):
            self.encoder = backbone.HandEncoder(config.encoder, config.encoder_width)
            channels += self.encoder.out_channels
        if config.input in ("rgb2d", "2d"):
            self.detector = backbone.HandEncoder(config.encoder, config.encoder_width)
            self.detector.requires_grad_(False)
            channels += NUM_KEYPOINTS
        self.head = ParameterHead(channels, config.head_widths, config.head_hidden, config.num_parameters,
                                  backbone.score_map_size(config.image_size))
        self.register_buffer("offset", initial_parameters(config.image_size, config.num_pca_components))
        units = torch.ones(config.num_parameters)
        units[0], units[1:3] = self.offset[0], config.image_size / 2
        self.register_buffer("units", units)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; the frozen detector stays in eval mode (its BatchNorm statistics fixed)."""
        super().train(mode)
        if self.detector is not None:
            self.detector.eval()
        return self

    def trainable_parameters(self):
        """Every parameter but the frozen detector's."""
        return (p for name, p in self.named_parameters() if not name.startswith("detector."))

    def forward(self, image: torch.Tensor) -> dict:
        """image (B, 3, S, S) in [0, 1] -> the camera, MANO's parameters and what they make.

        Returns:
            dict: "camera" (B, 3) [s px/m, t_x, t_y px]; "global_orient" (B, 3) axis-angle, camera
            axes; "hand_pose" (B, P) PCA coefficients around MANO's mean pose; "betas" (B, 10);
            "full_pose" (B, 48) axis-angle (absolute: zero is the flat hand); "vertices" (B, 778, 3)
            and "keypoints_3d" (B, 21, 3), metres, root-relative (wrist at the origin), camera axes;
            "keypoints_2d" (B, 21, 2) and "vertices_2d" (B, 778, 2), crop pixels; and "score_maps"
            (B, 21, S/4, S/4) of the detector when the input has them.
        """
        size = self.config.image_size
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image: expected shape (B, 3, {size}, {size}) for this model (config.image_size), "
                             f"got {got}; crop or resize the images (handlib.data.datasets.crop_to_hand)")
        inputs, out = [], {}
        if self.encoder is not None:
            inputs.append(self.encoder(image)["features"])                              # (B, C, S/4, S/4)
        if self.detector is not None:
            with torch.no_grad():
                out["score_maps"] = self.detector(image)["score_maps"]                  # (B, 21, S/4, S/4)
            inputs.append(out["score_maps"])
        parameters = self.offset + self.units * self.head(torch.cat(inputs, dim=1))     # (B, 6 + P + 10)
        return {**out, **self.hand(parameters)}

    def hand(self, parameters: torch.Tensor) -> dict:
        """Parameters (B, 6 + P + 10) -> the hand (the keys of ``forward`` but "score_maps")."""
        check_shape("parameters", parameters, (None, self.config.num_parameters), " [s, t, r, theta, beta]")
        pca = self.config.num_pca_components
        camera, global_orient = parameters[:, :3], parameters[:, 3:6]
        hand_pose, betas = parameters[:, 6:6 + pca], parameters[:, 6 + pca:]
        mano = self.mano(hand_pose=hand_pose, betas=betas, global_orient=global_orient)
        centre = hand_centre(mano.joints)                                               # (B, 1, 3)
        root = mano.joints[:, WRIST:WRIST + 1]
        return {"camera": camera, "global_orient": global_orient, "hand_pose": hand_pose, "betas": betas,
                "full_pose": mano.full_pose,
                "keypoints_2d": project_weak_perspective(mano.joints - centre, camera),   # (B, 21, 2)
                "vertices_2d": project_weak_perspective(mano.vertices - centre, camera),  # (B, 778, 2)
                "keypoints_3d": mano.joints - root, "vertices": mano.vertices - root}


# --------------------------------------------------------------------------------------------
# Losses, term by term
# --------------------------------------------------------------------------------------------

def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def keypoint_loss_2d(predicted: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    """L_2D = sum_{visible j} ||x_hat_j - x_j||_1 per sample (the paper's sum), then the batch mean.

    A sum, not a mean over the keypoints: with the mean, each keypoint's pull is 21 times weaker
    against 100 L_mask, and the hand shrinks inside its mask. Measured on the quick data at 200 steps (seed 0,
    256 test crops): with the mean, the predicted keypoints spread 8.5 px from their centre against
    27.6 px for the true ones, 2D EPE 30.3 px; with the sum, 17.6 px and 23.5 px (3D EPE 76 -> 72 mm).

    Args:
        predicted: (B, 21, 2) pixels. target: (B, 21, 2) pixels (NaN where unknown, if invisible).
        visibility: (B, 21) 1 visible, 0 not.

    Returns:
        scalar tensor, pixels.
    """
    check_shape("predicted", predicted, (None, NUM_KEYPOINTS, 2), " in pixels")
    check_shape("target", target, tuple(predicted.shape), " in pixels")
    check_shape("visibility", visibility, tuple(predicted.shape[:2]))
    error = (predicted - torch.nan_to_num(target)).abs().sum(-1)                           # (B, 21)
    per_sample = (visibility * error).sum(1)                                               # (B,)
    return _weighted_mean(per_sample, (visibility.sum(1) > 0).float())


def keypoint_loss_3d(predicted: torch.Tensor, target: torch.Tensor, has_3d: torch.Tensor) -> torch.Tensor:
    """L_3D = mean_j ||(X_hat_j - X_hat_root) - (X_j - X_root)||^2 / u^2, u = ``LENGTH_UNIT_3D``,
    over the samples with 3D labels.

    Args:
        predicted: (B, 21, 3) metres, any origin (made root-relative here).
        target: (B, 21, 3) metres, camera frame (NaN where there is no label).
        has_3d: (B,) the samples with 3D labels.

    Returns:
        scalar tensor, squared decimetres; 0 when no sample has a label.
    """
    check_shape("predicted", predicted, (None, NUM_KEYPOINTS, 3), " in metres")
    check_shape("target", target, tuple(predicted.shape), " in metres")
    check_shape("has_3d", has_3d, (predicted.shape[0],))
    target = torch.nan_to_num(target)
    error = (predicted - predicted[:, WRIST:WRIST + 1]) - (target - target[:, WRIST:WRIST + 1])
    per_sample = (error / LENGTH_UNIT_3D).square().sum(-1).mean(-1)                        # (B,)
    return _weighted_mean(per_sample, has_3d.float())


def vertex_mask_loss(vertices_2d: torch.Tensor, mask: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """L_mask = 1 - (1 / V) sum_v M(pi(v)): the fraction of projected vertices outside the hand mask.

    M is read at each projected vertex by bilinear interpolation (pixel i covers [i, i + 1), its value
    sits at i + 0.5), and is 0 outside the image: a vertex on a pixel centre counts that pixel's
    0 or 1, and near the mask's border the term has a gradient.

    Args:
        vertices_2d: (B, V, 2) pixels.
        mask: (B, H, W) 1 on the hand, 0 elsewhere.
        has_mask: (B,) the samples with a mask.

    Returns:
        scalar tensor in [0, 1]; 0 when no sample has a mask.
    """
    check_shape("vertices_2d", vertices_2d, (None, None, 2), " in pixels")
    check_shape("mask", mask, (vertices_2d.shape[0], None, None))
    check_shape("has_mask", has_mask, (vertices_2d.shape[0],))
    height, width = mask.shape[-2:]
    size = torch.tensor([width, height], dtype=vertices_2d.dtype, device=vertices_2d.device)
    grid = 2 * vertices_2d / size - 1                                                    # (B, V, 2) in [-1, 1]
    inside = F.grid_sample(mask[:, None].to(vertices_2d.dtype), grid[:, None], mode="bilinear",
                           padding_mode="zeros", align_corners=False)[:, 0, 0]           # (B, V)
    return _weighted_mean(1 - inside.mean(1), has_mask.float())


def silhouette_mask_loss(vertices: torch.Tensor, camera: torch.Tensor, faces: torch.Tensor, mask: torch.Tensor,
                         has_mask: torch.Tensor, size: int, sigma: float = 0.5) -> torch.Tensor:
    """The fraction of the hand's soft silhouette outside the mask: sum_p S(p)(1 - M(p)) / sum_p S(p).

    The same question as ``vertex_mask_loss`` (how much of the predicted hand lies off the mask),
    asked of the surface rather than the vertices: S is ``handlib.render.silhouette.soft_silhouette``
    of the weak-perspective projection, rendered on a ``size`` x ``size`` grid over the crop (every
    vertex at depth 1 m seen by K = [[s r, 0, t_x r], [0, s r, t_y r], [0, 0, 1]], r = size / H,
    projects where x_2D = s X_xy + t puts it), and M the mask averaged on that grid.

    Args:
        vertices: (B, V, 3) metres, origin ``hand_centre`` of the keypoints (as ``camera`` expects).
        camera: (B, 3) [s, t_x, t_y].
        faces: (F, 3) long.
        mask: (B, H, W). has_mask: (B,).
        size: side of the silhouette's grid, a divisor of H.
        sigma: the silhouette's blur, pixels^2 of the grid.

    Returns:
        scalar tensor in [0, 1]; 0 when no sample has a mask.
    """
    from handlib.render.silhouette import soft_silhouette

    check_shape("vertices", vertices, (None, None, 3), " in metres")
    check_shape("camera", camera, (vertices.shape[0], 3), " [s, t_x, t_y]")
    check_shape("mask", mask, (vertices.shape[0], None, None))
    ratio = size / mask.shape[-1]
    K = torch.zeros(vertices.shape[0], 3, 3, dtype=vertices.dtype, device=vertices.device)
    K[:, 0, 0] = K[:, 1, 1] = camera[:, 0] * ratio
    K[:, :2, 2] = camera[:, 1:] * ratio
    K[:, 2, 2] = 1.0
    flat = torch.cat([vertices[..., :2], torch.ones_like(vertices[..., 2:])], dim=-1)    # (B, V, 3) at z = 1 m
    silhouette = soft_silhouette(flat, faces, K, size, sigma=sigma)                      # (B, size, size)
    target = F.adaptive_avg_pool2d(mask[:, None], size)[:, 0].to(silhouette.dtype)
    outside = (silhouette * (1 - target)).sum((-2, -1)) / silhouette.sum((-2, -1)).clamp_min(1e-6)
    return _weighted_mean(outside, has_mask.float())


def regularisation_loss(hand_pose: torch.Tensor, betas: torch.Tensor, weight_beta: float) -> torch.Tensor:
    """L_reg = mean_k theta_k^2 + w_beta mean_k beta_k^2, batch mean (zero at MANO's mean hand).

    Args:
        hand_pose: (B, P) PCA coefficients. betas: (B, 10).

    Returns:
        scalar tensor.
    """
    check_shape("hand_pose", hand_pose, (None, None))
    check_shape("betas", betas, (hand_pose.shape[0], None))
    return (hand_pose.square().mean(1) + weight_beta * betas.square().mean(1)).mean()


def boukhayma2019_loss(model: Boukhayma2019, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """L = L_2D + weight_3d L_3D + weight_mask L_mask + weight_reg L_reg (``Boukhayma2019Config``).

    Returns:
        (total, {"keypoints_2d", "keypoints_3d", "mask", "reg"}): every term is reported, also one
        whose weight is 0 (an ablation), so that the runs' histories compare.
    """
    config = model.config
    out = model(batch["image"])
    terms = {"keypoints_2d": keypoint_loss_2d(out["keypoints_2d"], batch["keypoints_2d"], batch["visibility"]),
             "keypoints_3d": keypoint_loss_3d(out["keypoints_3d"], batch["keypoints_3d"], batch["has_3d"])}
    if config.mask_term == "vertices":
        terms["mask"] = vertex_mask_loss(out["vertices_2d"], batch["mask"], batch["has_mask"])
    else:
        centred = out["vertices"] - hand_centre(out["keypoints_3d"])
        terms["mask"] = silhouette_mask_loss(centred, out["camera"], model.mano.faces, batch["mask"],
                                             batch["has_mask"], config.silhouette_size, config.silhouette_sigma)
    terms["reg"] = regularisation_loss(out["hand_pose"], out["betas"], config.weight_beta)
    total = (terms["keypoints_2d"] + config.weight_3d * terms["keypoints_3d"] + config.weight_mask * terms["mask"]
             + config.weight_reg * terms["reg"])
    return total, terms


# --------------------------------------------------------------------------------------------
# Pre-training on the parameters
# --------------------------------------------------------------------------------------------

def pca_coefficients(layer: ManoLayer, pose: torch.Tensor) -> torch.Tensor:
    """The PCA coefficients closest to a finger pose: argmin_c ||layer.finger_pose(c) - pose||^2
    (``ManoLayer.hand_pose_of``, bit-for-bit repeatable).

    Args:
        layer: a ``ManoLayer`` with ``num_pca_comps`` = P.
        pose: (B, 45) absolute finger axis-angles (zero is the flat hand), or (B, 48) with the global
            rotation first (dropped).

    Returns:
        (B, P), least squares (the basis need not be orthonormal).
    """
    if layer.num_pca_comps is None:
        raise ValueError("layer: expected a ManoLayer with num_pca_comps set (the PCA space), got num_pca_comps=None")
    check_shape("pose", pose, (None, None), " axis-angle")
    if pose.shape[1] not in (45, 48):
        raise ValueError(f"pose: expected shape (B, 45) or (B, 48) axis-angle, got {tuple(pose.shape)}")
    return layer.hand_pose_of(pose[:, -45:])


def parameter_targets(layer: ManoLayer, batch: dict) -> dict:
    """The camera and MANO parameters of labelled samples, the pre-training's targets.

    Args:
        layer: the model's ``ManoLayer`` (its PCA space).
        batch: "pose" (B, 48) camera-frame axis-angle, "betas" (B, 10), "keypoints_3d" (B, 21, 3),
            "keypoints_2d" (B, 21, 2).

    Returns:
        dict: "camera" (B, 3) the least-squares weak perspective of the true keypoints about
        their ``hand_centre`` (``fit_weak_perspective``), "rotation" (B, 3, 3) the global rotation,
        "hand_pose" (B, P), "betas" (B, 10).
    """
    pose, keypoints_3d = torch.nan_to_num(batch["pose"]), torch.nan_to_num(batch["keypoints_3d"])
    centred = keypoints_3d - hand_centre(keypoints_3d)
    return {"camera": fit_weak_perspective(centred, torch.nan_to_num(batch["keypoints_2d"])),
            "rotation": axis_angle_to_matrix(pose[:, :3]), "hand_pose": pca_coefficients(layer, pose),
            "betas": torch.nan_to_num(batch["betas"])}


def pretrain_loss(model: Boukhayma2019, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """L2 on the parameters, over the samples with MANO labels ("has_mano" and "has_3d").

    Terms (each a mean of squares): "camera": s in units of the offset s0 and t in half crop sides;
    "rotation": ||R(r_hat) - R(r)||_F^2 / 9, on the rotation matrices (axis-angle is ambiguous near
    pi: two far apart vectors can be one rotation); "hand_pose": PCA coefficients; "betas".

    Returns:
        (sum of the four terms, the terms).
    """
    out = model(batch["image"])
    targets = parameter_targets(model.mano, batch)
    weights = (batch["has_mano"].bool() & batch["has_3d"].bool()).float()
    units = model.units[:3]
    per_sample = {
        "camera": ((out["camera"] - targets["camera"]) / units).square().mean(1),
        "rotation": (axis_angle_to_matrix(out["global_orient"]) - targets["rotation"]).square().mean((1, 2)),
        "hand_pose": (out["hand_pose"] - targets["hand_pose"]).square().mean(1),
        "betas": (out["betas"] - targets["betas"]).square().mean(1)}
    terms = {name: _weighted_mean(value, weights) for name, value in per_sample.items()}
    return sum(terms.values()), terms


# --------------------------------------------------------------------------------------------
# Prediction, and the "2D fit" column
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def boukhayma2019_predict(model: Boukhayma2019, batch: dict, config: Boukhayma2019Config | None = None) -> Prediction:
    """The hand of each crop.

    Args:
        model: a ``Boukhayma2019``.
        batch: needs "image" (B, 3, S, S) in [0, 1].
        config: unused (the model holds its config); the ``Method.predict`` signature.

    Returns:
        ``Prediction``: keypoints_2d (B, 21, 2) crop pixels (weak perspective); keypoints_3d (B, 21, 3)
        and vertices (B, 778, 3), metres, frame "root_relative" (wrist at the origin, camera axes);
        mano_pose (B, 48) absolute axis-angle, mano_betas (B, 10), camera (B, 3) [s, t_x, t_y];
        extras "hand_pose" (B, P) and, with a 2D input, "score_maps".
    """
    if not isinstance(batch, dict) or "image" not in batch:
        raise ValueError("batch: expected a dict with 'image' (B, 3, S, S) in [0, 1]")
    out = model(batch["image"])
    extras = {"hand_pose": out["hand_pose"], **({"score_maps": out["score_maps"]} if "score_maps" in out else {})}
    return Prediction(keypoints_2d=out["keypoints_2d"], keypoints_3d=out["keypoints_3d"], frame="root_relative",
                      vertices=out["vertices"], mano_pose=out["full_pose"], mano_betas=out["betas"],
                      camera=out["camera"], extras=extras)


@torch.no_grad()
def fit_detected_keypoints(detector: nn.Module, batch: dict, layer: ManoLayer | None = None,
                           **fit_options) -> Prediction:
    """The paper's "2D fit" column: MANO fitted to the 2D keypoints the backbone detects.

    No network is trained: the shared backbone finds the 21 keypoints (argmax of its score maps),
    and ``fit_to_detections`` fits the hand model to them through the crop's camera K. Measured on
    the first 32 crops of the synthetic test set with the shipped backbone and the fit's defaults:
    3D EPE 56 mm after root alignment (median 39 mm), 2D EPE 12.5 px, 9 s on one core (the network
    trained 200 steps on the quick data: 68 mm and 28 px over the 256 crops).

    Args:
        detector: a ``backbone.HandEncoder`` (e.g. with ``backbone.load_pretrained``), or a model
            whose forward returns "score_maps" (B, 21, S/4, S/4).
        batch: "image" (B, 3, S, S) in [0, 1] and "K" (B, 3, 3) the crops' intrinsics.
        layer: the hand model to fit (default: ``ManoLayer(num_pca_comps=NUM_PCA_COMPONENTS)``).
        fit_options: passed to ``fit_to_keypoints_2d`` (steps, seed, num_starts, ...).

    Returns:
        ``Prediction`` of ``fit_to_detections``, its extras "detected" (B, 21, 2) the detector's keypoints.
    """
    if not isinstance(batch, dict) or "image" not in batch or "K" not in batch:
        raise ValueError("batch: expected a dict with 'image' (B, 3, S, S) and 'K' (B, 3, 3), the crops' intrinsics")
    return fit_to_detections(detect_keypoints(detector, batch["image"]), batch["K"], layer, **fit_options)


@torch.no_grad()
def detect_keypoints(detector: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The 2D keypoints (B, 21, 2), pixels of the crop, at the argmax of a detector's score maps
    (``fit_detected_keypoints``'s detector), run in eval mode; its mode is restored after."""
    was_training = detector.training
    detector.eval()
    detected = keypoints_from_score_maps(detector(image)["score_maps"], tuple(image.shape[-2:]))
    detector.train(was_training)
    return detected


@torch.no_grad()
def fit_to_detections(keypoints_2d: torch.Tensor, K: torch.Tensor, layer: ManoLayer | None = None,
                      **fit_options) -> Prediction:
    """The "2D fit" on any detector's keypoints: ``handlib.mano.fit.fit_to_keypoints_2d`` through the
    crops' cameras, as a ``Prediction``.

    A crop the detector found no hand in (NaN keypoints, as MediaPipe Hands answers: see
    ``handlib.peers``) is not fitted and stays unanswered (NaN in every field).

    Args:
        keypoints_2d: (B, 21, 2) detected keypoints, pixels of the crop, course order; NaN for a
            crop without an answer.
        K: (B, 3, 3) the crops' intrinsics.
        layer: the hand model to fit (default: ``ManoLayer(num_pca_comps=NUM_PCA_COMPONENTS)``).
        fit_options: passed to ``fit_to_keypoints_2d`` (steps, seed, num_starts, ...).

    Returns:
        ``Prediction``: keypoints_2d (B, 21, 2) the fitted keypoints projected by K; keypoints_3d
        (B, 21, 3) and vertices, metres, frame "camera"; mano_pose (B, 48), mano_betas (B, 10);
        extras "detected" (B, 21, 2) the keypoints fitted to, "reprojection_error_2d" (B,) pixels.
    """
    from handlib.geometry import project_points
    from handlib.mano.fit import fit_to_keypoints_2d

    check_shape("keypoints_2d", keypoints_2d, (None, NUM_KEYPOINTS, 2), " pixels")
    check_shape("K", K, (keypoints_2d.shape[0], 3, 3), " intrinsics")
    if not torch.isfinite(K).all():
        raise ValueError("K: the 2D fit needs each crop's intrinsics, got NaN (a dataset without a camera); "
                         "give a nominal K, e.g. handlib.render.make_intrinsics")
    layer = layer or ManoLayer(num_pca_comps=NUM_PCA_COMPONENTS)
    answered = ~torch.isnan(keypoints_2d).flatten(1).all(1)                                      # (B,)
    blank = lambda *shape: keypoints_2d.new_full((len(keypoints_2d), *shape), float("nan"))    # noqa: E731
    joints, vertices = blank(NUM_KEYPOINTS, 3), blank(layer.v_template.shape[0], 3)
    pose, betas, error = blank(48), blank(NUM_BETAS), blank()
    if answered.any():
        with torch.enable_grad():
            fit = fit_to_keypoints_2d(layer, keypoints_2d[answered], K[answered], **fit_options)
        joints[answered], vertices[answered] = fit.output.joints, fit.output.vertices
        pose[answered], betas[answered], error[answered] = fit.output.full_pose, fit.betas, fit.reprojection_error_2d
    return Prediction(keypoints_2d=project_points(joints, K), keypoints_3d=joints, frame="camera",
                      vertices=vertices, mano_pose=pose, mano_betas=betas,
                      extras={"detected": keypoints_2d, "reprojection_error_2d": error})


# --------------------------------------------------------------------------------------------
# The method: two stages, the input columns and the loss ablations
# --------------------------------------------------------------------------------------------

def _stages(config: Boukhayma2019Config) -> list[Stage]:
    images = dataclasses.replace(image_stage(config, boukhayma2019_loss),
                                 parameters=lambda model: model.trainable_parameters())
    pretrain = dataclasses.replace(
        images, name="pretrain", loss=pretrain_loss,
        schedule=Schedule(config.pretrain_steps, config.batch_size, config.pretrain_lr,
                          milestones=config.pretrain_milestones, checkpoint_every=config.checkpoint_every))
    return [pretrain, images]


def _initialize(model: Boukhayma2019, config: Boukhayma2019Config) -> None:
    if config.pretrained_backbone:
        for encoder in (model.encoder, model.detector):
            if encoder is not None:
                backbone.load_pretrained(encoder)


CONFIGS = {
    # Live in the notebook and in CI, from the shipped backbone: 100 + 120 steps, 2.8 minutes of
    # training on one core of a busy 2-core CPU (seed 0, on the 256 test crops: 3D EPE 72 mm
    # root-aligned, 22 mm after Procrustes, 2D EPE 25 px).
    "quick": Boukhayma2019Config(),
    # What ships: about 50 minutes on one core of a 2-core CPU while another training runs (0.6 s a
    # step of 16 crops, measured; 4800 steps), over the 24 576 cached training hands of the backbone.
    "full": Boukhayma2019Config(train_samples=24_576, test_samples=512, steps=3600, batch_size=16, lr=1e-3,
                                milestones=(2700,), checkpoint_every=200, pretrain_steps=1200,
                                pretrain_milestones=(900,)),
}

# The input columns ship (chapter 4's table reads them); the loss ablations are the arms of an
# experiment, trained and reported by a benchmark script.
VARIANTS = {
    "rgb2d": Variant("image and the backbone's 21 score maps as input (the paper's RGB + 2D column)",
                     {"input": "rgb2d"}),
    "2d": Variant("the backbone's 21 score maps only as input (the paper's 2D column)", {"input": "2d"}),
    "no_mask": Variant("without L_mask", {"weight_mask": 0.0}, ships=False),
    "no_reg": Variant("without L_reg", {"weight_reg": 0.0}, ships=False),
    "no_3d": Variant("without L_3D (2D keypoints and masks only)", {"weight_3d": 0.0}, ships=False),
    "silhouette": Variant("L_mask on the soft silhouette instead of the vertices", {"mask_term": "silhouette"},
                          ships=False),
}

METHOD = Method(
    name="boukhayma2019",
    description="Boukhayma et al. 2019: an encoder regresses MANO's pose and shape and a weak-perspective camera",
    configs=CONFIGS, build_model=Boukhayma2019, stages=_stages, predict=boukhayma2019_predict,
    test_data=synthetic_test_set, alignment="root", initialize=_initialize, variants=VARIANTS)
