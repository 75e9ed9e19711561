"""Chapter 6: Ge, Ren, Li, Xue, Wang, Cai & Yuan, "3D Hand Shape and Pose Estimation from a Single
RGB Image", CVPR 2019.

MANO's 61 numbers can only make hands MANO can make. Ge et al. instead predict *every vertex* of
the hand's mesh, with convolutions on the mesh's graph (``handlib.models.graph``), and regress the
21 joints from the mesh:

    image -> backbone -> [score maps, features] -> feature block -> f (a vector)
    f -> FC -> coarsest graph (V_4 x C) -> upsample, ChebConv ... -> mesh (778 x 3): (u, v, d)
    mesh -> ChebConv, pool ... -> FC -> joints (21 x 3): (u, v, d)

Each vertex (and joint) is (u, v, d): its position in the crop (u, v in crop units, 0 to 1 across
the crop: the paper's bounding-box-normalised image coordinates) and its depth relative to the
wrist, d = (z - z_wrist) / ``DEPTH_UNIT`` (the paper: d = (z - z_root) / s with each hand's scale
s; ours is the mean scale bone of the training hands, a fixed 4.29 cm, so that an image without a
3D label, which has no s, is on the same scale). Image-plane coordinates anchor the mesh on the
image: a mesh that lies where the hand is can be rendered and compared with a depth map without
first estimating a camera. To lift (u, v, d) to metres (``lift``) takes the wrist's depth z_wrist
and the intrinsics K:

    z = z_wrist + d DEPTH_UNIT,    x = (u S - c_x) z / f_x,    y = (v S - c_y) z / f_y.

Ge et al. take z_wrist (and s) from the ground truth at test time (reference/methods.md, section
7). Ours predicts the one number the lifting needs from the image, the crop's extent at the
wrist's depth, e = z_wrist S / f_x (metres across the crop; ``crop_extent``), so the method stands
on its own; its 3D output is root-relative and it is scored with root alignment like chapter 4.

Losses (``Ge2019Config`` holds the weights):

* full supervision (synthetic images with MANO meshes):
      L = L_H + w_M L_M + w_J L_J + w_e L_e
  L_H the score maps' loss (``backbone.score_map_loss``); L_M the mesh loss against the true mesh,
  L_J the joints' squared error, both on the (u, v, d) lifted with the *true* wrist depth (so
  that they judge the mesh's shape, not the extent head); L_e = |log e_hat - log e|.
  The mesh loss (``mesh_loss``) is, in units of the mean scale bone (``LOSS_UNIT``):
      L_M = w_v L_v + w_n L_n + w_l L_len + w_lap L_lap
      L_v   = mean_i ||v_hat_i - v_i||^2                                      (vertices)
      L_n   = mean_t mean_{(i,j) in t} <v_hat_i - v_hat_j, n_t>^2            (normals; n_t true)
      L_len = mean_{(i,j) in E} (||v_hat_i - v_hat_j|| - ||v_i - v_j||)^2     (edge lengths)
      L_lap = mean_i ||delta_hat_i - delta_i||^2, delta_i = v_i - mean_{j~i} v_j   (Laplacian)
* weak supervision (images with only 2D keypoints and a depth map; ``weak_loss``):
      L = L_H + w_D L_D + w_P L_M(mesh_hat, mesh_teacher)
  L_D compares the soft-rendered depth of the predicted mesh (``handlib.render.soft_depth``) with
  the depth sensor's map (``handlib.data.depth_sensor``, read as ``cai2018.depth_targets``), on the
  cells both cover, up to a constant (the wrist's depth is not known): ``depth_map_loss``. The
  pseudo-ground truth is the mesh of the fully supervised model, frozen at the start of the weak
  stage (``Ge2019.teacher``): it keeps the shape and smoothness the depth map cannot see.

Differences from the paper, so that it trains on a laptop CPU and fits the course:

* The 2D network is the course's shared backbone (stride 4, shipped pre-trained) instead of a
  two-stack hourglass at 64 x 64; its score maps and features feed the feature block (the paper's
  1 x 1 convolutions + residual modules + max-pools down to 4 x 4, here stride-2 conv-BN-ReLU).
  The 3D losses train the layers after the backbone only (``Ge2019Config.end_to_end``, measured).
* The mesh generator adds its output to the mean hand's (u, v, d) (``template_mesh``), so a new
  network's mesh is already hand-shaped.
* The graph is MANO's mesh (778 vertices), not the authors' 954-vertex template, coarsened four
  times to 411 / 223 / 118 / 63 vertices without padding (``graph.coarsen``); the paper's sizes
  are 1280 / 640 / 320 / 160 / 80 with padded fake nodes.
* The pose regressor outputs all of (u, v, d) for the 21 joints (the paper's text: 3D pose from
  the mesh); the released code regresses only the 20 relative depths and takes (u, v) from the
  heatmaps. ``predict``'s 2D keypoints are the heatmaps' (as the released code), its 3D keypoints
  the regressor's.
* The second "real" image style of the weak-supervision experiment is the synthetic engine's
  held-out appearance (``weak_synth_knobs``), with 2D labels and the sensor-modelled depth only.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from handlib.data import synth
from handlib.data.depth_sensor import simulate_depth_sensor
from handlib.mano.layer import ManoLayer
from handlib.methods import (ImageTraining, LossContext, Method, Prediction, Schedule, Stage, Variant, check_shape,
                             image_stage, synthetic_test_set, synthetic_training_set, with_camera_effects)
from handlib.models import backbone, graph
from handlib.models.backbone import conv_bn_relu, keypoints_from_score_maps, score_map_loss, score_map_size, \
    score_map_targets
from handlib.models.cai2018 import DEPTH_UNIT, depth_targets
from handlib.render.soft_depth import soft_depth
from handlib.skeleton import NUM_KEYPOINTS, WRIST

NUM_VERTICES = 778
# The unit of every 3D loss: the mean scale bone of the training hands (``cai2018.DEPTH_UNIT``,
# 4.29 cm), chapter 3's unit, so that the 3D terms start near 1, nearer the score maps' loss (0.4):
# at initialisation on 16 test images the mesh term was 47 cm^2 and the joints' 55 cm^2, i.e. 2.6
# and 3.0 in this unit.
LOSS_UNIT = DEPTH_UNIT
# The crop's extent at the wrist's depth, e = z_wrist S / f_x, metres: the median over the course's
# synthetic crops (hands 0.3 to 0.7 m away, crops 1.25 to 1.6 times the keypoints' box) is about
# 0.16 m; the extent head starts there.
INITIAL_EXTENT = 0.16


# --------------------------------------------------------------------------------------------
# (u, v, d) and metres
# --------------------------------------------------------------------------------------------

def to_image_depth(points: torch.Tensor, K: torch.Tensor, image_size: int, root_depth: torch.Tensor) -> torch.Tensor:
    """Camera-frame points to (u, v, d): crop units and depth relative to the root.

        u = (f_x x / z + c_x) / S,   v = (f_y y / z + c_y) / S,   d = (z - z_root) / DEPTH_UNIT

    Args:
        points: (B, N, 3) metres, camera frame. K: (B, 3, 3) the crop's intrinsics, pixels.
        image_size: S, the crop's side, pixels. root_depth: (B,) z_root, metres.

    Returns:
        (B, N, 3).
    """
    check_shape("points", points, (None, None, 3), " metres, camera frame")
    check_shape("K", K, (points.shape[0], 3, 3))
    z = points[..., 2]
    u = (K[:, None, 0, 0] * points[..., 0] / z + K[:, None, 0, 2]) / image_size
    v = (K[:, None, 1, 1] * points[..., 1] / z + K[:, None, 1, 2]) / image_size
    return torch.stack([u, v, (z - root_depth[:, None]) / DEPTH_UNIT], dim=-1)


def lift(image_depth: torch.Tensor, K: torch.Tensor, image_size: int, root_depth: torch.Tensor) -> torch.Tensor:
    """(u, v, d) back to the camera frame, the inverse of ``to_image_depth``:

        z = z_root + d DEPTH_UNIT,   x = (u S - c_x) z / f_x,   y = (v S - c_y) z / f_y

    Args:
        image_depth: (B, N, 3) (u, v, d). K: (B, 3, 3). image_size: S. root_depth: (B,) metres.

    Returns:
        (B, N, 3) metres, camera frame.
    """
    check_shape("image_depth", image_depth, (None, None, 3), " (u, v, d)")
    check_shape("K", K, (image_depth.shape[0], 3, 3))
    z = root_depth[:, None] + image_depth[..., 2] * DEPTH_UNIT
    x = (image_depth[..., 0] * image_size - K[:, None, 0, 2]) * z / K[:, None, 0, 0]
    y = (image_depth[..., 1] * image_size - K[:, None, 1, 2]) * z / K[:, None, 1, 1]
    return torch.stack([x, y, z], dim=-1)


def crop_extent(root_depth: torch.Tensor, K: torch.Tensor, image_size: int) -> torch.Tensor:
    """e = z_root S / f_x: metres across the crop at the root's depth (B,), from z_root (B,) and K (B, 3, 3)."""
    return root_depth * image_size / K[:, 0, 0]


