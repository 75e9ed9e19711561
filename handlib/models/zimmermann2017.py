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

Differences from the paper, so the course trains on a laptop CPU (reference/methods.md section 4):

* The three networks share the course's backbone (``handlib.models.backbone``), pre-trained once
  on synthetic hands and shipped, as the paper started PoseNet from Convolutional Pose Machines'
  weights: HandSegNet is the backbone's mask head, PoseNet's first stage its score-map head, and
  PoseNet's refinement stages and the lifting are trained here.
* Inputs are hand crops (the synthetic samples are centred on the hand; real images are cropped
  with ``handlib.data.datasets.crop_to_hand``), so the crop step after HandSegNet is left out.
* 128 x 128 crops and 32 x 32 score maps (the paper: 256 x 256 crops, 32 x 32 maps); narrower
  layers (``Zimmermann2017Config``); BatchNorm in the backbone and the refinement stages.
* The score maps' Gaussian is 2.5 cells wide (``backbone.SCORE_MAP_SIGMA_CELLS``; the paper: 2.2
  cells), and the learning rate is higher (1e-3; the paper: 1e-5 to 1e-4 for days).
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

from handlib.geometry import axis_angle_to_matrix
from handlib.methods import (ImageTraining, LossContext, Method, Prediction, Stage, Variant, image_stage,
                             synthetic_test_set)
from handlib.models import backbone
from handlib.models.backbone import (conv_bn_relu, keypoints_from_score_maps, score_map_loss, score_map_size,
                                     score_map_targets)
from handlib.skeleton import NUM_KEYPOINTS, SCALE_BONE, WRIST

# Course indices of the keypoints that define the canonical frame (RHD's 0, 12, 20 in the paper).
ROOT = WRIST                # 0: at the origin
ALIGN_KEYPOINT = 9          # middle MCP: on the +y axis
ROTATION_KEYPOINT = 17      # pinky MCP: in the xy plane (z = 0), x > 0

KEYPOINT_NOISE_FRACTION = 2.5 / 256   # the paper's uv noise of 2.5 px on 256 px, when training PosePrior


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
class Zimmermann2017Config(ImageTraining):
    """One run of Zimmermann & Brox on the course's platform (the paper's values in brackets).

    Attributes:
        encoder, encoder_width: the shared backbone's architecture (``backbone.ENCODER``...): HandSegNet
            is its mask head and PoseNet's first stage its score-map head [two VGG-19-like networks].
        pretrained_backbone: start from the shipped backbone [PoseNet from Convolutional Pose Machines].
        lifting: "canonical" (PosePrior: canonical frame + viewpoint, the paper's proposal) or
            "direct" (the ablation: regress the root-relative keypoints).
        pose_stages: PoseNet stages, the backbone's first plus refinements [3].
        refine_width, refine_kernel, refine_convs: refinement stage convolutions [128, 7, 5].
        prior_widths: PosePrior canonical stream widths, each twice (stride 1, 2) [32, 64, 128].
        prior_hidden: canonical stream fully connected sizes [512, 512].
        view_widths, view_hidden: the viewpoint stream's [64, 128, 256], [256, 128].

    Data and schedule (``methods.ImageTraining``): 128 px crops [256], score maps a quarter of them
    [32]; Adam at 1e-3 [1e-5 to 1e-4, for days].
    """
    encoder: str = backbone.ENCODER
    encoder_width: float = backbone.ENCODER_WIDTH
    pretrained_backbone: bool = True
    lifting: str = "canonical"
    pose_stages: int = 3
    refine_width: int = 48
    refine_kernel: int = 3
    refine_convs: int = 3
    prior_widths: tuple = (16, 32, 64)
    prior_hidden: tuple = (256, 256)
    view_widths: tuple = (16, 32, 64)
    view_hidden: tuple = (128, 64)

    def __post_init__(self):
        if self.lifting not in ("canonical", "direct"):
            raise ValueError(f"lifting: expected 'canonical' or 'direct', got {self.lifting!r}")

    @property
    def score_map_size(self) -> int:
        """Side of the score maps (``backbone.score_map_size(image_size)``)."""
        return score_map_size(self.image_size)


