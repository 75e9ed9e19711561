"""Chapter 5: Zhou, Habermann, Xu, Habibie, Theobalt & Xu, "Monocular Real-time Hand Shape and
Motion Capture using Multi-modal Data", CVPR 2020 ("minimal-hand": DetNet + IKNet).

A hand pose estimator that regresses joint positions is good at positions and bad at hands: its
fingers may bend backwards, and it gives no rotations to pose a mesh with. Zhou et al. split the
problem in three:

1. **DetNet** (images): three heads on the image features, each fed into the next:
   H, 21 heatmaps (where each keypoint is in the image); D, 21 x 3 *delta maps* (the unit direction
   of the bone ending at each keypoint); L, 21 x 3 *location maps* (the keypoint's 3D position,
   root-relative and normalised, written into every cell). Readout: (u, v) = argmax H_j, then
   X_j = L_j(u, v).
2. **Shape fit** (no learning): the MANO shape beta whose rest-pose bone lengths, relative to a
   reference bone, match DetNet's:  E(beta) = sum_b || l_b(beta) / l_ref(beta) - l_hat_b ||^2
   + lambda_beta || beta ||^2, solved by Levenberg-Marquardt (``fit_shape``).
3. **IKNet** (pose data only, no images): a fully connected network from [X, D, X_ref, D_ref]
   (84 x 3: the joints, their bone vectors, and the same for the rest pose of the fitted shape) to
   one unit quaternion per keypoint: the *global* rotation of the bone ending there. Because it
   trains on rotations of real hands ("MoCap"), it learns which rotations a hand makes, and its
   answer can pose MANO's mesh. Its losses: L_cos and L_l2 against the true rotations (MoCap
   only), L_xyz between the forward kinematics of its rotations and the joints (MoCap and
   "3DPosData", joints without rotations), and L_norm keeping the raw outputs unit.

The joints' frame (``palm_normalized``): relative to the middle finger's MCP (M0, keypoint 9), in
units of the wrist-to-M0 length, camera axes: X = (x - x_M0) / |x_W - x_M0|, as in the official
code (reference/methods.md section 8).

From global bone rotations to MANO's local ones (``local_pose_from_bone_rotations``): keypoint j's
bone runs from its parent p(j) to j and is turned by the global rotation of the MANO joint at p(j),
so q_j = G_{p(j)} (and q_wrist = G_wrist; the wrist and the five finger bases share it, which is why
IKNet outputs 21 quaternions for 16 rotations). MANO wants each joint's rotation relative to its
parent's frame, R_k = G_parent(k)^T G_k, and R_wrist = G_wrist is the global orientation. The
axis-angles of the R_k are MANO's 48 pose parameters (flat-hand convention), and the MANO layer
posed with them and the fitted beta gives the mesh.

Differences from the paper, so that it trains on a laptop CPU and fits the course's platform:

* DetNet sits on the course's shared backbone (stride 4, pre-trained on synthetic hands) instead of
  a ResNet-50; its heatmap head H is the backbone's score-map head (pre-trained, fine-tuned here,
  with the backbone's score-map loss), and the two coordinate channels join the features before
  the D and L heads.
* The D and L losses are means of the squared error weighted by the true heatmap of *every*
  keypoint in the crop (occluded ones too: their 3D label is known), normalised per keypoint by the
  weights' sum (``masked_map_loss``); the paper's are plain weighted sums.
* MoCap is the course's pose prior (``handlib.mano.prior``: grasp mixtures with true rotations) on
  random wrist rotations and shapes; 3DPosData is the prior's "free" poses (every joint anywhere
  within its limits), their joints only, with annotation noise (``PoseData``). The shape of each
  pose datum is known, so X_ref is the rest pose of the true shape in training, of the fitted one
  in ``zhou2020_predict``.
* IKNet's input joints get Gaussian noise in training (``Zhou2020Config.iknet_input_noise``), so
  that it meets DetNet's errors with some practice.
* IKNet works in the wrist's frame (``iknet_rotations``): the wrist's rotation, fixed by the six
  rigid palm points, is found by geometry (Kabsch) and taken out of the joints before IKNet sees
  them, and put back into its answer. The paper's IKNet answers in camera axes ("camera_frame",
  an ablation arm); on this course's data and budget it then puts 44 % of the finger angles of true
  joints outside their limits, against 0.3 % in the wrist's frame (``Zhou2020Config.iknet_frame``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from handlib.geometry import (axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quaternion, procrustes,
                              quaternion_to_matrix, standardize_quaternion)
from handlib.methods import (ImageTraining, LossContext, Method, Prediction, Schedule, Stage, Variant, check_shape,
                             image_stage, synthetic_test_set)
from handlib.models import backbone
from handlib.models.backbone import (conv_bn_relu, keypoints_from_score_maps, score_map_loss, score_map_size,
                                     score_map_targets)
from handlib.skeleton import BONES, MANO_PARENTS, MIDDLE_MCP, NUM_KEYPOINTS, NUM_MANO_JOINTS, ORDER_MAPS, PALM, \
    PARENTS, SCALE_BONE, WRIST

# The reference bone of the normalisation and of the shape fit: wrist -> middle MCP (W -> M0).
REFERENCE_BONE = BONES.index((WRIST, MIDDLE_MCP))
# MANO joint (0..15) at each course keypoint that is a joint (tips are vertices: >= 16).
_MANO_OF_KEYPOINT = ORDER_MAPS["mano"]
# The MANO joint whose global rotation turns the bone ending at keypoint j: the one at p(j).
BONE_ROTATION_JOINT = tuple(0 if j == WRIST else _MANO_OF_KEYPOINT[PARENTS[j]] for j in range(NUM_KEYPOINTS))
# For each MANO joint k, a keypoint whose bone G_k turns: the wrist's own slot for the wrist, else k's child.
_KEYPOINT_OF_MANO_ROTATION = tuple(
    WRIST if k == 0 else next(j for j in range(NUM_KEYPOINTS) if j != WRIST and BONE_ROTATION_JOINT[j] == k)
    for k in range(NUM_MANO_JOINTS))
# The rotation ``forward_kinematics`` turns bone j with: the wrist's for the palm bones, else q_j.
_FK_ROTATION = tuple(WRIST if j in PALM else j for j in range(NUM_KEYPOINTS))
# Depth of each keypoint in the kinematic tree (wrist 0, finger bases 1, ..., tips 4).
_DEPTH = [0] * NUM_KEYPOINTS
for _j in range(1, NUM_KEYPOINTS):
    _DEPTH[_j] = _DEPTH[PARENTS[_j]] + 1
_LEVELS = tuple(tuple(j for j in range(NUM_KEYPOINTS) if _DEPTH[j] == level) for level in range(1, max(_DEPTH) + 1))
# IKNet's input: [X, D, X_ref, D_ref], four blocks of 21 three-vectors.
IKNET_INPUT_SIZE = 4 * NUM_KEYPOINTS * 3
POSE_SOLVERS = ("iknet", "none", "optimisation")
IKNET_FRAMES = ("wrist", "camera")


# --------------------------------------------------------------------------------------------
# The joints' frame and the targets of DetNet's maps
# --------------------------------------------------------------------------------------------

def palm_normalized(keypoints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zhou et al.'s frame: X = (x - x_M0) / |x_W - x_M0|.

    Args:
        keypoints: (B, 21, 3), any unit (metres), camera axes, course order.

    Returns:
        (X (B, 21, 3) relative to the middle MCP in units of the wrist-to-middle-MCP length,
        length (B,) that length in the unit of ``keypoints``).
    """
    check_shape("keypoints", keypoints, (None, NUM_KEYPOINTS, 3), " (course order)")
    length = (keypoints[:, WRIST] - keypoints[:, MIDDLE_MCP]).norm(dim=-1)               # (B,)
    return (keypoints - keypoints[:, MIDDLE_MCP:MIDDLE_MCP + 1]) / length.clamp_min(1e-9)[:, None, None], length