def nominal_intrinsics(batch: int, image_size: int, extent: torch.Tensor, root_depth: float = 0.5) -> torch.Tensor:
    """Intrinsics (B, 3, 3) for images that come without K: the principal point at the crop's centre
    and the focal length that puts the root at ``root_depth`` metres given the crop's extent
    (f = z S / e). A root-relative result then depends on ``root_depth`` only through perspective
    (a few millimetres over a hand)."""
    K = torch.zeros(batch, 3, 3, dtype=extent.dtype, device=extent.device)
    focal = root_depth * image_size / extent
    K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = focal, focal, 1.0
    K[:, 0, 2] = K[:, 1, 2] = image_size / 2
    return K


# --------------------------------------------------------------------------------------------
# The mesh's topology and the mesh losses
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def hand_layer() -> ManoLayer:
    """The course's hand model with the flat hand as zero pose (the synthetic samples' convention)."""
    return ManoLayer(flat_hand_mean=True)


def camera_mesh(pose: torch.Tensor, betas: torch.Tensor, keypoints_3d: torch.Tensor) -> torch.Tensor:
    """The true mesh of synthetic samples in the camera frame: MANO(pose, betas), moved so that its
    wrist lies on the sample's wrist (the samples' keypoints are MANO's joints, up to a translation).

    Args:
        pose: (B, 48) axis-angle. betas: (B, 10). keypoints_3d: (B, 21, 3) metres, camera frame.

    Returns:
        (B, 778, 3) metres, camera frame.
    """
    check_shape("pose", pose, (None, 48))
    check_shape("keypoints_3d", keypoints_3d, (pose.shape[0], NUM_KEYPOINTS, 3), " metres")
    layer = hand_layer().to(pose.device)
    out = layer(hand_pose=pose[:, 3:], betas=betas, global_orient=pose[:, :3])
    return out.vertices + (keypoints_3d[:, WRIST:WRIST + 1] - out.joints[:, WRIST:WRIST + 1])


def template_mesh() -> torch.Tensor:
    """The mean hand in (u, v, d) (778, 3): MANO's flat mean hand, its bounding box centred in the
    crop at the usual extent (``INITIAL_EXTENT``), depth relative to its wrist. Where a new mesh
    generator starts."""
    out = hand_layer()(hand_pose=torch.zeros(1, 45))
    vertices, wrist = out.vertices[0], out.joints[0, WRIST]
    centre = (vertices.amax(0) + vertices.amin(0)) / 2
    uv = 0.5 + (vertices[:, :2] - centre[:2]) / INITIAL_EXTENT
    return torch.cat([uv, (vertices[:, 2:] - wrist[2]) / DEPTH_UNIT], dim=1).detach()