class PoseNet(nn.Module):
    """2D keypoints as score maps, on the backbone's features f (B, C, S/4, S/4).

    Stage 1 is the backbone's score-map head, c_1 = g_1(f); every refinement stage sees the previous
    maps too: c_t = g_t([c_{t-1}, f]) (Convolutional Pose Machines). Every stage is supervised.
    """

    def __init__(self, config: Zimmermann2017Config, channels: int):
        super().__init__()
        self.refinements = nn.ModuleList(
            nn.Sequential(conv_bn_relu(channels + NUM_KEYPOINTS, config.refine_width, config.refine_kernel),
                          *[conv_bn_relu(config.refine_width, config.refine_width, config.refine_kernel)
                            for _ in range(config.refine_convs - 1)],
                          nn.Conv2d(config.refine_width, NUM_KEYPOINTS, 1))
            for _ in range(config.pose_stages - 1))

    def forward(self, features: torch.Tensor, first_maps: torch.Tensor) -> list[torch.Tensor]:
        maps = [first_maps]                                                             # (B, 21, S/4, S/4)
        for refine in self.refinements:
            maps.append(refine(torch.cat([maps[-1], features], dim=1)))
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

    def __init__(self, config: Zimmermann2017Config):
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

    def __init__(self, config: Zimmermann2017Config):
        super().__init__()
        self.stream = ScoreMapStream(config.prior_widths, config.prior_hidden, NUM_KEYPOINTS * 3, 0.2,
                                     config.score_map_size)

    def forward(self, score_maps: torch.Tensor, is_right: torch.Tensor) -> dict:
        """score maps (B, 21, s, s), is_right (B,) -> {"keypoints_3d": (B, 21, 3)}."""
        return {"keypoints_3d": self.stream(score_maps, is_right).reshape(-1, NUM_KEYPOINTS, 3)}


class Zimmermann2017(nn.Module):
    """HandSegNet + PoseNet + (PosePrior or DirectLifting), on the shared backbone.

    The backbone (``backbone.HandEncoder``) gives the features f, HandSegNet's mask (its mask head)
    and PoseNet's first score maps (its score-map head); PoseNet's refinement stages and the lifting
    are this paper's own.

    Args:
        config: ``Zimmermann2017Config``.
    """

    def __init__(self, config: Zimmermann2017Config = Zimmermann2017Config()):
        super().__init__()
        self.config = config
        self.backbone = backbone.HandEncoder(config.encoder, config.encoder_width)
        self.posenet = PoseNet(config, self.backbone.out_channels)
        self.lifting = PosePrior(config) if config.lifting == "canonical" else DirectLifting(config)

    @property
    def lifting_kind(self) -> str:
        return self.config.lifting

    def forward(self, image: torch.Tensor, is_right: torch.Tensor, score_maps: torch.Tensor | None = None) -> dict:
        """Run the three networks.

        Args:
            image: (B, 3, S, S) in [0, 1], S = ``config.image_size``.
            is_right: (B,) hand side.
            score_maps: (B, 21, s, s) maps to lift instead of PoseNet's last stage (e.g. the
                ground truth's, as in training and in the paper's lifting ablation), or None.

        Returns:
            dict: "segmentation" (B, 1, S, S) hand logits, "score_maps" list of (B, 21, s, s), and the
            lifting's outputs ("keypoints_3d" (B, 21, 3) normalised root-relative, and for PosePrior
            "canonical" and "viewpoint").
        """
        size = self.config.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            raise ValueError(f"image: expected shape (B, 3, {size}, {size}) for this model "
                             f"(config.image_size), got {tuple(image.shape)}; resize or crop the images "
                             "(handlib.data.datasets.crop_to_hand) or build the model with another image_size")
        encoded = self.backbone(image)
        maps = self.posenet(encoded["features"], encoded["score_maps"])
        lifted = self.lifting(maps[-1] if score_maps is None else score_maps, is_right)
        segmentation = F.interpolate(encoded["mask_logits"], size=(size, size), mode="bilinear", align_corners=False)
        return {"segmentation": segmentation, "score_maps": maps, **lifted}


# --------------------------------------------------------------------------------------------
# Losses and prediction
# --------------------------------------------------------------------------------------------