def bone_vectors(keypoints: torch.Tensor) -> torch.Tensor:
    """d_j = x_j - x_p(j) for every keypoint, 0 for the wrist (the root). (B, 21, 3) -> (B, 21, 3)."""
    check_shape("keypoints", keypoints, (None, NUM_KEYPOINTS, 3), " (course order)")
    parents = [max(p, 0) for p in PARENTS]
    return keypoints - keypoints[:, parents]                                            # wrist: x_0 - x_0 = 0


def bone_directions(keypoints: torch.Tensor) -> torch.Tensor:
    """DetNet's delta target: unit bone directions (x_j - x_p(j)) / |x_j - x_p(j)|, 0 for the wrist.
    (B, 21, 3) -> (B, 21, 3)."""
    vectors = bone_vectors(keypoints)
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def coordinate_channels(batch: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """The two coordinate channels DetNet adds to its features: x and y of each cell from -1 to 1.
    -> (batch, 2, size, size), dtype and device of ``like``."""
    line = torch.linspace(-1.0, 1.0, size, dtype=like.dtype, device=like.device)
    ys, xs = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([xs, ys])[None].expand(batch, 2, size, size)


def read_location_maps(heatmaps: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """DetNet's readout: X_j = L_j(argmax H_j), the map's 3 values at the heatmap's peak cell.

    Args:
        heatmaps: (B, 21, s, s) H.
        maps: (B, 21, 3, s, s) location maps L (or delta maps D).

    Returns:
        (B, 21, 3) the maps' values at each keypoint's peak.
    """
    if not isinstance(heatmaps, torch.Tensor) or heatmaps.ndim != 4 or heatmaps.shape[1] != NUM_KEYPOINTS:
        raise ValueError(f"heatmaps: expected a tensor of shape (B, 21, s, s), got {tuple(heatmaps.shape)}")
    check_shape("maps", maps, (None, NUM_KEYPOINTS, 3, *heatmaps.shape[2:]), " (one 3-vector map per keypoint)")
    batch, count = heatmaps.shape[:2]
    peak = heatmaps.flatten(2).argmax(-1)                                               # (B, 21) cell index
    values = maps.flatten(3)                                                            # (B, 21, 3, s s)
    return values.gather(3, peak[:, :, None, None].expand(batch, count, 3, 1))[..., 0]  # (B, 21, 3)


def masked_map_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                    has_3d: torch.Tensor) -> torch.Tensor:
    """|| H_gt o (M - M_hat) ||^2, as a mean: sum_cells H_gt^2 |M - M_hat|^2 / sum_cells H_gt^2 per
    keypoint, then the mean over keypoints with a weight and over samples with a 3D label.

    Args:
        predicted: (B, 21, 3, s, s) delta or location maps.
        target: (B, 21, 3) the true vector of each keypoint (the same in every cell).
        weights: (B, 21, s, s) the true heatmaps H_gt (zero for keypoints outside the crop).
        has_3d: (B,) samples with a 3D label.

    Returns:
        scalar tensor, in the maps' units squared; 0 when nothing is weighted.
    """
    squared = ((predicted - torch.nan_to_num(target)[..., None, None]) ** 2).sum(2)     # (B, 21, s, s)
    mask = weights ** 2
    total = mask.sum((-2, -1))                                                          # (B, 21)
    per_keypoint = (squared * mask).sum((-2, -1)) / total.clamp_min(1e-9)               # (B, 21)
    present = (total > 1e-6).float() * has_3d.float()[:, None]
    return (per_keypoint * present).sum() / present.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Zhou2020Config(ImageTraining):
    """One run of Zhou et al. on the course's platform.

    Attributes:
        encoder, encoder_width, pretrained_backbone: the shared backbone (DetNet's trunk and its H head).
        head_width: channels of the 3 x 3 conv-BN-ReLU of the D and L heads.
        weight_heatmap, weight_delta, weight_location: the DetNet loss weights (paper's not known).
            Measured after 200 steps on the quick data, DetNet alone ("no_iknet"): with w_heat = 1 the 3D terms
            pull the shared features away from the 2D task (2D error 15.1 px from the shipped
            backbone, 19.8 px after; 3D EPE 76 mm); with w_heat = 10 the 2D error stays at 16.2 px
            and the 3D EPE is 65 mm. w_delta = 0.1 and w_loc = 1 start the D and L terms at
            about 0.2 and 1.2.
        weight_decay: Adam's L2 weight decay on both networks (the paper's L_reg).
        iknet_width, iknet_depth: IKNet's fully connected layers (paper: 6 x 1024, BN, sigmoid).
        iknet_steps, iknet_batch_size, iknet_lr: IKNet's stage (lr x 0.1 for the last quarter).
        mocap_samples: poses with their true rotations (the prior's grasp mixture).
        posdata_samples: poses with joints only (the prior's "free" poses); 0 = the "no_posdata" ablation.
        posdata_noise: annotation noise of 3DPosData's joints, units of the W-M0 length.
        iknet_input_noise: std of the Gaussian noise added to IKNet's input joints in training, W-M0 units.
        weight_cos, weight_l2, weight_xyz, weight_norm: IKNet's loss weights (paper's not known).
            Measured on 512 held-out MoCap poses after 2000 quick steps (256 x 4, inputs with 0.1 units
            of noise, about 14 mm): the joints of MANO posed by IKNet are 22 mm off with w_xyz = 1
            and 16 mm off with w_xyz = 10 (lr 3e-3; lr 1e-3: 15 mm in twice the steps' time); the
            wrist rotation is 18-24 degrees off. Without L_cos and L_l2 the joints are as good (16 mm)
            but the finger rotations are not (the bones' twist is free): the chapter's ablation.
        iknet_frame: "wrist" (the course: the wrist's rotation is taken out by Kabsch on the palm and IKNet
            answers the bones' rotations relative to it) or "camera" (the paper: IKNet answers them in
            camera axes). Measured with the ``full`` IKNet (1024 x 6, 6000 steps, seed 0) on the true
            joints of 128 synthetic test hands, camera frame against wrist frame: finger angles outside
            the prior's limits 43.7 % against 0.3 %, the largest excess 99 against 0.3 degrees, the finger
            rotations 44.5 against 7.1 degrees off the truth, the wrist's 10.9 against 2.7, the joints of
            the posed skeleton 0.127 against 0.042 W-M0 lengths off (``iknet_rotations``).
        pose_solver: "iknet" (the paper), "none" (DetNet's joints are the answer; no mesh), or
            "optimisation" (``handlib.mano.fit.fit_to_keypoints_3d``: MANO's shape and pose fitted to DetNet's
            joints, scaled to metres by the shape fit's hand; pose by optimisation, with the prior's limits).
        shape_weight, shape_iterations, shape_limit: lambda_beta, the Levenberg-Marquardt iterations and
            the bound on |beta_k| of ``fit_shape`` (the synthetic hands' betas lie within +-2.5).
        optimisation_steps: L-BFGS evaluations of the "optimisation" solver.
        detnet_from: "" (DetNet starts from the shared backbone), or a method name whose shipped
            ``full`` checkpoint's DetNet this run starts from (``checkpoints.load_model``). The IKNet
            ablation arms use it with ``steps`` = 0: they train IKNet alone on the shipped DetNet
            (about 12 minutes instead of 55), so that the arms differ by IKNet alone.
    """
    encoder: str = backbone.ENCODER
    encoder_width: float = backbone.ENCODER_WIDTH
    pretrained_backbone: bool = True
    head_width: int = 64
    weight_heatmap: float = 10.0
    weight_delta: float = 0.1
    weight_location: float = 1.0
    weight_decay: float = 1e-5
    iknet_width: int = 256
    iknet_depth: int = 4
    iknet_steps: int = 2000
    iknet_batch_size: int = 64
    iknet_lr: float = 3e-3
    mocap_samples: int = 4096
    posdata_samples: int = 4096
    posdata_noise: float = 0.01
    iknet_input_noise: float = 0.1
    weight_cos: float = 1.0
    weight_l2: float = 1.0
    weight_xyz: float = 10.0
    weight_norm: float = 0.1
    pose_solver: str = "iknet"
    iknet_frame: str = "wrist"
    shape_weight: float = 1e-3
    shape_iterations: int = 10
    shape_limit: float = 3.0
    optimisation_steps: int = 60
    detnet_from: str = ""

    def __post_init__(self):
        if self.iknet_frame not in IKNET_FRAMES:
            raise ValueError(f"iknet_frame: expected one of {IKNET_FRAMES}, got {self.iknet_frame!r}")
        if self.pose_solver not in POSE_SOLVERS:
            raise ValueError(f"pose_solver: expected one of {POSE_SOLVERS}, got {self.pose_solver!r}")
        if self.mocap_samples + self.posdata_samples < 1:
            raise ValueError("mocap_samples, posdata_samples: IKNet needs some pose data; got 0 and 0")
        if self.iknet_depth < 1 or self.iknet_width < 1:
            raise ValueError(f"iknet_depth, iknet_width: expected positive ints, got {self.iknet_depth}, "
                             f"{self.iknet_width}")

    @property
    def score_map_size(self) -> int:
        return score_map_size(self.image_size)


# --------------------------------------------------------------------------------------------
# DetNet
# --------------------------------------------------------------------------------------------

class DetNet(nn.Module):
    """Images (B, 3, S, S) in [0, 1] -> heatmaps H, delta maps D, location maps L at S/4.

        F = [backbone features, x, y]                    (B, C + 2, s, s)
        H = backbone score-map head(features)            (B, 21, s, s)
        D = head_D([F, H])                               (B, 21, 3, s, s)
        L = head_L([F, H, D])                            (B, 21, 3, s, s)

    Each head is a 3 x 3 conv-BN-ReLU and a 1 x 1 convolution (the paper's).
    """

    def __init__(self, config: Zhou2020Config):
        super().__init__()
        self.config = config
        self.backbone = backbone.HandEncoder(config.encoder, config.encoder_width)
        channels = self.backbone.out_channels + 2
        k = NUM_KEYPOINTS
        self.delta_head = nn.Sequential(conv_bn_relu(channels + k, config.head_width),
                                        nn.Conv2d(config.head_width, 3 * k, 1))
        self.location_head = nn.Sequential(conv_bn_relu(channels + 4 * k, config.head_width),
                                           nn.Conv2d(config.head_width, 3 * k, 1))

    def forward(self, image: torch.Tensor) -> dict:
        """image (B, 3, S, S) -> {"heatmaps" (B, 21, s, s), "delta_maps" (B, 21, 3, s, s),
        "location_maps" (B, 21, 3, s, s)}, s = S / 4."""
        size = self.config.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            raise ValueError(f"image: expected shape (B, 3, {size}, {size}) for this model (config.image_size), "
                             f"got {tuple(image.shape)}; crop or resize the images (handlib.images.square_crop_resize)")
        encoded = self.backbone(image)
        features, heatmaps = encoded["features"], encoded["score_maps"]
        batch, _, s, _ = features.shape
        features = torch.cat([features, coordinate_channels(batch, s, features)], 1)     # (B, C + 2, s, s)
        delta = self.delta_head(torch.cat([features, heatmaps], 1))                      # (B, 63, s, s)
        location = self.location_head(torch.cat([features, heatmaps, delta], 1))         # (B, 63, s, s)
        return {"heatmaps": heatmaps, "delta_maps": delta.unflatten(1, (NUM_KEYPOINTS, 3)),
                "location_maps": location.unflatten(1, (NUM_KEYPOINTS, 3))}


def detnet_loss(model: "Zhou2020", batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """L = w_heat L_heat + w_delta L_delta + w_loc L_loc (weight decay: the stage's Adam).

    * L_heat: the backbone's score-map loss of H (visible keypoints).
    * L_delta = || H_gt o (D - D_gt) ||^2, D_gt the unit bone directions (``masked_map_loss``).
    * L_loc = || H_gt o (L - L_gt) ||^2, L_gt = ``palm_normalized`` true joints.
    The D and L terms weigh every keypoint inside the crop (occluded ones too), samples with a 3D label.
    """
    config, image = model.config, batch["image"]
    out = model.detnet(image)
    size = tuple(image.shape[-2:])
    heat_target = score_map_targets(batch["keypoints_2d"], batch["visibility"], size)
    in_crop = score_map_targets(batch["keypoints_2d"], torch.ones_like(batch["visibility"]), size)
    joints = torch.nan_to_num(batch["keypoints_3d"])
    has_3d = batch["has_3d"].bool() & torch.isfinite(batch["keypoints_3d"]).flatten(1).all(1)
    location_target, _ = palm_normalized(joints)
    terms = {"heatmaps": score_map_loss(out["heatmaps"], heat_target, batch["visibility"]),
             "delta": masked_map_loss(out["delta_maps"], bone_directions(joints), in_crop, has_3d),
             "location": masked_map_loss(out["location_maps"], location_target, in_crop, has_3d)}
    total = (config.weight_heatmap * terms["heatmaps"] + config.weight_delta * terms["delta"]
             + config.weight_location * terms["location"])
    return total, terms


# --------------------------------------------------------------------------------------------
# The hand model's rest pose and the shape fit
# --------------------------------------------------------------------------------------------

def rest_keypoint_basis(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """The rest pose's 21 keypoints are linear in the shape: K(beta) = K_0 + sum_k beta_k K_k.

    Args:
        layer: a ``ManoLayer`` with ``flat_hand_mean=True`` (zero pose = the rest pose).

    Returns:
        (K_0 (21, 3) metres, K (num_betas, 21, 3) metres per unit of beta_k), course order.
    """
    if not getattr(layer, "flat_hand_mean", False):
        raise ValueError("layer: expected a ManoLayer with flat_hand_mean=True, so that zero pose is the rest pose")
    with torch.no_grad():
        count = layer.num_betas
        betas = torch.cat([torch.zeros(1, count), torch.eye(count)]).to(layer.v_template)
        joints = layer(betas=betas).joints                                             # (1 + K, 21, 3)
    return joints[0], joints[1:] - joints[:1]


def rest_keypoints(basis: tuple, betas: torch.Tensor) -> torch.Tensor:
    """K(beta) = K_0 + sum_k beta_k K_k: the rest-pose keypoints (B, 21, 3) metres of shapes betas (B, K)."""
    template, directions = basis
    check_shape("betas", betas, (None, directions.shape[0]))
    return template + torch.einsum("bk,kjd->bjd", betas, directions.to(betas))


def shape_fit_residuals(betas: torch.Tensor, bone_ratios: torch.Tensor, basis: tuple,
                        shape_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The residuals of E(beta) and their Jacobian, in closed form.

        r_b = l_b(beta) / l_ref(beta) - l_hat_b      (20 bones; the reference bone's is always 0)
        r_{20+k} = sqrt(lambda_beta) beta_k          (so that E = |r|^2)
        d_b(beta) = K_c(beta) - K_p(beta),  l_b = |d_b|,  dl_b/dbeta_k = d_b . (K_k,c - K_k,p) / l_b
        dr_b/dbeta_k = (dl_b/dbeta_k l_ref - l_b dl_ref/dbeta_k) / l_ref^2

    Args:
        betas: (B, K) current shapes.
        bone_ratios: (B, 20) l_hat_b, the target bone lengths over the reference bone's (``BONES`` order).
        basis: ``rest_keypoint_basis``.
        shape_weight: lambda_beta.

    Returns:
        (residuals (B, 20 + K), Jacobian (B, 20 + K, K)).
    """
    template, directions = basis
    count = directions.shape[0]
    check_shape("betas", betas, (None, count))
    check_shape("bone_ratios", bone_ratios, (None, len(BONES)), " (BONES order)")
    parents, children = [p for p, _ in BONES], [c for _, c in BONES]
    keypoints = rest_keypoints(basis, betas)                                              # (B, 21, 3)
    vectors = keypoints[:, children] - keypoints[:, parents]                              # (B, 20, 3)
    bone_directions_basis = (directions[:, children] - directions[:, parents]).to(betas)  # (K, 20, 3)
    lengths = vectors.norm(dim=-1)                                                        # (B, 20)
    d_lengths = torch.einsum("bnd,knd->bnk", vectors, bone_directions_basis) / lengths[..., None]  # (B, 20, K)
    ref = slice(REFERENCE_BONE, REFERENCE_BONE + 1)
    reference, d_reference = lengths[:, ref], d_lengths[:, ref]                           # (B, 1), (B, 1, K)
    ratios = lengths / reference
    d_ratios = (d_lengths * reference[..., None] - lengths[..., None] * d_reference) / reference[..., None] ** 2
    root = math.sqrt(shape_weight)
    eye = torch.eye(count, dtype=betas.dtype, device=betas.device).expand(len(betas), count, count)
    residuals = torch.cat([ratios - bone_ratios, root * betas], 1)                        # (B, 20 + K)
    jacobian = torch.cat([d_ratios, root * eye], 1)                                       # (B, 20 + K, K)
    return residuals, jacobian


@dataclass
class ShapeFit:
    """The result of ``fit_shape``.

    Attributes:
        betas: (B, K) the fitted shapes.
        energy: (iterations + 1, B) E(beta) at the start and after every iteration.
        history: (iterations + 1, B, K) beta at the start and after every iteration (for the chapter's figure).
    """
    betas: torch.Tensor
    energy: torch.Tensor
    history: torch.Tensor


def fit_shape(bone_ratios: torch.Tensor, basis: tuple, shape_weight: float = 1e-3, iterations: int = 10,
              damping: float = 1e-3, betas: torch.Tensor | None = None, limit: float | None = None) -> ShapeFit:
    """Levenberg-Marquardt on E(beta) = sum_b (l_b(beta)/l_ref(beta) - l_hat_b)^2 + lambda_beta |beta|^2.

    Each iteration solves (J^T J + mu I) delta = -J^T r (``shape_fit_residuals``) per sample, keeps
    beta + delta if E went down (then mu /= 3) and else stays (mu *= 4): Gauss-Newton steps where
    the linearisation holds, gradient steps where it does not. The pose plays no part: bone
    lengths do not change with the pose. With ``limit``, every step is clipped into
    [-limit, limit] (a projected step): bone ratios far from any hand's (an untrained or lost
    DetNet) otherwise push beta far outside the shapes the model was built from.

    Args:
        bone_ratios: (B, 20) target bone lengths divided by the reference bone's (W -> M0), ``BONES`` order.
        basis: ``rest_keypoint_basis(layer)``.
        shape_weight: lambda_beta.
        iterations: LM iterations.
        damping: mu at the start.
        betas: (B, K) the start, default zeros (the mean hand).
        limit: clip beta into [-limit, limit]; None = no bound.

    Returns:
        ``ShapeFit``.
    """
    check_shape("bone_ratios", bone_ratios, (None, len(BONES)), " (BONES order)")
    count = basis[1].shape[0]
    bone_ratios = bone_ratios.double()
    current = torch.zeros(len(bone_ratios), count, dtype=torch.float64, device=bone_ratios.device) \
        if betas is None else betas.double().clone()
    basis = (basis[0].double().to(bone_ratios.device), basis[1].double().to(bone_ratios.device))
    mu = torch.full((len(bone_ratios),), float(damping), dtype=torch.float64, device=bone_ratios.device)
    residuals, jacobian = shape_fit_residuals(current, bone_ratios, basis, shape_weight)
    energy = residuals.square().sum(1)
    energies, history = [energy], [current]
    eye = torch.eye(count, dtype=torch.float64, device=bone_ratios.device)
    for _ in range(iterations):
        normal = jacobian.transpose(1, 2) @ jacobian + mu[:, None, None] * eye           # (B, K, K)
        step = -torch.linalg.solve(normal, (jacobian.transpose(1, 2) @ residuals[..., None])[..., 0])
        if limit is not None:
            step = (current + step).clamp(-limit, limit) - current
        new_residuals, new_jacobian = shape_fit_residuals(current + step, bone_ratios, basis, shape_weight)
        new_energy = new_residuals.square().sum(1)
        better = new_energy < energy
        current = torch.where(better[:, None], current + step, current)
        residuals = torch.where(better[:, None], new_residuals, residuals)
        jacobian = torch.where(better[:, None, None], new_jacobian, jacobian)
        energy = torch.where(better, new_energy, energy)
        mu = torch.where(better, mu / 3.0, mu * 4.0)
        energies.append(energy)
        history.append(current)
    return ShapeFit(current.float(), torch.stack(energies).float(), torch.stack(history).float())


def bone_ratios_of(keypoints: torch.Tensor) -> torch.Tensor:
    """l_b / l_ref of keypoints (B, 21, 3): the 20 bone lengths (``BONES`` order) over the W -> M0 length."""
    vectors = bone_vectors(keypoints)[:, [c for _, c in BONES]]                          # (B, 20, 3)
    lengths = vectors.norm(dim=-1)
    return lengths / lengths[:, REFERENCE_BONE:REFERENCE_BONE + 1].clamp_min(1e-9)


# --------------------------------------------------------------------------------------------
# Bone rotations: from MANO, to MANO, and forward kinematics
# --------------------------------------------------------------------------------------------

def bone_rotations_from_mano(transforms: torch.Tensor) -> torch.Tensor:
    """IKNet's targets from a posed MANO hand: q_j = G_p(j), the global rotation turning bone j.

    Args:
        transforms: (B, 16, 4, 4) ``HandOutput.transforms`` (MANO's order; global joint frames).

    Returns:
        (B, 21, 4) unit quaternions (w, x, y, z), w >= 0, course order (the wrist and the 5 finger
        bases share the wrist's rotation).
    """
    check_shape("transforms", transforms, (None, NUM_MANO_JOINTS, 4, 4), " (HandOutput.transforms)")
    return matrix_to_quaternion(transforms[:, list(BONE_ROTATION_JOINT), :3, :3])


def local_pose_from_bone_rotations(quaternions: torch.Tensor) -> torch.Tensor:
    """MANO's 48 pose parameters from IKNet's 21 global bone rotations.

        G_k = rotation of the bone that MANO joint k turns (its child's q; the wrist's own q)
        R_0 = G_0 (global orientation),   R_k = G_parent(k)^T G_k   (k = 1..15)
        pose = axis-angle(R_0), ..., axis-angle(R_15), MANO's joint order, flat-hand convention

    Args:
        quaternions: (B, 21, 4) global bone rotations, course order (any sign and norm).

    Returns:
        (B, 48) axis-angle, radians: global orientation then the 15 finger joints.
    """
    check_shape("quaternions", quaternions, (None, NUM_KEYPOINTS, 4), " (one per keypoint, w x y z)")
    world = quaternion_to_matrix(quaternions[:, list(_KEYPOINT_OF_MANO_ROTATION)])      # (B, 16, 3, 3)
    parents = [max(p, 0) for p in MANO_PARENTS]
    local = world[:, parents].transpose(-1, -2) @ world                                 # (B, 16, 3, 3)
    local = torch.cat([world[:, :1], local[:, 1:]], 1)
    return matrix_to_axis_angle(local).flatten(1)                                       # (B, 48)


def forward_kinematics(quaternions: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Pose the reference skeleton with global bone rotations: X_j = X_p(j) + R(q_j) (X_ref,j - X_ref,p(j)).

    The five palm bones (wrist to each finger base) move rigidly with the wrist in MANO, so they
    are all turned by the wrist's rotation q_0 (the finger bases' own q_j equal it for a real hand,
    ``bone_rotations_from_mano``): this way L_xyz pins down q_0, the rotation that poses MANO's
    wrist, with five bones. The wrist stays where the reference has it; the result is moved back to
    the middle MCP (``palm_normalized``'s origin). The rotations keep every bone's length, so the
    units stay the reference's.

    Args:
        quaternions: (B, 21, 4) global bone rotations, course order.
        reference: (B, 21, 3) rest keypoints (``palm_normalized``).

    Returns:
        (B, 21, 3) posed keypoints relative to the middle MCP, the reference's units.
    """
    check_shape("quaternions", quaternions, (None, NUM_KEYPOINTS, 4), " (one per keypoint, w x y z)")
    check_shape("reference", reference, (None, NUM_KEYPOINTS, 3), " (rest keypoints, course order)")
    rotations = quaternion_to_matrix(quaternions[:, list(_FK_ROTATION)])                    # (B, 21, 3, 3)
    rotated = (rotations @ bone_vectors(reference)[..., None])[..., 0]                       # (B, 21, 3)
    positions = [None] * NUM_KEYPOINTS
    positions[WRIST] = reference[:, WRIST]
    for level in _LEVELS:                                                               # 4 levels, palm to tips
        for j in level:
            positions[j] = positions[PARENTS[j]] + rotated[:, j]
    posed = torch.stack(positions, 1)                                                   # (B, 21, 3)
    return posed - posed[:, MIDDLE_MCP:MIDDLE_MCP + 1]


def wrist_rotation(keypoints: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The rotation R that best turns the rest palm onto the posed one: Kabsch on the six ``PALM``
    points (``geometry.procrustes`` without scale), X_palm ~ R X_ref,palm. It is the wrist's global
    rotation G_wrist up to the joints' noise: the palm is rigid in MANO.

    Args:
        keypoints: (B, 21, 3) X, ``palm_normalized``.
        reference: (B, 21, 3) X_ref, the rest pose of the hand's shape, ``palm_normalized``.

    Returns:
        (B, 3, 3).
    """
    check_shape("keypoints", keypoints, (None, NUM_KEYPOINTS, 3), " (palm_normalized joints)")
    check_shape("reference", reference, (keypoints.shape[0], NUM_KEYPOINTS, 3), " (palm_normalized rest joints)")
    _, rotation, _ = procrustes(reference[:, list(PALM)], keypoints[:, list(PALM)], scale=False)
    return rotation


def rotate_quaternions(rotation: torch.Tensor, quaternions: torch.Tensor) -> torch.Tensor:
    """R q for every quaternion of a sample: (B, 3, 3) and (B, N, 4) -> (B, N, 4), unit, w >= 0."""
    return matrix_to_quaternion(rotation[:, None] @ quaternion_to_matrix(quaternions))


def analytical_bone_rotations(keypoints: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Inverse kinematics by geometry alone (no learning, no prior): the global bone rotations that
    turn the reference skeleton's bones onto the directions of ``keypoints``' bones.

        q_wrist = the rotation that best turns the wrist and the five finger bases of X_ref onto X's
                  (Kabsch, ``geometry.procrustes`` without scale); the five palm bones share it
        G_j = S(G_p(j) d_ref,j -> d_j) G_p(j)       the other bones, palm to tips

    with d_j = x_j - x_p(j) and S(a -> b) the smallest rotation taking direction a to direction b
    (about a x b, by the angle between them). A bone's direction fixes two of its rotation's three
    degrees of freedom; the third, the twist about the bone, is not seen in the joints, and this IK
    takes it from the parent (each local rotation is a pure swing). Every bone then points exactly
    where X's does; noise in X goes straight into the angles.

    Args:
        keypoints: (B, 21, 3) X, ``palm_normalized``.
        reference: (B, 21, 3) X_ref, the rest pose of the hand's shape, ``palm_normalized``.

    Returns:
        (B, 21, 4) unit quaternions (w, x, y, z), w >= 0, course order, as IKNet's
        (``local_pose_from_bone_rotations`` turns them into MANO's pose).
    """
    wrist = wrist_rotation(keypoints, reference)                                            # (B, 3, 3)
    rest, posed = bone_vectors(reference), bone_vectors(keypoints)                          # (B, 21, 3)
    world = [wrist] * NUM_KEYPOINTS
    for level in _LEVELS[1:]:                                       # the palm bones keep the wrist's rotation
        for j in level:
            turned = (world[PARENTS[j]] @ rest[:, j, :, None])[..., 0]                       # (B, 3)
            axis = torch.cross(turned, posed[:, j], dim=-1)                        # |a x b| = |a| |b| sin
            angle = torch.atan2(axis.norm(dim=-1), (turned * posed[:, j]).sum(-1))           # (B,)
            swing = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12) * angle[:, None]
            world[j] = axis_angle_to_matrix(swing) @ world[PARENTS[j]]
    return matrix_to_quaternion(torch.stack(world, 1))                                      # (B, 21, 4)


# --------------------------------------------------------------------------------------------
# IKNet
# --------------------------------------------------------------------------------------------

def iknet_input(keypoints: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[X, D, X_ref, D_ref]: joints, their bone vectors, and the same for the rest pose.

    Args:
        keypoints: (B, 21, 3) X, ``palm_normalized``.
        reference: (B, 21, 3) X_ref, the rest pose of the hand's shape, ``palm_normalized``.

    Returns:
        (B, 84, 3).
    """
    check_shape("keypoints", keypoints, (None, NUM_KEYPOINTS, 3), " (palm_normalized joints)")
    check_shape("reference", reference, (None, NUM_KEYPOINTS, 3), " (palm_normalized rest joints)")
    return torch.cat([keypoints, bone_vectors(keypoints), reference, bone_vectors(reference)], 1)


class IKNet(nn.Module):
    """[X, D, X_ref, D_ref] (B, 84, 3) -> 21 global bone rotations.

        h_0 = flatten(input) (252);  h_i = sigmoid(BN(W_i h_{i-1} + b_i)), i = 1..depth;  q~ = W h (84)
        q = q~ / |q~| with w >= 0 (``geometry.standardize_quaternion``)

    Args:
        width, depth: the hidden layers (paper: 1024, 6).
    """

    def __init__(self, width: int = 1024, depth: int = 6):
        super().__init__()
        layers, features = [], IKNET_INPUT_SIZE
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.BatchNorm1d(width), nn.Sigmoid()]
            features = width
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(features, NUM_KEYPOINTS * 4)

    def forward(self, inputs: torch.Tensor) -> dict:
        """inputs (B, 84, 3) -> {"quaternions" (B, 21, 4) unit, w >= 0; "raw" (B, 21, 4); "norm" (B, 21)}."""
        check_shape("inputs", inputs, (None, 4 * NUM_KEYPOINTS, 3), " ([X, D, X_ref, D_ref], iknet_input)")
        raw = self.output(self.hidden(inputs.flatten(1))).unflatten(1, (NUM_KEYPOINTS, 4))   # (B, 21, 4)
        quaternions, norm = standardize_quaternion(raw)
        return {"quaternions": quaternions, "raw": raw, "norm": norm}


def iknet_rotations(iknet: IKNet, keypoints: torch.Tensor, reference: torch.Tensor,
                    frame: str = "wrist") -> dict:
    """IKNet's global bone rotations of the joints X, in the frame it works in.

    "camera" (the paper): IKNet sees X as it is and answers rotations in the camera's axes; it must
    learn the wrist's rotation, uniformly random over the sphere, together with the fingers'.
    "wrist" (the course's default): the wrist's rotation R = ``wrist_rotation``(X, X_ref) is taken
    out first by geometry; IKNet sees R^T X (the hand with its palm turned like the rest pose's),
    answers q' in that frame, and q = R q'. The network then learns only what the joints do not
    give away: the fingers' rotations relative to the palm, with the bones' twist.

    Args:
        iknet: an ``IKNet``.
        keypoints, reference: (B, 21, 3) X and X_ref, ``palm_normalized``.
        frame: "wrist" or "camera".

    Returns:
        {"quaternions" (B, 21, 4) in camera axes, unit, w >= 0; "in_frame" (B, 21, 4) IKNet's own
        answer q'; "norm" (B, 21) its raw norms; "frame" (B, 3, 3) R (the identity for "camera")}.
    """
    if frame not in IKNET_FRAMES:
        raise ValueError(f"frame: expected one of {IKNET_FRAMES}, got {frame!r}")
    if frame == "wrist":
        rotation = wrist_rotation(keypoints, reference)                                    # (B, 3, 3)
    else:
        rotation = torch.eye(3, dtype=keypoints.dtype, device=keypoints.device).expand(len(keypoints), 3, 3)
    out = iknet(iknet_input(keypoints @ rotation, reference))                               # R^T x, per row
    quaternions = out["quaternions"] if frame == "camera" else rotate_quaternions(rotation, out["quaternions"])
    return {"quaternions": quaternions, "in_frame": out["quaternions"], "norm": out["norm"], "frame": rotation}


def iknet_losses(quaternions: torch.Tensor, norm: torch.Tensor, target: torch.Tensor, keypoints: torch.Tensor,
                 reference: torch.Tensor, has_rotation: torch.Tensor) -> dict:
    """IKNet's four terms, each a mean over keypoints and samples.

        L_cos  = 1 - <q_gt, q_hat>           (= 1 - Re(q_gt q_hat^-1) for unit quaternions; MoCap)
        L_l2   = |q_gt - q_hat|^2                                                          (MoCap)
        L_xyz  = |X - FK(q_hat, X_ref)|^2    (all pose data, W-M0 units squared)
        L_norm = |1 - |q~||                  (the raw outputs)

    Args:
        quaternions: (B, 21, 4) q_hat, unit with w >= 0. norm: (B, 21) |q~|.
        target: (B, 21, 4) q_gt, unit with w >= 0 (anything where ``has_rotation`` is False).
        keypoints, reference: (B, 21, 3) X and X_ref, ``palm_normalized``.
        has_rotation: (B,) samples with true rotations.

    Returns:
        {"cos", "l2", "xyz", "norm"}: scalar tensors.
    """
    weights = has_rotation.float()
    target = torch.nan_to_num(target)
    per_sample_cos = (1.0 - (quaternions * target).sum(-1)).mean(1)                    # (B,)
    per_sample_l2 = (quaternions - target).square().sum(-1).mean(1)                    # (B,)
    xyz = (forward_kinematics(quaternions, reference) - keypoints).square().sum(-1).mean()
    return {"cos": (per_sample_cos * weights).sum() / weights.sum().clamp_min(1.0),
            "l2": (per_sample_l2 * weights).sum() / weights.sum().clamp_min(1.0),
            "xyz": xyz, "norm": (1.0 - norm).abs().mean()}


def iknet_loss(model: "Zhou2020", batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """IKNet's stage: w_cos L_cos + w_l2 L_l2 + w_xyz L_xyz + w_norm L_norm (``iknet_losses``), with
    noise on the input joints drawn from the step's generator (``iknet_input_noise``).

    The terms compare IKNet's own answer q' with the truth turned into its frame (R^T q_gt and
    R^T X, R from the noisy joints, as at test time): the targets of a hand are then the same
    whichever way its wrist points. (``forward_kinematics`` turns with its rotations, FK(R q') =
    R FK(q'), so L_xyz is the same in either frame.)"""
    config = model.config
    keypoints, reference = batch["keypoints"], batch["reference"]
    noisy = keypoints + config.iknet_input_noise * torch.randn(keypoints.shape, generator=context.generator,
                                                               device=keypoints.device)
    out = iknet_rotations(model.iknet, noisy, reference, config.iknet_frame)
    unturn = out["frame"].transpose(-1, -2)                                               # R^T
    target = rotate_quaternions(unturn, torch.nan_to_num(batch["quaternions"]))            # 3DPosData: masked
    terms = iknet_losses(out["in_frame"], out["norm"], target, keypoints @ out["frame"], reference,
                         batch["has_rotation"])
    total = (config.weight_cos * terms["cos"] + config.weight_l2 * terms["l2"] + config.weight_xyz * terms["xyz"]
             + config.weight_norm * terms["norm"])
    return total, terms


class PoseData(Dataset):
    """IKNet's training data: no images, only hands posed by the course's pose prior.

    * MoCap (``mocap_samples``): the prior's grasp mixture, with the true bone rotations.
    * 3DPosData (``posdata_samples``): the prior's "free" poses (every joint anywhere within its
      limits), their joints only, with Gaussian annotation noise (``posdata_noise``).

    Every pose has a uniformly random wrist rotation and a shape beta ~ N(0, 1) clipped to +-2.5
    (the synthetic images' distribution). Built once, in memory, from ``seed``.

    Each sample: "keypoints" (21, 3) X and "reference" (21, 3) X_ref (``palm_normalized``),
    "quaternions" (21, 4) the true bone rotations (NaN for 3DPosData), "has_rotation" (bool),
    "pose" (48) and "betas" (10).
    """

    def __init__(self, mocap_samples: int, posdata_samples: int, seed: int, posdata_noise: float = 0.0,
                 layer=None, chunk: int = 1024):
        from handlib.mano import ManoLayer
        from handlib.mano.prior import default_prior

        layer = layer if layer is not None else ManoLayer(flat_hand_mean=True)
        prior, generator = default_prior(), torch.Generator().manual_seed(int(seed))
        count = mocap_samples + posdata_samples
        fingers = [prior.sample_poses(n, generator, kind) for n, kind in ((mocap_samples, "mixture"),
                                                                         (posdata_samples, "free")) if n > 0]
        fingers = torch.cat(fingers)                                                     # (N, 45)
        orientation = prior.sample_global_orientations(count, generator)                 # (N, 3)
        betas = torch.randn(count, layer.num_betas, generator=generator).clamp(-2.5, 2.5)
        basis = rest_keypoint_basis(layer)
        keypoints, quaternions = [], []
        with torch.no_grad():
            for start in range(0, count, chunk):
                part = slice(start, start + chunk)
                hand = layer(hand_pose=fingers[part], betas=betas[part], global_orient=orientation[part])
                keypoints.append(palm_normalized(hand.joints)[0])
                quaternions.append(bone_rotations_from_mano(hand.transforms))
        self.keypoints = torch.cat(keypoints)                                            # (N, 21, 3)
        self.reference = palm_normalized(rest_keypoints(basis, betas))[0]                # (N, 21, 3)
        self.quaternions = torch.cat(quaternions)                                        # (N, 21, 4)
        self.has_rotation = torch.arange(count) < mocap_samples
        noise = posdata_noise * torch.randn(self.keypoints.shape, generator=generator)
        self.keypoints = torch.where(self.has_rotation[:, None, None], self.keypoints, self.keypoints + noise)
        self.quaternions[~self.has_rotation] = torch.nan
        self.pose, self.betas = torch.cat([orientation, fingers], 1), betas

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, index) -> dict:
        return {"keypoints": self.keypoints[index], "reference": self.reference[index],
                "quaternions": self.quaternions[index], "has_rotation": self.has_rotation[index],
                "pose": self.pose[index], "betas": self.betas[index]}


# --------------------------------------------------------------------------------------------
# The whole model and its prediction
# --------------------------------------------------------------------------------------------

class Zhou2020(nn.Module):
    """DetNet, IKNet and the hand model (MANO layer, flat-hand convention; no parameters).

    Args:
        config: ``Zhou2020Config``.
    """

    def __init__(self, config: Zhou2020Config = Zhou2020Config()):
        super().__init__()
        from handlib.mano import ManoLayer

        self.config = config
        self.detnet = DetNet(config)
        self.iknet = IKNet(config.iknet_width, config.iknet_depth)
        self.hand = ManoLayer(flat_hand_mean=True)
        template, directions = rest_keypoint_basis(self.hand)
        self.register_buffer("rest_template", template, persistent=False)               # (21, 3)
        self.register_buffer("rest_directions", directions, persistent=False)           # (K, 21, 3)

    @property
    def basis(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``rest_keypoint_basis`` of the hand model."""
        return self.rest_template, self.rest_directions

    def forward(self, image: torch.Tensor) -> dict:
        """DetNet and its readout: image (B, 3, S, S) -> DetNet's maps, plus "keypoints" (B, 21, 3)
        ``palm_normalized`` (X_j = L_j at argmax H_j) and "bones" (B, 21, 3) D at the same cells."""
        out = self.detnet(image)
        out["keypoints"] = read_location_maps(out["heatmaps"], out["location_maps"])
        out["bones"] = read_location_maps(out["heatmaps"], out["delta_maps"])
        return out

    def solve_pose(self, keypoints: torch.Tensor, betas: torch.Tensor) -> dict:
        """IKNet and the hand model: X (B, 21, 3) ``palm_normalized`` and shapes (B, K) ->
        {"quaternions" (B, 21, 4), "pose" (B, 48), "hand" HandOutput of MANO(pose, betas), metres}."""
        reference = palm_normalized(rest_keypoints(self.basis, betas))[0]
        quaternions = iknet_rotations(self.iknet, keypoints, reference, self.config.iknet_frame)["quaternions"]
        pose = local_pose_from_bone_rotations(quaternions)
        hand = self.hand(hand_pose=pose[:, 3:], betas=betas, global_orient=pose[:, :3])
        return {"quaternions": quaternions, "pose": pose, "hand": hand}


@torch.no_grad()
def zhou2020_predict(model: Zhou2020, batch: dict, config: Zhou2020Config | None = None) -> Prediction:
    """Images -> DetNet -> shape fit -> IKNet -> MANO.

    Right hands: a left hand is mirrored before and after by the course's photo pipeline
    (``handlib.predict.predict_images``) and evaluation (``mirror_sample``), as for every method.

    Args:
        model: a ``Zhou2020``.
        batch: "image" (B, 3, S, S) in [0, 1], right hands.
        config: the run's config (default the model's); its ``pose_solver`` decides step 3.

    Returns:
        ``Prediction`` with keypoints_2d (B, 21, 2) pixels of the crop (argmax of H), keypoints_3d
        (B, 21, 3) wrist at the origin, camera axes, in units of the fitted hand's middle MCP-PIP bone
        (frame "normalized", as chapters 2 and 3: the method's alignment "gt_root_scale" multiplies
        by the true bone; DetNet's own W-M0 units would need its predicted bone, noisier), mano_betas
        (B, 10); with the "iknet" and "optimisation" solvers also vertices (B, 778, 3), same frame,
        and mano_pose (B, 48) (MANO(mano_pose, mano_betas) is the hand in metres). Extras: "heatmaps",
        "keypoints_normalized" (DetNet's X),
        "quaternions" (IKNet's, "iknet" only).
    """
    config = config or model.config
    image = batch["image"]
    out = model(image)
    keypoints_2d = keypoints_from_score_maps(out["heatmaps"], tuple(image.shape[-2:]))       # (B, 21, 2)
    joints = out["keypoints"]                                                                # (B, 21, 3)
    betas = fit_shape(bone_ratios_of(joints), model.basis, config.shape_weight, config.shape_iterations,
                      limit=config.shape_limit).betas
    rest = rest_keypoints(model.basis, betas)                                                # (B, 21, 3) m
    unit = (rest[:, WRIST] - rest[:, MIDDLE_MCP]).norm(dim=-1)                               # (B,) m
    metric = (joints - joints[:, WRIST:WRIST + 1]) * unit[:, None, None]                     # (B, 21, 3) m
    vertices = pose = None
    extras = {"heatmaps": out["heatmaps"], "keypoints_normalized": joints}
    if config.pose_solver == "iknet":
        solved = model.solve_pose(joints, betas)
        hand, pose = solved["hand"], solved["pose"]
        extras["quaternions"] = solved["quaternions"]
    elif config.pose_solver == "optimisation":
        from handlib.mano.fit import fit_to_keypoints_3d

        with torch.enable_grad():                       # shape and pose fitted together, from the mean hand
            fit = fit_to_keypoints_3d(model.hand, metric, steps=config.optimisation_steps)
        pose, betas = torch.cat([fit.global_orient, fit.hand_pose], 1).detach(), fit.betas.detach()
        hand = model.hand(hand_pose=pose[:, 3:], betas=betas, global_orient=pose[:, :3])
        rest = rest_keypoints(model.basis, betas)
    if pose is not None:
        wrist = hand.joints[:, WRIST:WRIST + 1]
        metric, vertices = hand.joints - wrist, hand.vertices - wrist
    # In units of the fitted hand's scale bone (middle MCP -> PIP), the frame "normalized": the
    # evaluation multiplies by the true bone ("gt_root_scale"), as for chapters 2 and 3.
    bone = (rest[:, SCALE_BONE[1]] - rest[:, SCALE_BONE[0]]).norm(dim=-1)[:, None, None]        # (B, 1, 1) m
    metric = metric / bone
    vertices = None if vertices is None else vertices / bone
    return Prediction(keypoints_2d=keypoints_2d, keypoints_3d=metric, frame="normalized", vertices=vertices,
                      mano_pose=pose, mano_betas=betas, extras=extras)


# --------------------------------------------------------------------------------------------
# Pose plausibility (the paper's Figure 8)
# --------------------------------------------------------------------------------------------

def pose_implausibility(pose: torch.Tensor, prior=None, tolerance_degrees: float = 0.01) -> dict:
    """How far poses lie outside the course prior's joint limits (``handlib.mano.prior``).

    Args:
        pose: (B, 48) MANO axis-angles (global orientation first; it is not judged), flat-hand convention.
        prior: a ``HandPosePrior``; None = the default hand model's.
        tolerance_degrees: an angle counts as outside when it exceeds its limit by more than this
            (poses sampled on a limit land a rounding error beyond it).

    Returns:
        {"violation": (B,) sum of squared excess angles, rad^2 (``limit_violation``);
         "max_excess_degrees": (B,) the largest excess angle of any joint axis, degrees;
         "fraction_outside": (B,) the fraction of the 45 joint angles outside their limits}.
    """
    from handlib.mano.prior import default_prior

    check_shape("pose", pose, (None, 48), " (MANO axis-angles, global orientation first)")
    prior = prior or default_prior()
    angles = prior.to_anatomical(pose[:, 3:])                                              # (B, 15, 3)
    limits = prior.limits.to(angles)
    excess = torch.relu(limits[..., 0] - angles) + torch.relu(angles - limits[..., 1])     # (B, 15, 3)
    return {"violation": prior.limit_violation(pose[:, 3:]),
            "max_excess_degrees": torch.rad2deg(excess.flatten(1).max(1).values),
            "fraction_outside": (excess > math.radians(tolerance_degrees)).float().flatten(1).mean(1)}


# --------------------------------------------------------------------------------------------
# The method: its two stages and the ablation's variants
# --------------------------------------------------------------------------------------------

def _stages(config: Zhou2020Config) -> list[Stage]:
    iknet = Stage("iknet",
                  Schedule(config.iknet_steps, config.iknet_batch_size, config.iknet_lr,
                           milestones=(config.iknet_steps * 3 // 4,), weight_decay=config.weight_decay,
                           checkpoint_every=max(config.iknet_steps, 1)),
                  lambda seed: PoseData(config.mocap_samples, config.posdata_samples, seed, config.posdata_noise),
                  iknet_loss, parameters=lambda model: model.iknet.parameters())
    detnet = image_stage(config, detnet_loss, "detnet")
    schedule = dataclasses.replace(detnet.schedule, weight_decay=config.weight_decay)
    detnet = dataclasses.replace(detnet, schedule=schedule,
                                 parameters=lambda model: model.detnet.parameters())
    return [iknet, detnet] if config.pose_solver == "iknet" else [detnet]


def _initialize(model: Zhou2020, config: Zhou2020Config) -> None:
    if config.detnet_from:
        from handlib.checkpoints import copy_weights

        copy_weights(model, config.detnet_from, ("detnet.",))
    elif config.pretrained_backbone:
        backbone.load_pretrained(model.detnet.backbone)


CONFIGS = {
    # Live in the notebook and in CI, from the shipped backbone: measured 4.2 minutes in all on one core
    # of a busy 2-core CPU (IKNet 2000 steps, DetNet 120 steps, the 256 test images): 2D 15.7 px, 3D EPE
    # 67.2 mm (gt_root_scale), Procrustes 23.0 mm, mesh 17.3 mm (seed 0).
    "quick": Zhou2020Config(),
    # What ships: 42 minutes on one core of a busy 2-core CPU (measured, 2026-12-03): IKNet 1024 x 6,
    # 6000 steps of 128 at about 0.1 s (10 min; its 65 536 poses take 10 s to build), then DetNet
    # 2400 steps of 16 at about 0.8 s (32 min). Synthetic test: 3D EPE 47.9 mm (true root and scale),
    # Procrustes 17.8 mm, mesh 12.9 mm, 2D 11.4 px.
    "full": Zhou2020Config(train_samples=24_576, test_samples=512, steps=2400, batch_size=16, milestones=(1800,),
                           checkpoint_every=200, iknet_width=1024, iknet_depth=6, iknet_steps=6000,
                           iknet_batch_size=128, mocap_samples=32_768, posdata_samples=32_768),
}

# The ablation's arms (``benchmarks`` trains them; none ships). "no_iknet" and "pose_by_optimisation"
# need no training of their own: they read the shipped DetNet with another ``pose_solver``
# (``evaluate_model(..., predict=...)`` with ``dataclasses.replace(config, pose_solver=...)``). The
# IKNet arms train IKNet alone on the shipped DetNet (``detnet_from``, no DetNet steps).
_ON_SHIPPED_DETNET = {"detnet_from": "zhou2020", "steps": 0}
VARIANTS = {
    "no_iknet": Variant("DetNet's joints are the answer (no IKNet, no mesh)", {"pose_solver": "none"}, ships=False),
    "pose_by_optimisation": Variant("MANO fitted to DetNet's joints by optimisation instead of IKNet",
                                    {"pose_solver": "optimisation"}, ships=False),
    "no_rotation_loss": Variant("IKNet without L_cos and L_l2 (joints only)",
                                {"weight_cos": 0.0, "weight_l2": 0.0, **_ON_SHIPPED_DETNET}, ships=False),
    "no_posdata": Variant("IKNet without 3DPosData (MoCap only)", {"posdata_samples": 0, **_ON_SHIPPED_DETNET},
                          ships=False),
    "no_l2": Variant("IKNet without L_l2", {"weight_l2": 0.0, **_ON_SHIPPED_DETNET}, ships=False),
    "no_cos": Variant("IKNet without L_cos", {"weight_cos": 0.0, **_ON_SHIPPED_DETNET}, ships=False),
    "camera_frame": Variant("IKNet in the camera frame, as the paper's (the wrist's rotation learned too)",
                            {"iknet_frame": "camera", **_ON_SHIPPED_DETNET}, ships=False),
}

METHOD = Method(
    name="zhou2020",
    description="Zhou et al. 2020: DetNet (heat, delta, location maps) + shape fit + IKNet trained on pose data",
    configs=CONFIGS, build_model=Zhou2020, stages=_stages, predict=zhou2020_predict, test_data=synthetic_test_set,
    alignment="gt_root_scale", initialize=_initialize, variants=VARIANTS)