@dataclass
class MeshTopology:
    """What the mesh losses need to know of the mesh: faces (F, 3), edges (E, 2), adjacency (V, V)."""
    faces: torch.Tensor
    edges: torch.Tensor
    adjacency: torch.Tensor

    @staticmethod
    def of(faces: torch.Tensor, num_vertices: int) -> "MeshTopology":
        return MeshTopology(faces.long(), graph.mesh_edges(faces), graph.adjacency(faces, num_vertices))

    def to(self, device) -> "MeshTopology":
        return MeshTopology(self.faces.to(device), self.edges.to(device), self.adjacency.to(device))


def _check_meshes(predicted, target) -> None:
    check_shape("predicted", predicted, (None, None, 3))
    if not isinstance(target, torch.Tensor) or target.shape != predicted.shape:
        got = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target: expected the shape of predicted {tuple(predicted.shape)}, got {got}")


def vertex_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_v = mean_i ||v_hat_i - v_i||^2, per sample: (B, V, 3) twice -> (B,), in the unit squared."""
    _check_meshes(predicted, target)
    return ((predicted - target) ** 2).sum(-1).mean(-1)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit normals (B, F, 3) of the triangles: n = (v1 - v0) x (v2 - v0) / |...|."""
    corners = vertices[:, faces]                                                        # (B, F, 3, 3)
    normal = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
    return normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def normal_loss(predicted: torch.Tensor, target: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """L_n = mean_t mean_{(i,j) in t} <v_hat_i - v_hat_j, n_t>^2, n_t the true face normal (B,).

    Zero when every predicted triangle lies in the plane direction of the true one (its edges are
    perpendicular to the true normal): it keeps the surface's orientation, not its position."""
    _check_meshes(predicted, target)
    normals = face_normals(target, faces)                                               # (B, F, 3)
    corners = predicted[:, faces]                                                       # (B, F, 3, 3)
    edges = corners - corners.roll(-1, dims=2)                                          # (B, F, 3, 3) the 3 sides
    return ((edges * normals[:, :, None]).sum(-1) ** 2).mean(dim=(-2, -1))


def edge_length_loss(predicted: torch.Tensor, target: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """L_len = mean_{(i,j) in E} (||v_hat_i - v_hat_j|| - ||v_i - v_j||)^2, per sample (B,)."""
    _check_meshes(predicted, target)

    def lengths(v):
        return (v[:, edges[:, 0]] - v[:, edges[:, 1]]).norm(dim=-1)                    # (B, E)
    return ((lengths(predicted) - lengths(target)) ** 2).mean(-1)


def laplacian_loss(predicted: torch.Tensor, target: torch.Tensor, adjacency_matrix: torch.Tensor) -> torch.Tensor:
    """L_lap = mean_i ||delta_hat_i - delta_i||^2, delta the Laplacian coordinates
    (``graph.laplacian_coordinates``), per sample (B,). Blind to a translation of the whole mesh."""
    _check_meshes(predicted, target)
    difference = graph.laplacian_coordinates(predicted - target, adjacency_matrix)      # delta is linear in v
    return (difference ** 2).sum(-1).mean(-1)


MESH_TERMS = ("vertices", "normals", "edges", "laplacian")


def mesh_loss(predicted: torch.Tensor, target: torch.Tensor, topology: MeshTopology,
              weights: dict) -> tuple[torch.Tensor, dict]:
    """L_M = w_v L_v + w_n L_n + w_len L_len + w_lap L_lap, per sample.

    Args:
        predicted, target: (B, V, 3), the same length unit (the losses use ``LOSS_UNIT``).
        topology: the mesh's ``MeshTopology``.
        weights: {term: weight} for the terms of ``MESH_TERMS`` (absent: 0, and not computed).

    Returns:
        ((B,) total, {term: (B,)}).
    """
    unknown = set(weights) - set(MESH_TERMS)
    if unknown:
        raise ValueError(f"weights: expected terms among {MESH_TERMS}, got {sorted(unknown)}")
    functions = {"vertices": lambda: vertex_loss(predicted, target),
                 "normals": lambda: normal_loss(predicted, target, topology.faces),
                 "edges": lambda: edge_length_loss(predicted, target, topology.edges),
                 "laplacian": lambda: laplacian_loss(predicted, target, topology.adjacency)}
    terms = {name: functions[name]() for name, weight in weights.items() if weight}
    total = sum((weights[name] * value for name, value in terms.items()), predicted.new_zeros(len(predicted)))
    return total, terms


# --------------------------------------------------------------------------------------------
# Config and networks
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ge2019Config(ImageTraining):
    """One run of Ge et al. on the course's platform.

    Attributes:
        encoder, encoder_width, pretrained_backbone: the shared backbone (started from the shipped weights).
        end_to_end: the mesh, joint and extent losses train the backbone too, through the score maps
            and features the feature block reads, as in the paper. False (ours, like chapter 3): they
            train the layers after the backbone, and the backbone learns from L_H only. Measured on
            the quick data at 200 steps: end to end, the 2D error is 21.4 px, the 3D
            EPE 80 mm (Procrustes 37.6 mm) and the mesh error 33.1 mm; detached 15.6 px, 75 mm (36.0 mm)
            and 30.1 mm: the 3D losses' pull spoils the shared score maps more than it helps the mesh.
        feature_widths: the feature block's stride-2 conv-BN-ReLU channels on [score maps, features].
        feature_size: the vector f's size (the paper: 4096, then FC 512).
        coarsening_levels, graph_seed: the graph hierarchy (``graph.coarsen``); the generator starts
            at the coarsest level, convolves half way up and at the full mesh, as the paper does.
        generator_widths: (C_coarse, C_middle): features per vertex at the coarsest level and after
            the middle level's convolutions (the paper: 64 and 32).
        regressor_widths: the pose regressor's convolutions at the full mesh and half way down
            (the paper: 32 and 64); regressor_hidden its FC layer (512).
        chebyshev_order: K (3).
        weight_mesh, weight_joints, weight_extent: w_M, w_J, w_e (L_H has weight 1).
        weight_vertices, weight_normals, weight_edges, weight_laplacian: the mesh loss's terms
            (the paper's weights are not known; the ablation variants set one to 0).
        weak_stage: train a second, weakly supervised stage after the fully supervised one (the
            experiment's arms); the model then holds a teacher.
        weak_steps, weak_samples, weak_lr, weak_synth_knobs: that stage: ``weak_steps`` steps on
            ``weak_samples`` images of the second style (the synthetic engine with these knobs), with
            2D labels and depth only.
        weight_depth, weight_pseudo: w_D and w_P of the weak loss (0 switches a term off).
        depth_size: side of the depth maps compared by L_D (a divisor of image_size).
        depth_sigma, depth_gamma: the soft renderer's coverage blur (pixels^2 of the depth map) and
            depth softness (metres), ``soft_depth``.
        depth_sensor: read the weak images' depth through the depth sensor's flaws.
        net_from: "" (the network starts from the shared backbone), or a method name whose shipped
            ``full`` checkpoint's network this run starts from (``checkpoints.copy_weights``). The weak
            arms use it with ``steps`` = 0: they run the weak stage alone from the shipped fully
            supervised model (its teacher is that model), so that they differ by the weak stage alone.
    """
    encoder: str = backbone.ENCODER
    encoder_width: float = backbone.ENCODER_WIDTH
    pretrained_backbone: bool = True
    end_to_end: bool = False
    feature_widths: tuple = (64, 96, 128)
    feature_size: int = 512
    coarsening_levels: int = 4
    graph_seed: int = 0
    generator_widths: tuple = (64, 32)
    regressor_widths: tuple = (32, 64)
    regressor_hidden: int = 512
    chebyshev_order: int = graph.DEFAULT_ORDER
    weight_mesh: float = 1.0
    weight_joints: float = 1.0
    weight_extent: float = 1.0
    weight_vertices: float = 1.0
    weight_normals: float = 1.0
    weight_edges: float = 1.0
    weight_laplacian: float = 1.0
    weak_stage: bool = False
    weak_steps: int = 100
    weak_samples: int = 1024
    weak_lr: float = 3e-4
    weak_synth_knobs: tuple = (("appearance", "held_out"),)
    weight_depth: float = 1.0
    weight_pseudo: float = 1.0
    depth_size: int = 32
    depth_sigma: float = 0.5
    depth_gamma: float = 2e-3
    depth_sensor: bool = True
    net_from: str = ""

    def __post_init__(self):
        if self.coarsening_levels < 2 or self.coarsening_levels % 2:
            raise ValueError(f"coarsening_levels: expected an even number >= 2 (the generator convolves half way "
                             f"up), got {self.coarsening_levels}")
        if self.image_size % self.depth_size:
            raise ValueError(f"depth_size: expected a divisor of image_size={self.image_size}, got {self.depth_size}")
        if len(self.generator_widths) != 2 or len(self.regressor_widths) != 2:
            raise ValueError(f"generator_widths, regressor_widths: expected two widths each, got "
                             f"{self.generator_widths}, {self.regressor_widths}")

    @property
    def score_map_size(self) -> int:
        return score_map_size(self.image_size)

    def mesh_weights(self) -> dict:
        return {"vertices": self.weight_vertices, "normals": self.weight_normals, "edges": self.weight_edges,
                "laplacian": self.weight_laplacian}


class GraphBlock(nn.Sequential):
    """ChebConv, then BatchNorm over the vertices and ReLU: (B, V, F_in) -> (B, V, F_out)."""

    def __init__(self, laplacian: torch.Tensor, in_features: int, out_features: int, order: int):
        super().__init__()
        self.conv = graph.ChebConv(laplacian, in_features, out_features, order)
        self.norm = nn.BatchNorm1d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)                                                                # (B, V, F)
        return F.relu(self.norm(x.transpose(1, 2)).transpose(1, 2))


class MeshGenerator(nn.Module):
    """f (B, feature_size) -> mesh (B, 778, 3) in (u, v, d).

    FC to the coarsest graph (V_L x C_0); upsample to level L/2; two graph blocks C_0 -> C_0 -> C_1;
    upsample to the mesh; a graph block C_1 -> C_1 and a last ChebConv C_1 -> 3 (no BN, no ReLU),
    added to the mean hand's (u, v, d) (``template_mesh``).
    """

    def __init__(self, hierarchy: list, feature_size: int, widths: tuple, order: int):
        super().__init__()
        levels, middle = len(hierarchy) - 1, (len(hierarchy) - 1) // 2
        self.coarse_vertices, self.width = hierarchy[-1].num_vertices, widths[0]
        self.fc = nn.Linear(feature_size, self.coarse_vertices * widths[0])
        for level, graph_level in enumerate(hierarchy[:-1]):
            self.register_buffer(f"parent{level}", graph_level.parent, persistent=False)
        self.levels, self.middle = levels, middle
        self.middle_blocks = nn.Sequential(GraphBlock(hierarchy[middle].laplacian, widths[0], widths[0], order),
                                           GraphBlock(hierarchy[middle].laplacian, widths[0], widths[1], order))
        self.fine_block = GraphBlock(hierarchy[0].laplacian, widths[1], widths[1], order)
        self.out = graph.ChebConv(hierarchy[0].laplacian, widths[1], 3, order)
        # The output is an offset from the mean hand (``template_mesh``): a new network's mesh is a
        # hand, not a point (a point covers no pixel, and the depth-map loss would see nothing).
        nn.init.zeros_(self.out.weight)
        self.register_buffer("template", template_mesh(), persistent=False)

    def _upsample(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for level in range(start - 1, stop - 1, -1):
            x = graph.upsample(x, getattr(self, f"parent{level}"))
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(features)).view(-1, self.coarse_vertices, self.width)       # (B, V_L, C_0)
        x = self.middle_blocks(self._upsample(x, self.levels, self.middle))             # (B, V_L/2, C_1)
        x = self.fine_block(self._upsample(x, self.middle, 0))                          # (B, 778, C_1)
        return self.template + self.out(x)                                              # (B, 778, 3)


class PoseRegressor(nn.Module):
    """mesh (B, 778, 3) in (u, v, d) -> joints (B, 21, 3) in (u, v, d).

    Two graph blocks at the mesh, max-pool to level L/2, two graph blocks there, max-pool to the
    coarsest level, FC hidden, FC 63. The mesh's (u, v) enter relative to the crop's centre.
    """

    def __init__(self, hierarchy: list, widths: tuple, hidden: int, order: int):
        super().__init__()
        self.levels, self.middle = len(hierarchy) - 1, (len(hierarchy) - 1) // 2
        for level, graph_level in enumerate(hierarchy[:-1]):
            self.register_buffer(f"parent{level}", graph_level.parent, persistent=False)
        self.fine_blocks = nn.Sequential(GraphBlock(hierarchy[0].laplacian, 3, widths[0], order),
                                         GraphBlock(hierarchy[0].laplacian, widths[0], widths[0], order))
        middle = hierarchy[self.middle].laplacian
        self.middle_blocks = nn.Sequential(GraphBlock(middle, widths[0], widths[1], order),
                                           GraphBlock(middle, widths[1], widths[1], order))
        self.fc = nn.Sequential(nn.Linear(hierarchy[-1].num_vertices * widths[1], hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, NUM_KEYPOINTS * 3))
        self.register_buffer("centre", torch.tensor([0.5, 0.5, 0.0]), persistent=False)

    def _pool(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for level in range(start, stop):
            x = graph.pool(x, getattr(self, f"parent{level}"))
        return x

    def forward(self, mesh: torch.Tensor) -> torch.Tensor:
        x = self.fine_blocks(mesh - self.centre)                                        # (B, 778, C_0)
        x = self.middle_blocks(self._pool(x, 0, self.middle))                           # (B, V_L/2, C_1)
        x = self._pool(x, self.middle, self.levels).flatten(1)                          # (B, V_L C_1)
        return self.fc(x).view(-1, NUM_KEYPOINTS, 3) + self.centre                      # (B, 21, 3)


class MeshNet(nn.Module):
    """Backbone, feature block, mesh generator, pose regressor and extent head: image -> outputs."""

    def __init__(self, config: "Ge2019Config", hierarchy: list):
        super().__init__()
        self.config = config
        self.backbone = backbone.HandEncoder(config.encoder, config.encoder_width)
        layers, channels = [], NUM_KEYPOINTS + self.backbone.out_channels
        for width in config.feature_widths:
            layers.append(conv_bn_relu(channels, width, stride=2))
            channels = width
        side = -(-config.score_map_size // 2 ** len(config.feature_widths))
        self.feature_block = nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, config.feature_size),
                                           nn.ReLU(inplace=True))
        self.generator = MeshGenerator(hierarchy, config.feature_size, config.generator_widths, config.chebyshev_order)
        self.regressor = PoseRegressor(hierarchy, config.regressor_widths, config.regressor_hidden,
                                       config.chebyshev_order)
        self.extent_head = nn.Linear(config.feature_size, 1)
        nn.init.zeros_(self.extent_head.weight)
        nn.init.constant_(self.extent_head.bias, float(torch.log(torch.tensor(INITIAL_EXTENT))))

    def forward(self, image: torch.Tensor) -> dict:
        encoded = self.backbone(image)
        score_maps, features = encoded["score_maps"], encoded["features"]
        if not self.config.end_to_end:
            score_maps, features = score_maps.detach(), features.detach()
        f = self.feature_block(torch.cat([score_maps, features], dim=1))                # (B, feature_size)
        mesh = self.generator(f)                                                        # (B, 778, 3)
        return {"score_maps": encoded["score_maps"], "mesh": mesh, "joints": self.regressor(mesh),
                "extent": self.extent_head(f)[:, 0].exp()}


class Ge2019(nn.Module):
    """Ge et al.'s network (``net``) and, for the weak stage, its frozen fully supervised copy (``teacher``).

    Args:
        config: ``Ge2019Config``.

    Attributes:
        hierarchy: the graph levels (``graph.coarsen`` of the hand's faces; rebuilt from the config,
            not stored in checkpoints).
        topology: the full mesh's ``MeshTopology`` for the losses.
        teacher: a ``MeshNet`` frozen at the start of the weak stage (the pseudo-ground truth), or
            None when the config has no weak stage (``weak_stage``); ``teacher_ready`` says whether it was filled.
    """

    def __init__(self, config: Ge2019Config = Ge2019Config()):
        super().__init__()
        self.config = config
        faces = hand_layer().faces
        self.hierarchy = graph.coarsen(faces, NUM_VERTICES, config.coarsening_levels, config.graph_seed)
        self.topology = MeshTopology.of(faces, NUM_VERTICES)
        self.net = MeshNet(config, self.hierarchy)
        self.teacher = None
        if config.weak_stage:
            self.teacher = MeshNet(config, self.hierarchy)
            self.teacher.requires_grad_(False)
            self.register_buffer("teacher_ready", torch.zeros((), dtype=torch.bool))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()                                                         # always frozen
        return self

    def forward(self, image: torch.Tensor) -> dict:
        """image (B, 3, S, S) in [0, 1] -> {"score_maps": (B, 21, S/4, S/4), "mesh": (B, 778, 3) and
        "joints": (B, 21, 3) in (u, v, d), "extent": (B,) metres across the crop at the wrist}."""
        size = self.config.image_size
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"image: expected shape (B, 3, {size}, {size}) for this model (config.image_size), "
                             f"got {got}; crop or resize the images (handlib.data.datasets.crop_to_hand)")
        return self.net(image)

    def freeze_teacher(self) -> None:
        """Copy the network into the teacher (once: the pseudo-ground truth of the weak stage)."""
        if self.teacher is None:
            raise ValueError("freeze_teacher: this model has no teacher; build it with config.weak_stage=True")
        self.teacher.load_state_dict(self.net.state_dict())
        self.teacher_ready.fill_(True)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_sample * weights).sum() / weights.sum().clamp_min(1.0)