def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def zimmermann2017_loss(model: Zimmermann2017, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """L = L_seg + L_2D + L_3D, each as in the paper (reference/methods.md section 4).

    * L_seg: the hand mask's cross-entropy (``backbone.mask_loss``, samples with ``has_mask``).
    * L_2D: ``backbone.score_map_loss`` summed over PoseNet's stages.
    * L_3D, canonical: mean((w_c_hat - w_c)^2) + mean((V_hat - V)^2); direct: mean((w_hat - w)^2) on
      the normalised root-relative keypoints (samples with ``has_3d``). The lifting sees the
      ground-truth score maps of the 2D keypoints jittered by ``KEYPOINT_NOISE_FRACTION`` of the image
      (noise drawn from ``context.generator``).

    Args:
        model: a ``Zimmermann2017``.
        batch: a batch of sample dicts (image (B, 3, H, W), mask, keypoints_2d, keypoints_3d, ...).
        context: the step's ``LossContext``.

    Returns:
        (total loss, {"segmentation", "score_maps", "lifting"}).
    """
    image, is_right, visibility = batch["image"], batch["is_right"], batch["visibility"]
    image_size = tuple(image.shape[-2:])
    target_maps = score_map_targets(batch["keypoints_2d"], visibility, image_size)
    noise = torch.randn(batch["keypoints_2d"].shape, generator=context.generator, device=image.device)
    noisy_2d = batch["keypoints_2d"] + KEYPOINT_NOISE_FRACTION * image_size[1] * noise
    out = model(image, is_right, score_maps=score_map_targets(noisy_2d, visibility, image_size))

    segmentation = backbone.mask_loss(out["segmentation"], batch["mask"], batch["has_mask"])
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
def zimmermann2017_predict(model: Zimmermann2017, batch: dict, config: Zimmermann2017Config | None = None,
                           score_maps_from: str = "image") -> Prediction:
    """Keypoints from images: PoseNet's last maps, argmax after bilinear upsampling, then lifting.

    Args:
        model: a ``Zimmermann2017``.
        batch: needs "image" (B, 3, H, W) and "is_right" (B,) (and "keypoints_2d", "visibility"
            when ``score_maps_from="ground_truth"``).
        config: unused (the model holds its config); the ``Method.predict`` signature.
        score_maps_from: "image" (the full pipeline) or "ground_truth" (lift the true 2D keypoints'
            maps, the paper's lifting ablation).

    Returns:
        ``Prediction``: keypoints_3d (B, 21, 3) root-relative in units of the middle MCP-PIP bone
        (frame "normalized": evaluate with alignment "gt_root_scale"), keypoints_2d (B, 21, 2)
        pixels; extras "mask" (B, H, W) hand probability and "score_maps" (B, 21, s, s).
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
    return Prediction(keypoints_2d=keypoints_from_score_maps(maps, image_size), keypoints_3d=out["keypoints_3d"],
                      frame="normalized",
                      extras={"mask": out["segmentation"][:, 0].sigmoid(), "score_maps": maps})


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
        ``handlib.evaluate.format_table(rows, columns=ABLATION_COLUMNS)`` prints them.
    """
    from functools import partial

    from handlib.evaluate import evaluate_model

    for name, model, kind in (("canonical_model", canonical_model, "canonical"),
                              ("direct_model", direct_model, "direct")):
        if getattr(model, "lifting_kind", None) != kind:
            raise ValueError(f"{name}: expected a Zimmermann2017 with lifting={kind!r}, "
                             f"got {getattr(model, 'lifting_kind', type(model).__name__)!r}")
    rows = []
    for lifting, model in (("direct", direct_model), ("canonical + viewpoint", canonical_model)):
        for source, label in (("ground_truth", "ground truth 2D"), ("image", "PoseNet (from the image)")):
            row = evaluate_model(METHOD, model, model.config, dataset, device, batch_size,
                                 predict=partial(zimmermann2017_predict, score_maps_from=source))
            rows.append({"lifting": lifting, "score_maps": label, "median_3d_mm": row["median_3d_mm"],
                         "epe_3d_mm": row["epe_3d_mm"], "auc_20_50": row["auc_20_50"],
                         "epe_procrustes_mm": row["epe_procrustes_mm"], "num_samples": row["num_samples"]})
    return rows


ABLATION_COLUMNS = {"lifting": "lifting", "score_maps": "score maps from", "median_3d_mm": "median EPE (mm)",
                    "epe_3d_mm": "mean EPE (mm)", "auc_20_50": "AUC 20-50 mm",
                    "epe_procrustes_mm": "Procrustes EPE (mm)"}


# --------------------------------------------------------------------------------------------
# The method: "zimmermann2017" and its variant "zimmermann2017:direct"
# --------------------------------------------------------------------------------------------

def _initialize(model: Zimmermann2017, config: Zimmermann2017Config) -> None:
    if config.pretrained_backbone:
        backbone.load_pretrained(model.backbone)


def _stages(config: Zimmermann2017Config) -> list[Stage]:
    return [image_stage(config, zimmermann2017_loss)]


CONFIGS = {
    # Live in the notebook and in CI: a few minutes on a laptop CPU, from the shipped backbone.
    "quick": Zimmermann2017Config(),
    # What ships: under an hour on one core of a 2-core CPU, from the shipped backbone.
    "full": Zimmermann2017Config(train_samples=24_576, test_samples=512, steps=2400, batch_size=16,
                                 lr=1e-3, milestones=(1800,), checkpoint_every=200),
}

METHOD = Method(
    name="zimmermann2017",
    description="Zimmermann & Brox 2017: HandSegNet + PoseNet + PosePrior (canonical frame + viewpoint)",
    configs=CONFIGS, build_model=Zimmermann2017, stages=_stages, predict=zimmermann2017_predict,
    test_data=synthetic_test_set, alignment="gt_root_scale", initialize=_initialize,
    variants={"direct": Variant("the lifting ablation: regress the root-relative keypoints directly",
                                {"lifting": "direct"})})
