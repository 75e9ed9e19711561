"""MANO's forward pass (Romero, Tzionas, Black, SIGGRAPH Asia 2017) as pure functions, and a thin module.

    M(beta, theta) = W( T_P(beta, theta), J(beta), theta, weights )                     (MANO Eq. 1)
    T_P(beta, theta) = T + B_S(beta) + B_P(theta)                                        (SMPL Eq. 6)

Step by step, each a function below a notebook can call on its own:

1. ``shape_blend``        v_shaped = T + sum_k beta_k S_k                     (B, V, 3)
2. ``regress_joints``     J = J_regressor @ v_shaped                          (B, 16, 3)
3. ``pose_feature``       p = vec(R_k - I), k = 1..15 (the root is left out)  (B, 135)
4. ``pose_blend``         v_posed = v_shaped + sum_n p_n P_n                  (B, V, 3)
5. ``kinematic_chain``    G_k = G_parent(k) [R_k | J_k - J_parent(k)]         (B, 16, 3, 4)
6. ``skin``               v_i = sum_k w_ik G_k [v_posed,i - J_k; 1]           (B, V, 3)

Pose parameters are axis-angle: a global rotation (3) and 15 finger joints (45), optionally as
coefficients of MANO's PCA basis. The joints of the result are the joint positions G_k [0; 1]
(not J_regressor applied to the posed mesh; the two differ by millimetres, smplx#223).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from handlib.geometry import axis_angle_to_matrix
from handlib.mano.io import ManoModel, load_mano
from handlib.skeleton import ORDER_MAPS

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "mano"


def default_model_path() -> Path:
    """The hand model handlib uses unless told otherwise.

    ``$HANDLIB_MANO_MODEL`` if set (for example your own official ``MANO_RIGHT.pkl``), else the
    open hand model shipped with handlib (``handlib/assets/mano/MANO_RIGHT.pkl``).
    """
    path = Path(os.environ.get("HANDLIB_MANO_MODEL", ASSET_DIR / "MANO_RIGHT.pkl"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: hand model not found. Build the open hand with "
                                "`python -m handlib build-hand`, or set $HANDLIB_MANO_MODEL to a MANO file")
    return path


@dataclass
class HandOutput:
    """What the hand model returns. Shapes for a batch of B hands with V vertices.

    Attributes:
        vertices: (B, V, 3) posed mesh, metres.
        joints: (B, 21, 3) the 21 keypoints in the course order (16 joints + 5 fingertip vertices).
        mano_joints: (B, 16, 3) MANO's joints in MANO's order.
        transforms: (B, 16, 4, 4) G_k: each joint's posed frame (rotation, and the posed joint
            position as translation, ``transl`` included).
        full_pose: (B, 48) axis-angle actually applied: global rotation, then 15 joints
            (hands mean and PCA already resolved).
        betas: (B, K) shape coefficients.
    """

    vertices: torch.Tensor
    joints: torch.Tensor
    mano_joints: torch.Tensor
    transforms: torch.Tensor
    full_pose: torch.Tensor
    betas: torch.Tensor


# -------------------------------------------------------------------------------------------------
# The pure functions


def shape_blend(v_template: torch.Tensor, shapedirs: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """T + B_S(beta): the rest hand of a given shape (SMPL Eq. 8).

    Args:
        v_template: (V, 3) template, metres.
        shapedirs: (V, 3, K) shape blend shapes.
        betas: (B, K') shape coefficients, K' <= K (missing ones are zero).

    Returns:
        (B, V, 3) shaped rest vertices.
    """
    k = betas.shape[-1]
    directions = shapedirs[..., :k].flatten(0, 1)  # (3V, K'), a view
    return v_template + (betas @ directions.T).unflatten(1, (-1, 3))  # (B, V, 3)


def regress_joints(J_regressor: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """J = J_regressor @ vertices: joints as weighted averages of vertices (SMPL Eq. 10).

    Args:
        J_regressor: (J, V).
        vertices: (B, V, 3).

    Returns:
        (B, J, 3).
    """
    return torch.einsum("jv,bvd->bjd", J_regressor, vertices)


def pose_feature(rotations: torch.Tensor) -> torch.Tensor:
    """p(theta) = concat_k vec(R_k - I) over the 15 non-root joints (SMPL Eq. 9).

    Zero for the rest pose, so the correctives vanish there.

    Args:
        rotations: (B, 16, 3, 3) joint rotations, root first.

    Returns:
        (B, 135).
    """
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    return (rotations[:, 1:] - eye).flatten(1)


def pose_blend(feature: torch.Tensor, posedirs: torch.Tensor) -> torch.Tensor:
    """B_P(theta) = sum_n p_n P_n: pose-corrective offsets of every vertex (SMPL Eq. 9).

    Args:
        feature: (B, 135) from ``pose_feature``.
        posedirs: (V, 3, 135).

    Returns:
        (B, V, 3) offsets.
    """
    return (feature @ posedirs.flatten(0, 1).T).unflatten(1, (-1, 3))  # (B, V, 3)


def kinematic_chain(rotations: torch.Tensor, joints: torch.Tensor, parents) -> tuple[torch.Tensor, torch.Tensor]:
    """World frames of the joints: G_k = G_parent(k) [R_k | J_k - J_parent(k)] (SMPL Eq. 4).

    The chain is walked one depth level at a time (wrist; the 5 first joints; ...), so a hand
    takes 4 batched steps instead of 16.

    Args:
        rotations: (B, J, 3, 3) local joint rotations.
        joints: (B, J, 3) rest joint positions.
        parents: sequence of J parent indices, -1 for the root, parents before children.

    Returns:
        rotation (B, J, 3, 3) and position (B, J, 3) of each posed joint frame.
    """
    parents = [int(p) for p in parents]
    depth = [0] * len(parents)
    for k in range(1, len(parents)):
        depth[k] = depth[parents[k]] + 1
    parent_positions = torch.cat([torch.zeros_like(joints[:, :1]), joints[:, parents[1:]]], dim=1)
    offsets = joints - parent_positions  # J_k - J_parent(k), and J_0 for the root; (B, J, 3)

    # Frames are appended level by level; `placed` lists the joints in the order they were appended.
    world_rotation, world_position, placed = rotations[:, :1], joints[:, :1], [0]
    for level in range(1, max(depth) + 1):
        ks = [k for k in range(len(parents)) if depth[k] == level]
        at = [placed.index(parents[k]) for k in ks]
        parent_rotation = world_rotation[:, at]  # (B, n, 3, 3)
        rotation = parent_rotation @ rotations[:, ks]  # (B, n, 3, 3)
        position = world_position[:, at] + (parent_rotation @ offsets[:, ks, :, None])[..., 0]  # (B, n, 3)
        world_rotation = torch.cat([world_rotation, rotation], dim=1)
        world_position = torch.cat([world_position, position], dim=1)
        placed += ks
    back = [placed.index(k) for k in range(len(parents))]  # to the model's joint order
    return world_rotation[:, back], world_position[:, back]


def skin(vertices: torch.Tensor, weights: torch.Tensor, joint_rotation: torch.Tensor,
         joint_position: torch.Tensor, rest_joints: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: v_i' = sum_k w_ik (R_k (v_i - J_k) + G_k[0; 1])  (SMPL Eq. 2).

    Each joint's transform is first expressed relative to its rest position (the rest pose is
    "removed", SMPL Eq. 3), then the per-vertex transforms are blended by the weights: one
    (V, J) x (B, J, 12) product rather than a (B, V, 4, 4) tensor per joint.

    Args:
        vertices: (B, V, 3) rest-pose vertices (shape and pose correctives applied).
        weights: (V, J) skinning weights.
        joint_rotation, joint_position: (B, J, 3, 3) and (B, J, 3) from ``kinematic_chain``.
        rest_joints: (B, J, 3) rest joint positions.

    Returns:
        (B, V, 3) posed vertices.
    """
    translation = joint_position - (joint_rotation @ rest_joints[..., None])[..., 0]  # (B, J, 3)
    per_joint = torch.cat([joint_rotation.flatten(2), translation], dim=-1)  # (B, J, 12)
    per_vertex = torch.matmul(weights, per_joint)  # (B, V, 12)
    rotation = per_vertex[..., :9].unflatten(-1, (3, 3))  # (B, V, 3, 3)
    return (rotation @ vertices[..., None])[..., 0] + per_vertex[..., 9:]  # (B, V, 3)


def lbs(betas, full_pose, v_template, shapedirs, posedirs, J_regressor, parents, weights):
    """The whole forward pass from shape and full axis-angle pose (steps 1-6 of the module docstring).

    Args:
        betas: (B, K); full_pose: (B, 48) axis-angle, root first.
        v_template (V, 3), shapedirs (V, 3, K), posedirs (V, 3, 135), J_regressor (16, V),
        parents (16,), weights (V, 16): the model.

    Returns:
        vertices (B, V, 3), joint rotations (B, 16, 3, 3), joint positions (B, 16, 3).
    """
    v_shaped = shape_blend(v_template, shapedirs, betas)  # (B, V, 3)
    rest_joints = regress_joints(J_regressor, v_shaped)  # (B, 16, 3)
    rotations = axis_angle_to_matrix(full_pose.unflatten(1, (-1, 3)))  # (B, 16, 3, 3)
    v_posed = v_shaped + pose_blend(pose_feature(rotations), posedirs)  # (B, V, 3)
    joint_rotation, joint_position = kinematic_chain(rotations, rest_joints, parents)
    vertices = skin(v_posed, weights, joint_rotation, joint_position, rest_joints)
    return vertices, joint_rotation, joint_position


# -------------------------------------------------------------------------------------------------
# The module


class ManoLayer(nn.Module):
    """MANO as an ``nn.Module``: it holds the model's arrays as buffers and runs ``lbs``'s steps, with
    the shape and pose blend shapes (steps 1 and 4) fused into one product for speed (a test checks
    that the two agree).

    Args:
        model: a ManoModel, a path to a MANO-format file, or None for ``default_model_path()``.
        num_pca_comps: pose the fingers with this many PCA coefficients; None for the full 45-D
            axis-angle.
        flat_hand_mean: if True, a zero finger pose is the flat template hand; if False (MANO's
            and smplx's default), ``hands_mean`` is added, so zero is MANO's mean, curled hand.

    Example:
        >>> layer = ManoLayer(num_pca_comps=6)              # doctest: +SKIP
        >>> out = layer(hand_pose=torch.zeros(2, 6))         # doctest: +SKIP
        >>> out.vertices.shape, out.joints.shape             # doctest: +SKIP
        (torch.Size([2, 778, 3]), torch.Size([2, 21, 3]))
    """

    def __init__(self, model: ManoModel | str | Path | None = None, num_pca_comps: int | None = None,
                 flat_hand_mean: bool = True):
        super().__init__()
        if not isinstance(model, ManoModel):
            model = load_mano(default_model_path() if model is None else model)
        if num_pca_comps is not None and not 1 <= num_pca_comps <= model.hands_components.shape[0]:
            raise ValueError(f"num_pca_comps: expected 1..{model.hands_components.shape[0]} "
                             f"(or None for axis-angle), got {num_pca_comps}")
        self.model = model
        self.num_pca_comps = num_pca_comps
        self.flat_hand_mean = flat_hand_mean
        self.parents = tuple(int(p) for p in model.parents)

        def buffer(name, array, dtype=torch.float32):
            self.register_buffer(name, torch.as_tensor(np.asarray(array), dtype=dtype), persistent=False)

        buffer("v_template", model.v_template)
        buffer("shapedirs", model.shapedirs)
        buffer("posedirs", model.posedirs)
        buffer("J_regressor", model.J_regressor)
        buffer("weights", model.weights)
        buffer("faces", model.faces, torch.long)
        buffer("fingertip_vertex_ids", model.fingertip_vertex_ids, torch.long)
        buffer("hands_components", model.hands_components)
        buffer("hands_mean", np.zeros(45) if flat_hand_mean else model.hands_mean)
        # Joints are linear in the shape: J(beta) = J_regressor T + beta (J_regressor S). Folding the
        # regressor into the template and the shape directions once makes step 2 a (16 x K) product.
        buffer("joint_template", model.J_regressor @ model.v_template)  # (16, 3)
        buffer("joint_directions", np.einsum("jv,vdk->kjd", model.J_regressor, model.shapedirs).reshape(
            model.num_betas, -1))  # (K, 48)
        # Steps 1 and 4 in one product: T_P = T + [beta, p(theta)] @ [S; P] (SMPL Eq. 6), with the
        # (V, 3, K) and (V, 3, 135) blend shapes stacked as one (K + 135, 3V) matrix.
        buffer("blend_directions", np.concatenate([model.shapedirs.reshape(-1, model.num_betas).T,
                                                   model.posedirs.reshape(-1, model.posedirs.shape[-1]).T]))
        self.register_buffer("_course_order", torch.tensor(ORDER_MAPS["mano"]), persistent=False)

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[-1]

    def finger_pose(self, hand_pose: torch.Tensor) -> torch.Tensor:
        """The 45 finger axis-angles: ``hands_mean + hand_pose`` (or ``+ hand_pose @ components``
        in the PCA space). (B, 45 or num_pca_comps) -> (B, 45)."""
        if self.num_pca_comps is not None:
            hand_pose = hand_pose @ self.hands_components[: self.num_pca_comps]
        return self.hands_mean + hand_pose

    def hand_pose_of(self, finger_pose: torch.Tensor) -> torch.Tensor:
        """``finger_pose``'s inverse: the ``hand_pose`` closest to 45 finger axis-angles (least squares
        in the PCA space, whose basis need not be orthonormal). (B, 45) -> (B, 45 or num_pca_comps).

        Solved in float64: LAPACK's float32 answer changes in its last bits with where the memory
        lies, and a training target computed with it would not repeat exactly from run to run."""
        offset = finger_pose - self.hands_mean.to(finger_pose.dtype)
        if self.num_pca_comps is None:
            return offset
        basis = self.hands_components[: self.num_pca_comps].double()                       # (P, 45)
        return torch.linalg.lstsq(basis.T, offset.T.double()).solution.T.to(finger_pose.dtype)

    def forward(self, hand_pose: torch.Tensor | None = None, betas: torch.Tensor | None = None,
                global_orient: torch.Tensor | None = None, transl: torch.Tensor | None = None) -> HandOutput:
        """Pose and shape the hand. Any argument left out is zero; batch sizes must agree.

        Args:
            hand_pose: (B, num_pca_comps) PCA coefficients, or (B, 45) axis-angle when
                ``num_pca_comps`` is None.
            betas: (B, K') shape coefficients, K' <= the model's K.
            global_orient: (B, 3) axis-angle of the wrist, applied about the wrist joint.
            transl: (B, 3) translation, metres.

        Returns:
            HandOutput.
        """
        pose_size = self.num_pca_comps or 45
        given = {"hand_pose": hand_pose, "betas": betas, "global_orient": global_orient, "transl": transl}
        sizes = {name: value.shape[0] for name, value in given.items() if value is not None}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"batch sizes differ: {sizes}; pass tensors with the same first dimension")
        batch = next(iter(sizes.values()), 1)
        like = dict(dtype=self.v_template.dtype, device=self.v_template.device)
        for name, value, size in [("hand_pose", hand_pose, pose_size), ("betas", betas, None),
                                  ("global_orient", global_orient, 3), ("transl", transl, 3)]:
            if value is not None and (value.ndim != 2 or (size is not None and value.shape[1] != size)):
                raise ValueError(f"{name}: expected shape (B, {size or 'K'}), got {tuple(value.shape)}")
        if betas is not None and betas.shape[1] > self.num_betas:
            raise ValueError(f"betas: the model has {self.num_betas} shape directions, got {betas.shape[1]}")
        hand_pose = torch.zeros(batch, pose_size, **like) if hand_pose is None else hand_pose
        betas = torch.zeros(batch, self.num_betas, **like) if betas is None else betas
        global_orient = torch.zeros(batch, 3, **like) if global_orient is None else global_orient

        full_pose = torch.cat([global_orient, self.finger_pose(hand_pose)], dim=1)  # (B, 48)
        if betas.shape[1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[1]))  # (B, K)
        rest_joints = self.joint_template + (betas @ self.joint_directions).unflatten(1, (16, 3))  # step 2
        rotations = axis_angle_to_matrix(full_pose.unflatten(1, (16, 3)))  # (B, 16, 3, 3)
        coefficients = torch.cat([betas, pose_feature(rotations)], dim=1)  # (B, K + 135)       steps 1, 3
        v_posed = self.v_template + (coefficients @ self.blend_directions).unflatten(1, (-1, 3))  # (B, V, 3) 4
        joint_rotation, joint_position = kinematic_chain(rotations, rest_joints, self.parents)  # 5
        vertices = skin(v_posed, self.weights, joint_rotation, joint_position, rest_joints)  # 6

        if transl is not None:
            vertices = vertices + transl[:, None]
            joint_position = joint_position + transl[:, None]
        tips = vertices[:, self.fingertip_vertex_ids]  # (B, 5, 3)
        joints = torch.cat([joint_position, tips], dim=1)[:, self._course_order]  # (B, 21, 3)
        bottom_row = torch.tensor([0.0, 0.0, 0.0, 1.0], **like).expand(batch, 16, 1, 4)
        transforms = torch.cat([torch.cat([joint_rotation, joint_position[..., None]], -1), bottom_row], -2)
        return HandOutput(vertices=vertices, joints=joints, mano_joints=joint_position,
                          transforms=transforms, full_pose=full_pose, betas=betas)