def _heatmap_loss(out: dict, batch: dict) -> torch.Tensor:
    targets = score_map_targets(batch["keypoints_2d"], batch["visibility"], tuple(batch["image"].shape[-2:]))
    return score_map_loss(out["score_maps"], targets, batch["visibility"])


def ge2019_loss(model: Ge2019, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """Full supervision: L = L_H + w_M L_M + w_J L_J + w_e L_e (see the module docstring).

    L_M on the samples with a MANO mesh (``has_mano``), L_J and L_e on those with 3D (``has_3d``);
    the predicted (u, v, d) are lifted with the true wrist depth and K, in ``LOSS_UNIT``s.

    Returns:
        (total, {"score_maps", "mesh", "joints", "extent", and each mesh term}).
    """
    config, image = model.config, batch["image"]
    size = config.image_size
    out = model(image)
    loss_2d = _heatmap_loss(out, batch)
    has_3d, has_mano = batch["has_3d"].float(), batch["has_mano"].float() * batch["has_3d"].float()
    keypoints = torch.nan_to_num(batch["keypoints_3d"])
    root_depth = keypoints[:, WRIST, 2].clamp_min(0.05)                                  # (B,) metres
    K = batch["K"].to(image.dtype)
    joints = lift(out["joints"], K, size, root_depth) / LOSS_UNIT                       # (B, 21, 3) cm
    loss_joints = _weighted_mean(((joints - keypoints / LOSS_UNIT) ** 2).sum(-1).mean(-1), has_3d)
    extent = crop_extent(root_depth, K, size)
    loss_extent = _weighted_mean((out["extent"].log() - extent.log()).abs(), has_3d)
    with torch.no_grad():
        pose, betas = torch.nan_to_num(batch["pose"]), torch.nan_to_num(batch["betas"])
        true_mesh = camera_mesh(pose, betas, keypoints) / LOSS_UNIT                     # (B, 778, 3) cm
    mesh = lift(out["mesh"], K, size, root_depth) / LOSS_UNIT
    per_sample, terms = mesh_loss(mesh, true_mesh, model.topology.to(mesh.device), config.mesh_weights())
    loss_mesh = _weighted_mean(per_sample, has_mano)
    total = loss_2d + config.weight_mesh * loss_mesh + config.weight_joints * loss_joints \
        + config.weight_extent * loss_extent
    reported = {f"mesh_{name}": _weighted_mean(value, has_mano) for name, value in terms.items()}
    return total, {"score_maps": loss_2d, "mesh": loss_mesh, "joints": loss_joints, "extent": loss_extent,
                   **reported}


def depth_map_loss(rendered: torch.Tensor, coverage: torch.Tensor, target: torch.Tensor, known: torch.Tensor,
                   has_depth: torch.Tensor) -> torch.Tensor:
    """L_D = mean over compared cells of |(R - T) - mean(R - T)|: rendered and measured depth agree up
    to a constant (neither the wrist's depth nor the sensor's reference is the other's).

    Args:
        rendered: (B, d, d) the soft depth of the predicted mesh, any length unit.
        coverage: (B, d, d) where it is on the hand (the soft silhouette > 0.5, no gradient).
        target: (B, d, d) the measured depth, same unit; known: (B, d, d) where it is known.
        has_depth: (B,) the samples with a depth map.

    Returns:
        scalar tensor; samples with fewer than 4 compared cells do not count.
    """
    for name, value in (("coverage", coverage), ("target", target), ("known", known)):
        check_shape(name, value, tuple(rendered.shape))
    compared = coverage * known                                                         # (B, d, d)
    count = compared.sum((-2, -1))                                                      # (B,)
    residual = rendered - target
    offset = (residual * compared).sum((-2, -1)) / count.clamp_min(1.0)                # (B,) the constant
    per_sample = ((residual - offset[:, None, None]).abs() * compared).sum((-2, -1)) / count.clamp_min(1.0)
    return _weighted_mean(per_sample, has_depth.float() * (count >= 4).float())


def rendered_depth(mesh: torch.Tensor, faces: torch.Tensor, K: torch.Tensor, config: Ge2019Config,
                   reference_depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft depth (B, d, d) in metres and coverage (B, d, d) of meshes (B, 778, 3) in (u, v, d),
    lifted with the wrist at ``reference_depth`` (B,) metres and rendered at ``config.depth_size``."""
    vertices = lift(mesh, K, config.image_size, reference_depth)
    scale = config.depth_size / config.image_size
    K_small = torch.cat([K[:, :2] * scale, K[:, 2:]], dim=1)                             # the depth map's pixels
    depth, silhouette = soft_depth(vertices, faces, K_small, config.depth_size, sigma=config.depth_sigma,
                                   gamma=config.depth_gamma)
    return depth, (silhouette.detach() > 0.5).float()


def weak_loss(model: Ge2019, batch: dict, context: LossContext) -> tuple[torch.Tensor, dict]:
    """Weak supervision (2D keypoints and a depth map): L = L_H + w_D L_D + w_P L_M(mesh, teacher's mesh).

    * L_D (``depth_map_loss``, in ``LOSS_UNIT``s): the predicted mesh, lifted with its wrist at the median
      depth of the measured hand (no 3D label says where the wrist is; the constant is removed
      anyway), soft-rendered at ``depth_size``, against the sensor's map (``simulate_depth_sensor``
      drawn from ``context.generator``, read as ``cai2018.depth_targets``).
    * The pseudo-ground truth: the teacher's mesh (frozen at the first weak step), both meshes
      lifted with the teacher's crop extent, in ``LOSS_UNIT``s; all four mesh terms.

    Returns:
        (total, {"score_maps", "depth", "pseudo"}); "depth" and "pseudo" are reported when switched off too.
    """
    config, image = model.config, batch["image"]
    size = config.image_size
    if model.teacher is None:
        raise ValueError("weak_loss: the model has no teacher; build it with config.weak_stage=True")
    if not bool(model.teacher_ready):
        model.freeze_teacher()
    out = model(image)
    loss_2d = _heatmap_loss(out, batch)
    K = batch["K"].to(image.dtype)
    faces = model.topology.faces.to(image.device)

    depth = simulate_depth_sensor(batch["depth"], context.generator) if config.depth_sensor else batch["depth"]
    target, known = depth_targets(depth, config.depth_size)                              # DEPTH_UNITs, median-relative
    reads = torch.where(depth > 0, depth, torch.nan).flatten(1).nanmedian(1).values      # (B,) metres
    reference = torch.nan_to_num(reads, nan=0.5).clamp_min(0.1)
    rendered, coverage = rendered_depth(out["mesh"], faces, K, config, reference)
    loss_depth = depth_map_loss(rendered / LOSS_UNIT, coverage, target * (DEPTH_UNIT / LOSS_UNIT), known,
                                batch["has_depth"])

    with torch.no_grad():
        teacher = model.teacher(image)
        root_depth = teacher["extent"] * K[:, 0, 0] / size                              # z = e f / S
        pseudo_mesh = lift(teacher["mesh"], K, size, root_depth) / LOSS_UNIT
    mesh = lift(out["mesh"], K, size, root_depth) / LOSS_UNIT
    per_sample, _ = mesh_loss(mesh, pseudo_mesh, model.topology.to(mesh.device), config.mesh_weights())
    loss_pseudo = per_sample.mean()

    total = loss_2d + config.weight_depth * loss_depth + config.weight_pseudo * loss_pseudo
    return total, {"score_maps": loss_2d, "depth": loss_depth, "pseudo": loss_pseudo}


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def ge2019_predict(model: Ge2019, batch: dict, config: Ge2019Config | None = None) -> Prediction:
    """Keypoints and the mesh from images.

    Args:
        model: a ``Ge2019``.
        batch: "image" (B, 3, S, S) in [0, 1]; "K" (B, 3, 3) the crop's intrinsics if known (absent,
            or NaN for a sample without a camera: ``nominal_intrinsics``, and the result is then
            weak-perspective, off by a few mm of perspective).
        config: unused (the model holds its config); the ``Method.predict`` signature.

    Returns:
        ``Prediction``: keypoints_2d (B, 21, 2) pixels of the crop (argmax of the upsampled heatmaps);
        keypoints_3d (B, 21, 3) and vertices (B, 778, 3), frame "root_relative" (metres, the
        regressed wrist at the origin, camera axes), lifted with the predicted crop extent; extras
        "score_maps", "mesh" and "joints" (the raw (u, v, d)) and "extent" (B,) metres.
    """
    image = batch["image"]
    out = model(image)
    size, count = model.config.image_size, len(image)
    K = nominal_intrinsics(count, size, out["extent"]).to(image.dtype)
    if batch.get("K") is not None:                      # a sample's own camera where it has one (not NaN)
        known = torch.isfinite(batch["K"]).flatten(1).all(1)[:, None, None]
        K = torch.where(known, batch["K"].to(image.dtype), K)
    root_depth = out["extent"] * K[:, 0, 0] / size                                      # z = e f / S
    joints = lift(out["joints"], K, size, root_depth)
    vertices = lift(out["mesh"], K, size, root_depth)
    root = joints[:, WRIST:WRIST + 1]
    keypoints_2d = keypoints_from_score_maps(out["score_maps"], tuple(image.shape[-2:]))
    return Prediction(keypoints_2d=keypoints_2d, keypoints_3d=joints - root, frame="root_relative",
                      vertices=vertices - root,
                      extras={"score_maps": out["score_maps"], "mesh": out["mesh"], "joints": out["joints"],
                              "extent": out["extent"]})


def closest_mano_mesh(vertices: torch.Tensor, keypoints_3d: torch.Tensor, steps: int = 300,
                      shape_weight: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """The MANO hand nearest to free meshes: how far a graph CNN's mesh lies from anything MANO makes.

    MANO (45 finger axis-angles, no PCA) is fitted to the hands' keypoints first
    (``mano.fit.fit_to_keypoints_3d``), then to the 778 vertices from there
    (``mano.fit.fit_to_vertices``: mean squared vertex distance over (1 cm)^2, plus
    ``shape_weight`` |beta|^2, no pose prior, no joint limits). A MANO mesh comes back to within
    about 0.5 mm per vertex (chapter 6: 0.3 to 0.6 mm); what a free mesh keeps beyond that is shape MANO
    cannot make.

    Args:
        vertices: (B, 778, 3) metres, any frame. keypoints_3d: (B, 21, 3) the same hands' keypoints,
            metres, the same frame (only to start the fit).
        steps: L-BFGS evaluations of the vertex fit.
        shape_weight: the pull of beta towards MANO's mean shape (a unit Gaussian).

    Returns:
        (closest (B, 778, 3) metres in the frame of ``vertices``, betas (B, 10)).
    """
    from handlib.mano.fit import fit_to_keypoints_3d, fit_to_vertices

    check_shape("vertices", vertices, (None, NUM_VERTICES, 3), " metres")
    check_shape("keypoints_3d", keypoints_3d, (vertices.shape[0], NUM_KEYPOINTS, 3), " metres")
    layer = hand_layer().to(vertices.device)
    with torch.enable_grad():
        start = fit_to_keypoints_3d(layer, keypoints_3d.detach(), steps=60)
        fit = fit_to_vertices(layer, vertices, start, steps=steps, shape_weight=shape_weight)
    return fit.output.vertices, fit.betas


# --------------------------------------------------------------------------------------------
# The method: its stages and variants
# --------------------------------------------------------------------------------------------

class WeakLabels(Dataset):
    """A training set with only what a weakly labelled image has: 2D keypoints, visibility, the depth
    map and K (``has_3d`` and ``has_mano`` False; ``keypoints_3d``, ``pose``, ``betas`` NaN)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index) -> dict:
        sample = self.dataset[index]
        hidden = {key: torch.full_like(sample[key], torch.nan) for key in ("keypoints_3d", "pose", "betas")}
        return {**sample, **hidden, "has_3d": torch.zeros_like(torch.as_tensor(sample["has_3d"])),
                "has_mano": torch.zeros_like(torch.as_tensor(sample["has_mano"]))}


def weak_training_set(config: Ge2019Config, seed: int) -> Dataset:
    """The second image style's training images (``weak_synth_knobs``), cached, labels hidden
    (``WeakLabels``). Seed ``seed + 1`` of the "train" split: never the first style's images."""
    knobs = {**dict(config.synth_knobs), **dict(config.weak_synth_knobs)}
    rendered = synthetic_training_set(config.weak_samples, seed + 1, config.image_size,
                                      synth.make_config(image_size=config.image_size, **knobs))
    return WeakLabels(rendered)


def _stages(config: Ge2019Config) -> list[Stage]:
    images = dataclasses.replace(image_stage(config, ge2019_loss), parameters=lambda model: model.net.parameters())
    if not config.weak_stage:
        return [images]
    weak = Stage("weak", Schedule(config.weak_steps, config.batch_size, config.weak_lr,
                                  checkpoint_every=config.checkpoint_every),
                 lambda seed: weak_training_set(config, seed), weak_loss,
                 parameters=lambda model: model.net.parameters(),
                 augment=with_camera_effects if config.camera_effects else None)
    return [images, weak]


def _initialize(model: Ge2019, config: Ge2019Config) -> None:
    if config.net_from:
        from handlib.checkpoints import copy_weights

        copy_weights(model, config.net_from, ("net.",))
    elif config.pretrained_backbone:
        backbone.load_pretrained(model.net.backbone)


CONFIGS = {
    # Live in the notebook and in CI: a few minutes on a laptop CPU, from the shipped backbone.
    # Measured: 2.6 minutes for the 120 steps and the evaluation on one core shared with two other
    # trainings (2D EPE 16.8 px, 3D EPE 86 mm after root alignment, 38 mm Procrustes, mesh error 33 mm).
    # A weak arm adds 100 weak steps (about 100 s) and the rendering of its 1024 second-style images.
    "quick": Ge2019Config(),
    # What ships: 0.6 s per step (B = 16, 128 px, measured on the quick profile) on one core shared
    # with other trainings, so about 50 minutes for 4800 steps. A weak arm adds 600 weak steps at
    # 1.0 s each (measured: the teacher's forward and the soft depth at 32 x 32 included) and the
    # rendering of its 4096 second-style images (1024 took 13 s on all cores): about 60 minutes.
    "full": Ge2019Config(train_samples=24_576, test_samples=512, steps=4800, batch_size=16, lr=1e-3,
                         milestones=(3600,), checkpoint_every=200, weak_steps=600, weak_samples=4096),
}

_WEAK = {"weak_stage": True, "net_from": "ge2019", "steps": 0}      # the weak stage alone, on the shipped model
# The arms of the chapter's experiments (a benchmark script trains and reports them; only the fully
# supervised method ships).
VARIANTS = {
    "weak": Variant("then weakly supervised on the second style: heatmaps + depth map + pseudo-GT mesh", _WEAK,
                    ships=False),
    "weak_nodepth": Variant("weak stage without the depth-map loss", {**_WEAK, "weight_depth": 0.0}, ships=False),
    "weak_nopseudo": Variant("weak stage without the pseudo-GT mesh loss", {**_WEAK, "weight_pseudo": 0.0},
                             ships=False),
    "weak_2d": Variant("weak stage with the heatmaps only (no depth, no pseudo-GT)",
                       {**_WEAK, "weight_depth": 0.0, "weight_pseudo": 0.0}, ships=False),
    "no_normal": Variant("without the mesh loss's normal term", {"weight_normals": 0.0}, ships=False),
    "no_edge": Variant("without the mesh loss's edge-length term", {"weight_edges": 0.0}, ships=False),
    "no_laplacian": Variant("without the mesh loss's Laplacian term", {"weight_laplacian": 0.0}, ships=False),
}

METHOD = Method(
    name="ge2019",
    description="Ge et al. 2019: a graph CNN generates the hand mesh, joints regressed from the mesh",
    configs=CONFIGS, build_model=Ge2019, stages=_stages, predict=ge2019_predict, test_data=synthetic_test_set,
    alignment="root", initialize=_initialize, variants=VARIANTS)
