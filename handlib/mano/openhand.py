"""The open hand: a MANO-format right hand built from code, free to redistribute.

The official MANO files may not be redistributed, so handlib builds its own hand in MANO's
format (``python -m handlib build-hand``) and ships the result as
``handlib/assets/mano/MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl``. smplx and ``handlib.mano.load_mano``
read them unchanged, and a user's official ``MANO_RIGHT.pkl`` drops in for them.

How it is built (every step deterministic, about half a minute on a laptop CPU):

1. **Measurements -> skeleton.** A dict of anthropometric measurements (palm length and width,
   each phalanx's length, finger widths, thumb placement; ``MEAN_MEASUREMENTS``) places the 16
   joints in MANO's frame: wrist near (0.096, 0.006, 0.006) m, fingers along -x, palm facing -y,
   thumb towards +z, joints in MANO's order (wrist, index, middle, pinky, ring, thumb).
2. **Skeleton -> skin.** One fixed mesh topology (``hand_topology``) of 778 vertices and 1538
   triangles: a palm tube of rings open at the wrist, four finger tubes and a thumb tube with
   rounded caps, joined by web patches. Each vertex's position is a function of the
   measurements (``hand_vertices``): rings of elliptic cross-section around the bones, with
   knuckle bumps and palmar pads, then a few steps of Taubin smoothing. Same topology for
   every hand, so hands of different shapes can be averaged and compared vertex by vertex.
3. **Skinning weights** from each vertex's position along its finger (linear blending over a
   zone around each joint), then heat diffusion over the mesh; rows sum to 1.
4. **J_regressor**: each joint is a convex combination (non-negative, rows sum to 1) of the skin
   vertices around it that reproduces the joint's anatomical centre.
5. **shapedirs**: sample 1000 adult hands from published means and SDs of the measurements,
   build each one, PCA of the vertices; the top 10 directions scaled by their SD.
6. **posedirs**: sample poses from the pose prior (``handlib.mano.prior``); skin each with
   dual-quaternion skinning (DQS, no candy wrapper, no volume loss) and with LBS; solve for the
   rest-space offset that makes LBS match DQS; ridge-regress the offsets on MANO's 135-D pose
   feature.
7. **hands_components / hands_mean**: PCA of 20000 poses from the pose prior.

The topology. MANO's skin has 778 vertices, 1538 faces, and is open at the wrist. A genus-0
surface with one boundary loop of b vertices has F = 2V - 2 - b faces (Euler), so with V = 778
and F = 1538 the wrist opening has exactly b = 16 vertices. The open hand has that topology:
a manifold, consistently oriented (outward normals) surface, watertight except for the 16-vertex
wrist loop. ``closed_faces(model)`` caps the wrist with a fan of 14 triangles (1552 faces, like
manotorch's ``get_mano_closed_faces``); the capped mesh is a closed 2-manifold with Euler
characteristic V - E + F = 2 and positive volume. The fingertip vertices are where smplx
expects MANO's: 744, 320, 443, 554, 671 (thumb, index, middle, ring, pinky).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse

from handlib.skeleton import MANO_FINGERTIP_VERTEX_IDS, MANO_PARENTS

# -------------------------------------------------------------------------------------------------
# The frame and the measurements

WRIST = np.array([0.0957, 0.0064, 0.0062])  # the wrist joint, metres (MANO's template frame)
FORWARD = np.array([-1.0, 0.0, 0.0])  # fingers point along -x
DORSAL = np.array([0.0, 1.0, 0.0])  # the back of the hand faces +y, the palm -y
RADIAL = np.array([0.0, 0.0, 1.0])  # towards the thumb

# The four fingers in MANO's joint order (joints 1-3, 4-6, 7-9, 10-12); the thumb is 13-15.
FINGER_NAMES = ("index", "middle", "pinky", "ring")
FINGER_JOINTS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12),
                 "thumb": (13, 14, 15)}
# Side by side across the palm, radial to ulnar.
ACROSS = ("index", "middle", "ring", "pinky")
TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")  # the order of fingertip_vertex_ids

# Mean adult hand, metres and degrees. Phalanx lengths are joint centre to joint centre (the last
# one to the fingertip) and follow the proportions of Buchholz, Armstrong & Goldstein (1992),
# "Anthropometric data for describing the kinematics of the human hand", Ergonomics 35(3), scaled
# to a hand length (wrist crease to middle fingertip) of about 0.19 m with the wrist-to-middle-MCP
# distance of MANO's template (0.095 m). Breadths and thicknesses are skin dimensions of the
# ANSUR II survey order of magnitude (Gordon et al. 2014: hand breadth ~ 0.085 m).
MEAN_MEASUREMENTS = {
    "palm_length": 0.095,  # wrist joint -> middle MCP
    "palm_width": 0.084,  # skin breadth across the MCPs
    "palm_thickness": 0.027,  # dorsal to palmar skin at the middle of the palm
    "wrist_width": 0.058,
    "wrist_thickness": 0.036,
    "index_lengths": (0.0390, 0.0233, 0.0205),
    "middle_lengths": (0.0428, 0.0266, 0.0214),
    "ring_lengths": (0.0400, 0.0261, 0.0209),
    "pinky_lengths": (0.0318, 0.0185, 0.0190),
    "thumb_lengths": (0.0410, 0.0305, 0.0265),  # CMC -> MCP -> IP -> tip
    "index_width": 0.0212,  # skin width at the base of the finger
    "middle_width": 0.0214,
    "ring_width": 0.0202,
    "pinky_width": 0.0180,
    "thumb_width": 0.0235,
    "finger_thickness_ratio": 0.86,  # thickness / width of a finger
    "thumb_cmc_forward": 0.018,  # CMC joint from the wrist joint, along the fingers
    "thumb_cmc_radial": 0.022,  # ... towards the thumb
    "thumb_cmc_palmar": 0.014,  # ... towards the palm
    "thumb_angle": 43.0,  # metacarpal direction from the fingers' direction, in the palm plane
    "thumb_palmar_angle": 6.0,  # ... tilted towards the palm
    "thumb_pronation": 50.0,  # the thumb's nail turned from the palm plane towards the fingers
}

# Natural spread of the flat hand, degrees about the palm normal (positive towards the thumb).
FINGER_SPREAD = {"index": 6.0, "middle": -1.0, "ring": -8.0, "pinky": -17.0}
# MCP positions relative to the middle MCP: (along the fingers, towards the back of the hand), m.
MCP_OFFSETS = {"index": (-0.004, -0.002), "middle": (0.0, 0.0), "ring": (-0.007, -0.002),
               "pinky": (-0.020, -0.006)}


def _unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rotate(vectors, axis, degrees):
    """Rotate vectors (..., 3) about a unit axis (3,) by an angle in degrees (Rodrigues)."""
    axis = _unit(axis)
    t = np.deg2rad(degrees)
    return (vectors * np.cos(t) + np.cross(axis, vectors) * np.sin(t)
            + np.outer(vectors @ axis, axis).reshape(np.shape(vectors)) * (1 - np.cos(t)))


@dataclass
class Bone:
    """One digit's straight rest skeleton: joint positions and an orthonormal frame.

    Attributes:
        joints: (4, 3) base joint, two more joints and the tip, metres.
        forward, radial, dorsal: (3,) unit vectors: along the digit, across it, out of its back.
    """

    joints: np.ndarray
    forward: np.ndarray
    radial: np.ndarray
    dorsal: np.ndarray

    def point(self, u, across=0.0, up=0.0):
        """The point at distance u (m) from the base joint along the digit, offset across/up (m)."""
        u, across, up = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (u, across, up)))
        return (self.joints[0] + u[..., None] * self.forward + across[..., None] * self.radial
                + up[..., None] * self.dorsal)


def hand_skeleton(measurements: dict | None = None) -> dict[str, Bone]:
    """The rest skeleton of a hand: one straight ``Bone`` per digit.

    Args:
        measurements: dict like ``MEAN_MEASUREMENTS`` (missing keys take the mean).

    Returns:
        {"index", "middle", "ring", "pinky", "thumb"} -> Bone. The wrist is ``WRIST``.
    """
    m = {**MEAN_MEASUREMENTS, **(measurements or {})}
    palm_direction = _unit(FORWARD + 0.015 * -DORSAL + 0.036 * -RADIAL)  # MANO's wrist -> middle MCP
    palm_radial = _unit(np.cross(DORSAL, palm_direction))  # towards the thumb
    palm_dorsal = np.cross(palm_direction, palm_radial)  # out of the back of the hand
    middle_mcp = WRIST + m["palm_length"] * palm_direction
    scale = m["palm_length"] / MEAN_MEASUREMENTS["palm_length"]
    # Neighbouring MCPs are spaced so that the knuckles span the palm's width.
    spacing = (m["palm_width"] - 0.5 * (m["index_width"] + m["pinky_width"])) / 2.95
    across = {"index": 1.0, "middle": 0.0, "ring": -1.0, "pinky": -1.95}
    bones = {}
    for name in ACROSS:
        along, up = MCP_OFFSETS[name]
        base = (middle_mcp + scale * along * palm_direction + scale * up * palm_dorsal
                + across[name] * spacing * palm_radial)
        forward = _rotate(palm_direction, palm_dorsal, FINGER_SPREAD[name])
        radial = _unit(np.cross(palm_dorsal, forward))
        dorsal = np.cross(forward, radial)
        lengths = np.cumsum([0.0, *m[f"{name}_lengths"]])
        bones[name] = Bone(base + lengths[:, None] * forward, forward, radial, dorsal)
    cmc = (WRIST + m["thumb_cmc_forward"] * palm_direction + m["thumb_cmc_radial"] * palm_radial
           - m["thumb_cmc_palmar"] * palm_dorsal)
    forward = _rotate(palm_direction, palm_dorsal, m["thumb_angle"])
    forward = _rotate(forward, np.cross(forward, palm_dorsal), -m["thumb_palmar_angle"])
    radial = _unit(np.cross(palm_dorsal, forward))
    dorsal = np.cross(forward, radial)
    # Pronation: the thumb's back turns from facing the back of the hand towards the thumb side.
    radial, dorsal = (_rotate(radial, forward, -m["thumb_pronation"]), _rotate(dorsal, forward, -m["thumb_pronation"]))
    lengths = np.cumsum([0.0, *m["thumb_lengths"]])
    bones["thumb"] = Bone(cmc + lengths[:, None] * forward, forward, radial, dorsal)
    return bones


def skeleton_joints(bones: dict[str, Bone]) -> tuple[np.ndarray, np.ndarray]:
    """MANO's 16 joints (wrist, index, middle, pinky, ring, thumb) and the 5 tips (T, I, M, R, P).

    Returns:
        joints (16, 3) and tips (5, 3), metres.
    """
    joints = np.zeros((16, 3))
    joints[0] = WRIST
    for name, ids in FINGER_JOINTS.items():
        joints[list(ids)] = bones[name].joints[:3]
    tips = np.stack([bones[name].joints[3] for name in TIP_ORDER])
    return joints, tips


# -------------------------------------------------------------------------------------------------
# The topology: which vertex is which, and the triangles

AROUND = 10  # vertices around a finger or the thumb
PALM_AROUND = 34  # vertices around the palm: 4 fingers x (4 dorsal + 4 palmar) + 2 sides
WRIST_AROUND = 16  # the wrist opening (the mesh's only boundary loop)
PALM_RINGS = 11  # rings of the palm tube, the knuckle ring last
# Each digit: rings after its base, as (dorsal, palmar) distance from the base joint in units of
# the first phalanx (or metacarpal) and later phalanges: (segment, fraction of it).
DIGIT_RINGS = ((0, 0.36, 0.55), (0, 0.72, 0.80), (1, 0.0, 0.0), (1, 0.5, 0.5), (2, 0.0, 0.0),
               (2, 0.45, 0.45))
THUMB_RINGS = ((0, 0.6, 0.6), (0, 0.85, 0.85), (1, 0.0, 0.0), (1, 0.5, 0.5), (2, 0.0, 0.0), (2, 0.45, 0.45))
CAP_INNER = {"index": 6, "middle": 6, "ring": 6, "pinky": 6, "thumb": 7}  # vertices of the inner cap ring
THUMB_HOLE_RINGS = (2, 5)  # the thumb leaves the palm between these palm rings ...
THUMB_HOLE_COLUMNS = 31  # ... over columns 31, 32, 33, 0 (the index's palmar side and the radial edge)


@dataclass
class HandTopology:
    """Vertex bookkeeping of the open hand mesh (before the fingertip permutation).

    Attributes:
        num_vertices: V = 778.
        wrist: (16,) the boundary loop, in order.
        palm: (PALM_RINGS, 34) palm ring vertex ids, -1 where the thumb hole removed a vertex.
        digits: name -> list of rings (arrays of 10 ids), base ring first, then the own rings,
            then the near-tip ring; the thumb's base ring is the hole in the palm.
        caps: name -> (inner ring ids, apex id).
        webs: (finger, side) -> vertex id of the web vertices between fingers.
        faces: (F, 3) triangles, consistently oriented, outward.
    """

    num_vertices: int
    wrist: np.ndarray
    palm: np.ndarray
    digits: dict
    caps: dict
    webs: dict
    faces: np.ndarray | None = None
    smoother: scipy.sparse.csr_matrix | None = None  # neighbour averaging, cached


def _allocate_topology() -> HandTopology:
    count = [0]

    def new(n):
        ids = np.arange(count[0], count[0] + n)
        count[0] += n
        return ids

    wrist = new(WRIST_AROUND)
    j0, j1 = THUMB_HOLE_RINGS
    hole_columns = [(THUMB_HOLE_COLUMNS + k) % PALM_AROUND for k in range(4)]
    palm = np.full((PALM_RINGS, PALM_AROUND), -1)
    for j in range(PALM_RINGS):
        for i in range(PALM_AROUND):
            if j0 < j < j1 and i in hole_columns[1:-1]:
                continue  # inside the thumb hole
            palm[j, i] = new(1)[0]
    knuckles = palm[-1]
    # Knuckle ring: [R_index, D_index(4), D_middle(4), D_ring(4), D_pinky(4), U_pinky, P_pinky(4), P_ring, P_middle, P_index]
    webs = {}
    for f, name in enumerate(ACROSS):
        webs[(name, "radial")] = knuckles[0] if f == 0 else new(1)[0]
        webs[(name, "ulnar")] = knuckles[17] if f == 3 else None
    for f, name in enumerate(ACROSS[:-1]):
        webs[(name, "ulnar")] = new(1)[0]
    digits, caps = {}, {}
    for f, name in enumerate(ACROSS):
        dorsal = knuckles[1 + 4 * f: 5 + 4 * f]  # radial -> ulnar
        palmar = knuckles[18 + 4 * (3 - f): 22 + 4 * (3 - f)]  # ulnar -> radial
        base = np.concatenate([[webs[(name, "radial")]], dorsal, [webs[(name, "ulnar")]], palmar])
        digits[name] = [base] + [new(AROUND) for _ in range(len(DIGIT_RINGS) + 1)]
        caps[name] = (new(CAP_INNER[name]), new(1)[0])
    hole = np.concatenate([palm[j0, hole_columns], palm[j0 + 1:j1, hole_columns[-1]],
                           palm[j1, hole_columns[::-1]], palm[j1 - 1:j0:-1, hole_columns[0]]])
    digits["thumb"] = [hole] + [new(AROUND) for _ in range(len(THUMB_RINGS) + 1)]
    caps["thumb"] = (new(CAP_INNER["thumb"]), new(1)[0])
    return HandTopology(count[0], wrist, palm, digits, caps, webs)


def _bridge(ring_a, ring_b, points):
    """Triangles joining two closed rings of vertex ids (any sizes) into a band.

    The rings are matched by angle about their common axis: ring_b is rotated so that its start
    is the vertex nearest to ring_a's start, and reversed if it turns the other way.
    """
    ca, cb = points[ring_a].mean(0), points[ring_b].mean(0)
    axis = _unit(cb - ca) if np.linalg.norm(cb - ca) > 1e-9 else _unit(np.cross(*(points[ring_a[:2]] - ca)))

    def angles(ring, centre):
        d = points[ring] - centre
        e1 = _unit(points[ring_a[0]] - ca - ((points[ring_a[0]] - ca) @ axis) * axis)
        e2 = np.cross(axis, e1)
        return np.arctan2(d @ e2, d @ e1)

    def turns(ring, centre):
        a = np.unwrap(angles(ring, centre))
        return np.sign(a[-1] - a[0])

    if turns(ring_a, ca) != turns(ring_b, cb):
        ring_b = ring_b[::-1]
    start = int(np.argmin(np.abs(np.angle(np.exp(1j * angles(ring_b, cb))))))
    ring_b = np.roll(ring_b, -start)
    na, nb = len(ring_a), len(ring_b)
    faces, i, j = [], 0, 0
    while i < na or j < nb:
        # advance on the ring whose next vertex comes first in the normalised parameter
        if j >= nb or (i < na and (i + 1) / na <= (j + 1) / nb):
            faces.append((ring_a[i % na], ring_a[(i + 1) % na], ring_b[j % nb]))
            i += 1
        else:
            faces.append((ring_a[i % na], ring_b[(j + 1) % nb], ring_b[j % nb]))
            j += 1
    return faces


def _fan(ring, apex):
    return [(ring[k], ring[(k + 1) % len(ring)], apex) for k in range(len(ring))]


def _orient(faces: np.ndarray) -> np.ndarray:
    """Flip faces so that neighbours agree (each shared edge is used once in each direction)."""
    faces = faces.copy()
    edge_faces = {}
    for f, tri in enumerate(faces):
        for k in range(3):
            edge_faces.setdefault(frozenset((tri[k], tri[(k + 1) % 3])), []).append(f)
    done = np.zeros(len(faces), bool)
    for seed in range(len(faces)):
        if done[seed]:
            continue
        done[seed] = True
        stack = [seed]
        while stack:
            f = stack.pop()
            tri = faces[f]
            for k in range(3):
                a, b = tri[k], tri[(k + 1) % 3]
                for g in edge_faces[frozenset((a, b))]:
                    if g == f or done[g]:
                        continue
                    other = list(faces[g])
                    # the neighbour must traverse the shared edge as b -> a
                    if any(other[m] == a and other[(m + 1) % 3] == b for m in range(3)):
                        faces[g] = faces[g][::-1]
                    done[g] = True
                    stack.append(g)
    return faces


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# Half-width of a digit's cross-section along it, relative to its base width, at "segment
# coordinates" (0 = base joint, 1 = next joint, 2 = the one after, 3 = tip).
_FINGER_PROFILE = ((0.0, 1.0), (0.5, 0.90), (1.0, 0.93), (1.5, 0.84), (2.0, 0.85), (2.45, 0.82), (3.0, 0.74))
_THUMB_PROFILE = ((0.0, 1.35), (0.5, 1.15), (0.8, 1.04), (1.0, 1.0), (1.5, 0.92), (2.0, 0.95), (2.45, 0.93),
                  (3.0, 0.80))


def _digit_ring(bone, lengths, width, ratio, profile, segment_dorsal, segment_palmar, n=AROUND, bulges=True):
    """Points of one ring around a digit. segment_*: segment coordinate of the ring's dorsal and
    palmar side (the ring may lean: the skin folds of the palm lie more distal than the knuckles)."""
    psi = 2 * np.pi * np.arange(n) / n  # 0 = radial side, pi/2 = back, pi = ulnar side, 3pi/2 = palm
    up_side = np.sin(psi)
    seg = segment_dorsal * (1 + up_side) / 2 + segment_palmar * (1 - up_side) / 2
    cumulative = np.cumsum([0.0, *lengths])
    u = np.interp(seg, np.arange(4), cumulative)
    half_width = 0.5 * width * np.interp(seg, *zip(*profile))
    half_thickness = half_width * ratio
    if bulges:
        near_joint = np.cos(np.pi * np.clip(seg, 0.0, 2.0)) ** 2  # 1 at the joints, 0 mid-phalanx
        knuckle = 1.0 + 0.07 * near_joint * (seg > 0.5)  # bumps over PIP and DIP
        pad = 1.0 + 0.10 * (1 - near_joint) * (seg > 0.2)  # palmar pads of the phalanges
        half_thickness = half_thickness * np.where(up_side > 0, knuckle, pad)
    return bone.point(u, half_width * np.cos(psi), half_thickness * up_side)


def hand_vertices(measurements: dict | None = None, topology: HandTopology | None = None,
                  smoothing_steps: int = 8) -> np.ndarray:
    """The rest-pose skin of a hand with the given measurements, in the fixed topology.

    Args:
        measurements: dict like ``MEAN_MEASUREMENTS`` (missing keys take the mean), metres/degrees.
        topology: from ``hand_topology()`` (built if None).
        smoothing_steps: Taubin smoothing steps after placing the rings.

    Returns:
        (V, 3) vertices, metres, in the topology's own vertex order (before the fingertip
        permutation that ``build_open_hand`` applies).
    """
    m = {**MEAN_MEASUREMENTS, **(measurements or {})}
    topology = topology or hand_topology()
    bones = hand_skeleton(m)
    points = np.zeros((topology.num_vertices, 3))
    ratio = m["finger_thickness_ratio"]

    # Fingers and thumb: rings around the bones, a rounded cap with an apex at the tip.
    for name in (*ACROSS, "thumb"):
        bone, lengths, width = bones[name], m[f"{name}_lengths"], m[f"{name}_width"]
        profile = _THUMB_PROFILE if name == "thumb" else _FINGER_PROFILE
        rings = THUMB_RINGS if name == "thumb" else DIGIT_RINGS
        ids = topology.digits[name]
        if name != "thumb":  # the base ring lies on the knuckles (back) and the palm's finger crease
            points[ids[0]] = _digit_ring(bone, lengths, width * 1.04, 0.62 * m["palm_thickness"] / (width * 0.5 * 1.04) / 2,
                                         profile, -0.08, 0.30, bulges=False)
        for ring, (segment, dorsal, palmar) in zip(ids[1:], rings):
            points[ring] = _digit_ring(bone, lengths, width, ratio, profile, segment + dorsal, segment + palmar)
        tip_half_width = 0.5 * width * profile[-1][1]
        total = sum(lengths)
        near_tip = 3.0 - 0.8 * tip_half_width / lengths[2]
        points[ids[-1]] = _digit_ring(bone, lengths, width, ratio, profile, near_tip, near_tip)
        inner, apex = topology.caps[name]
        k = len(inner)
        psi = 2 * np.pi * (np.arange(k) + 0.5) / k
        points[inner] = bone.point(total - 0.32 * tip_half_width, 0.62 * tip_half_width * np.cos(psi),
                                   0.62 * tip_half_width * ratio * np.sin(psi) - 0.1 * tip_half_width)
        points[apex] = bone.point(total, 0.0, -0.15 * tip_half_width)

    # Web vertices between the fingers, a third of the way up the first phalanx.
    for name in ACROSS:
        bone, width = bones[name], m[f"{name}_width"]
        for side, sign in (("radial", 1.0), ("ulnar", -1.0)):
            vertex = topology.webs[(name, side)]
            if vertex is None or vertex in topology.palm[-1]:
                continue
            points[vertex] = bone.point(0.38 * m[f"{name}_lengths"][0], sign * 0.52 * width, -0.1 * width)

    # The palm: rings from the wrist to the knuckles. Each column blends a rounded-box palm
    # section into its knuckle-ring point near the knuckles.
    palm_direction = _unit(bones["middle"].joints[0] - WRIST)
    palm_radial = _unit(np.cross(DORSAL, palm_direction))
    palm_dorsal = np.cross(palm_direction, palm_radial)
    frame = np.stack([palm_direction, palm_radial, palm_dorsal])  # rows: along, radial, dorsal

    def to_palm(p):
        return (p - WRIST) @ frame.T

    def from_palm(q):
        return WRIST + q @ frame

    knuckles = to_palm(points[topology.palm[-1]])  # (34, 3) along, radial, dorsal
    knuckle_centre = knuckles.mean(0)
    wrist_along = -0.008 * m["palm_length"] / MEAN_MEASUREMENTS["palm_length"]
    wrist_centre = np.array([wrist_along, 0.002, -0.001])
    # Each column sits at the same fraction of the perimeter as its knuckle point does.
    closed = np.vstack([knuckles[:, 1:], knuckles[:1, 1:]])
    perimeter = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    fraction = perimeter[:-1] / perimeter[-1]
    start_angle = np.arctan2((knuckles[0, 2] - knuckle_centre[2]) / m["palm_thickness"],
                             (knuckles[0, 1] - knuckle_centre[1]) / m["palm_width"])
    dense_angle = start_angle + np.linspace(0.0, 2 * np.pi, 2001)
    knuckle_width = knuckles[:, 1].max() - knuckles[:, 1].min()
    knuckle_centre[1] = 0.5 * (knuckles[:, 1].max() + knuckles[:, 1].min())
    for j in range(PALM_RINGS - 1):
        s = (j + 1) / PALM_RINGS
        grow = _smoothstep(s / 0.6)
        half_width = 0.5 * (m["wrist_width"] + grow * (knuckle_width - m["wrist_width"]))
        half_thick = 0.5 * (m["wrist_thickness"] + grow * (m["palm_thickness"] - m["wrist_thickness"]))
        centre = wrist_centre + s * (knuckle_centre - wrist_centre)
        c, sn = np.cos(dense_angle), np.sin(dense_angle)
        exponent = 2.0 / 3.0  # superellipse |x|^3 + |y|^3 = 1: a rounded box
        outline = np.stack([half_width * np.sign(c) * np.abs(c) ** exponent,
                            half_thick * np.sign(sn) * np.abs(sn) ** exponent], 1)
        length = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(outline, axis=0), axis=1))])
        section = np.zeros((PALM_AROUND, 3))
        section[:, 1] = np.interp(fraction * length[-1], length, outline[:, 0])
        section[:, 2] = np.interp(fraction * length[-1], length, outline[:, 1])
        section[:, 0] = wrist_along + s * (knuckle_centre[0] - wrist_along)
        section[:, 1:] += centre[1:]
        blend = _smoothstep((s - 0.55) / 0.45)
        q = (1 - blend) * section + blend * knuckles
        alive = topology.palm[j] >= 0
        points[topology.palm[j][alive]] = from_palm(q[alive])
    theta = 2 * np.pi * np.arange(WRIST_AROUND) / WRIST_AROUND
    wrist = np.stack([np.full(WRIST_AROUND, wrist_along), wrist_centre[1] + 0.5 * m["wrist_width"] * np.cos(theta),
                      wrist_centre[2] + 0.5 * m["wrist_thickness"] * np.sin(theta)], 1)
    points[topology.wrist] = from_palm(wrist)

    if smoothing_steps:
        if topology.smoother is None:
            topology.smoother = _umbrella(topology.faces, topology.num_vertices)
        points = taubin_smooth(points, topology.faces, smoothing_steps, fixed=topology.wrist, average=topology.smoother)
    return points


def _umbrella(faces: np.ndarray, num_vertices: int) -> scipy.sparse.csr_matrix:
    """Row-normalised adjacency: (A x)_i is the mean of vertex i's neighbours."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    adjacency = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                                        shape=(num_vertices, num_vertices)).tocsr()
    adjacency.data[:] = 1.0
    return scipy.sparse.diags(1.0 / np.asarray(adjacency.sum(1)).ravel()) @ adjacency


def taubin_smooth(points: np.ndarray, faces: np.ndarray, steps: int, fixed=(), lam: float = 0.5,
                  mu: float = -0.53, average=None) -> np.ndarray:
    """Taubin's lambda/mu smoothing (SIGGRAPH 1995): smooths without shrinking; linear in the points.

    Args:
        points: (V, 3) or (V, D).
        faces: (F, 3).
        steps: number of lambda/mu pairs.
        fixed: vertex ids that stay where they are.
        average: the neighbour-averaging matrix of ``faces`` if already computed.
    """
    average = _umbrella(faces, len(points)) if average is None else average
    moving = np.ones((len(points), 1))
    moving[list(fixed)] = 0.0
    for _ in range(steps):
        for factor in (lam, mu):
            points = points + factor * moving * (average @ points - points)
    return points


def hand_topology() -> HandTopology:
    """The fixed mesh topology of the open hand (778 vertices, 1538 faces, open at the wrist).

    Returns:
        HandTopology with ``faces`` (1538, 3), consistently oriented with outward normals.
    """
    topology = _allocate_topology()
    layout = hand_vertices(MEAN_MEASUREMENTS, topology, smoothing_steps=0)
    faces = _bridge(topology.wrist, topology.palm[0], layout)
    j0, j1 = THUMB_HOLE_RINGS
    hole_quads = {(j, (THUMB_HOLE_COLUMNS + k) % PALM_AROUND) for j in range(j0, j1) for k in range(3)}
    for j in range(PALM_RINGS - 1):
        for i in range(PALM_AROUND):
            if (j, i) in hole_quads:
                continue
            a, b = topology.palm[j, i], topology.palm[j, (i + 1) % PALM_AROUND]
            c, d = topology.palm[j + 1, (i + 1) % PALM_AROUND], topology.palm[j + 1, i]
            faces += [(a, b, c), (a, c, d)]
    knuckles = topology.palm[-1]
    for f in range(3):
        left, right = ACROSS[f], ACROSS[f + 1]
        d_left, d_right = knuckles[4 + 4 * f], knuckles[5 + 4 * f]
        p_left = knuckles[18 + 4 * (3 - f)]  # left finger's ulnar-most palmar vertex
        p_right = knuckles[17 + 4 * (3 - f)]  # right finger's radial-most palmar vertex
        u, r = topology.webs[(left, "ulnar")], topology.webs[(right, "radial")]
        faces += [(d_left, d_right, r), (d_left, r, u), (u, r, p_right), (u, p_right, p_left)]
    for name, rings in topology.digits.items():
        for ring_a, ring_b in zip(rings[:-1], rings[1:]):
            faces += _bridge(ring_a, ring_b, layout)
        inner, apex = topology.caps[name]
        faces += _bridge(rings[-1], inner, layout) + _fan(inner, apex)
    faces = _orient(np.array(faces, dtype=np.int64))
    # Outward: positive volume once the wrist is capped.
    if signed_volume(layout, np.concatenate([faces, _wrist_cap(topology.wrist)])) < 0:
        faces = faces[:, ::-1].copy()
    topology.faces = faces
    return topology


def _wrist_cap(loop) -> np.ndarray:
    """A fan of len(loop) - 2 triangles closing a boundary loop (same winding as the loop)."""
    loop = np.asarray(loop)
    return np.stack([np.full(len(loop) - 2, loop[0]), loop[1:-1], loop[2:]], 1)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed triangle mesh (m^3), positive when the normals point outward."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


# -------------------------------------------------------------------------------------------------
# Skinning weights and the joint regressor


def _segment_coordinate(points, bone, lengths):
    """Where points lie along a digit: 0 at its base joint, 1, 2 at the next joints, 3 at the tip."""
    u = (points - bone.joints[0]) @ bone.forward
    cumulative = np.cumsum([0.0, *lengths])
    inside = np.interp(u, cumulative, np.arange(4.0))
    return np.where(u < 0, u / lengths[0], inside)


def _digit_weights(seg, joints, widths):
    """Weights over (parent of the digit, joint 1, joint 2, joint 3) blending across each joint.

    seg: (N,) segment coordinates; widths: half-width of each blend zone (segment units)."""
    steps = [_smoothstep((seg - (k - w)) / (2 * w)) for k, w in enumerate(widths)]
    out = np.zeros((len(seg), 16))
    parent = 0
    out[:, parent] = 1 - steps[0]
    out[:, joints[0]] = steps[0] - steps[1]
    out[:, joints[1]] = steps[1] - steps[2]
    out[:, joints[2]] = steps[2]
    return out


def skinning_weights(vertices: np.ndarray, topology: HandTopology, measurements: dict | None = None,
                     diffusion_steps: int = 2) -> np.ndarray:
    """Smooth LBS weights: each vertex follows the bone it lies on, blended across the joints.

    Every vertex of a digit (and each palm column below it) gets weights from its position along
    the digit (``_digit_weights``: a smoothstep across each joint); the palm around the thumb's
    metacarpal follows the thumb with a Gaussian falloff; then heat diffusion over the mesh
    (``diffusion_steps`` of averaging with the neighbours) smooths the seams.

    Args:
        vertices: (V, 3) rest vertices (topology order).
        topology: the mesh bookkeeping.

    Returns:
        (V, 16) weights, non-negative, rows sum to 1.
    """
    m = {**MEAN_MEASUREMENTS, **(measurements or {})}
    bones = hand_skeleton(m)
    V = topology.num_vertices
    owner = np.full(V, -1)  # digit index in ACROSS (+ thumb = 4) of each vertex, -1: palm
    names = (*ACROSS, "thumb")
    for d, name in enumerate(names):
        rings = topology.digits[name][1:] if name == "thumb" else topology.digits[name]
        for ring in rings:
            owner[ring] = d
        owner[topology.caps[name][0]] = d
        owner[topology.caps[name][1]] = d
    # Palm columns belong to the finger above them; the sides to index / pinky.
    column_owner = np.zeros(PALM_AROUND, int)
    column_owner[1:17] = np.arange(16) // 4
    column_owner[17] = 3
    column_owner[18:34] = 3 - np.arange(16) // 4
    column_owner[0] = 0
    weights = np.zeros((V, 16))
    blend = {name: (0.30, 0.22, 0.22) for name in ACROSS}
    blend["thumb"] = (0.45, 0.25, 0.22)

    def digit(name, ids):
        seg = _segment_coordinate(vertices[ids], bones[name], m[f"{name}_lengths"])
        return _digit_weights(seg, FINGER_JOINTS[name], blend[name])

    for d, name in enumerate(names):
        ids = np.flatnonzero(owner == d)
        weights[ids] = digit(name, ids)
    for j in range(PALM_RINGS):
        for i in range(PALM_AROUND):
            v = topology.palm[j, i]
            if v >= 0:
                weights[v] = digit(ACROSS[column_owner[i]], [v])[0]
    weights[topology.wrist] = 0.0
    weights[topology.wrist, 0] = 1.0
    # Web vertices between two fingers follow both.
    for f in range(3):
        for side, other in (("ulnar", ACROSS[f + 1]), ("radial", ACROSS[f])):
            name = ACROSS[f] if side == "ulnar" else ACROSS[f + 1]
            v = topology.webs[(name, side)]
            weights[v] = 0.75 * digit(name, [v])[0] + 0.25 * digit(other, [v])[0]
    # The thenar eminence (palm around the thumb's metacarpal) moves with the thumb.
    palm_ids = np.flatnonzero(owner < 0)
    thumb = bones["thumb"]
    a, b = thumb.joints[0], thumb.joints[1]
    t = np.clip((vertices[palm_ids] - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    distance = np.linalg.norm(vertices[palm_ids] - (a + t[:, None] * (b - a)), axis=1)
    pull = np.exp(-0.5 * (distance / 0.011) ** 2) * _smoothstep((t + 0.2) / 0.6)
    thumb_w = digit("thumb", palm_ids)
    weights[palm_ids] = (1 - pull[:, None]) * weights[palm_ids] + pull[:, None] * thumb_w
    # Heat diffusion, keeping the wrist loop on the wrist.
    average = _umbrella(topology.faces, V)
    for _ in range(diffusion_steps):
        weights = 0.5 * weights + 0.5 * (average @ weights)
    weights[weights < 1e-4] = 0.0
    return weights / weights.sum(1, keepdims=True)


def joint_regressor(vertices: np.ndarray, joints: np.ndarray, topology: HandTopology, candidates: int = 24,
                    smoothness: float = 1e-5) -> np.ndarray:
    """J_regressor: each joint as a convex combination of the skin vertices around it.

    For joint k, the ``candidates`` nearest vertices of the joint's own part of the mesh get
    non-negative weights summing to 1 that reproduce the joint's anatomical centre (a small
    penalty on the squared weights spreads them evenly): a non-negative least-squares problem.

    Args:
        vertices: (V, 3) rest vertices; joints: (16, 3) anatomical joint centres.

    Returns:
        (16, V) regressor, rows sum to 1, non-negative.
    """
    V = len(vertices)
    part = np.full(V, "palm", dtype=object)
    for name in (*ACROSS, "thumb"):
        for ring in topology.digits[name][1:]:
            part[ring] = name
        part[topology.caps[name][0]] = name
        part[topology.caps[name][1]] = name
    regressor = np.zeros((16, V))
    for k in range(16):
        name = next((n for n, ids in FINGER_JOINTS.items() if k in ids), "palm")
        allowed = np.flatnonzero((part == name) | (part == "palm")) if k in (1, 4, 7, 10, 13) else \
            np.flatnonzero(part == name)
        nearest = allowed[np.argsort(np.linalg.norm(vertices[allowed] - joints[k], axis=1), kind="stable")[:candidates]]
        scale = 1000.0
        A = np.vstack([scale * vertices[nearest].T, scale * np.ones((1, len(nearest))),
                       np.sqrt(smoothness) * np.eye(len(nearest))])
        b = np.concatenate([scale * joints[k], [scale], np.zeros(len(nearest))])
        w, _ = scipy.optimize.nnls(A, b)
        regressor[k, nearest] = w / w.sum()
    return regressor


# -------------------------------------------------------------------------------------------------
# Shape space: PCA of many anatomically sampled hands


def sample_measurements(n: int, rng: np.random.Generator) -> list[dict]:
    """Adult hands drawn from published means and SDs of hand measurements.

    Hand length (wrist crease to middle fingertip) is a 50/50 mixture of men (about 0.194 m,
    SD 0.009 m) and women (about 0.180 m, SD 0.009 m), the ANSUR II order of magnitude (Gordon et
    al. 2014); every length scales with it. On top: the breadth-to-length ratio (SD 4 %, women's
    hands relatively narrower), finger length relative to the palm (SD 3 %, each finger 2 %, each
    phalanx 3 %), finger widths (SD 6 %), thickness (SD 6-7 %), wrist size (5 %) and the thumb's
    length (4 %), placement (1.2 mm) and angle (3 degrees).

    Args:
        n: number of hands.
        rng: numpy Generator (seeded by the caller).

    Returns:
        n measurement dicts (the keys of ``MEAN_MEASUREMENTS``).
    """
    mean = MEAN_MEASUREMENTS
    hands = []
    for _ in range(n):
        male = rng.random() < 0.5
        size = (1.037 if male else 0.963) + 0.047 * rng.standard_normal()
        breadth = (1.012 if male else 0.988) * (1 + 0.04 * rng.standard_normal())
        finger_scale = 1 + 0.03 * rng.standard_normal()
        width_scale = 1 + 0.06 * rng.standard_normal()
        h = {"palm_length": mean["palm_length"] * size,
             "palm_width": mean["palm_width"] * size * breadth,
             "palm_thickness": mean["palm_thickness"] * size * (1 + 0.07 * rng.standard_normal()),
             "wrist_width": mean["wrist_width"] * size * (1 + 0.05 * rng.standard_normal()),
             "wrist_thickness": mean["wrist_thickness"] * size * (1 + 0.05 * rng.standard_normal()),
             "finger_thickness_ratio": mean["finger_thickness_ratio"] * (1 + 0.05 * rng.standard_normal())}
        for name in (*ACROSS, "thumb"):
            own = finger_scale * (1 + (0.04 if name == "thumb" else 0.02) * rng.standard_normal())
            lengths = np.array(mean[f"{name}_lengths"]) * size * own * (1 + 0.03 * rng.standard_normal(3))
            h[f"{name}_lengths"] = tuple(lengths)
            h[f"{name}_width"] = mean[f"{name}_width"] * size * width_scale * (1 + 0.02 * rng.standard_normal())
        for key in ("thumb_cmc_forward", "thumb_cmc_radial", "thumb_cmc_palmar"):
            h[key] = mean[key] * size + 0.0012 * rng.standard_normal()
        h["thumb_angle"] = mean["thumb_angle"] + 3.0 * rng.standard_normal()
        hands.append(h)
    return hands


def hand_length(vertices: np.ndarray, tips_ids, wrist_loop) -> np.ndarray:
    """Wrist-crease-to-middle-fingertip length, approximated as the distance from the wrist
    opening's centre to the middle fingertip. vertices (..., V, 3) -> (...,) metres."""
    return np.linalg.norm(vertices[..., tips_ids[2], :] - vertices[..., wrist_loop, :].mean(-2), axis=-1)


def shape_space(topology: HandTopology, rng: np.random.Generator, num_shapes: int = 1000,
                num_betas: int = 10) -> tuple[np.ndarray, dict]:
    """PCA of sampled hands: shape directions scaled by their standard deviation.

    Returns:
        shapedirs (V, 3, num_betas) in metres per unit beta, and stats: the variance explained by
        each direction (fraction of the total) and the samples' hand lengths.
    """
    samples = np.stack([hand_vertices(h, topology) for h in sample_measurements(num_shapes, rng)])  # (N, V, 3)
    flat = samples.reshape(num_shapes, -1)
    centred = flat - flat.mean(0)
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    variance = singular ** 2 / (num_shapes - 1)
    directions = directions[:num_betas] * np.sqrt(variance[:num_betas])[:, None]  # (K, 3V), scaled by SD
    # A deterministic sign: positive beta_1 makes the hand bigger; the others, the largest entry positive.
    template = hand_vertices(None, topology)
    for k in range(num_betas):
        if k == 0:
            sign = np.sign(((template - template.mean(0)) * directions[k].reshape(-1, 3)).sum())
        else:
            sign = np.sign(directions[k][np.argmax(np.abs(directions[k]))])
        directions[k] *= sign
    shapedirs = directions.reshape(num_betas, -1, 3).transpose(1, 2, 0)  # (V, 3, K)
    stats = {"explained": variance[:num_betas] / variance.sum(), "num_shapes": num_shapes}
    return shapedirs, stats


# -------------------------------------------------------------------------------------------------
# Pose correctives: LBS + B_P(theta) fitted to dual-quaternion skinning


def _posed_frames(rest_joints: np.ndarray, full_pose: np.ndarray):
    """World rotation (N, 16, 3, 3) and rest-removed translation (N, 16, 3) of each joint."""
    import torch

    from handlib.geometry import axis_angle_to_matrix
    from handlib.mano.layer import kinematic_chain

    pose = torch.as_tensor(full_pose, dtype=torch.float64)
    rotations = axis_angle_to_matrix(pose.reshape(len(pose), 16, 3))
    joints = torch.as_tensor(rest_joints, dtype=torch.float64).expand(len(pose), 16, 3)
    world_rotation, world_position = kinematic_chain(rotations, joints, MANO_PARENTS)
    translation = world_position - (world_rotation @ joints[..., None])[..., 0]
    return rotations.numpy(), world_rotation.numpy(), translation.numpy()


def _quaternion_multiply(p, q):
    w1, x1, y1, z1 = np.moveaxis(p, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(q, -1, 0)
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], -1)


def linear_blend_skinning(vertices, weights, rotation, translation):
    """v_i' = sum_k w_ik (R_k v_i + t_k). vertices (V, 3) or (N, V, 3); R (N, J, 3, 3); t (N, J, 3)."""
    blended_r = np.einsum("vj,njab->nvab", weights, rotation)
    blended_t = np.einsum("vj,nja->nva", weights, translation)
    vertices = np.broadcast_to(vertices, blended_t.shape)
    return np.einsum("nvab,nvb->nva", blended_r, vertices) + blended_t


def dual_quaternion_skinning(vertices, weights, rotation, translation):
    """Dual-quaternion skinning (Kavan et al., 2008): blend unit dual quaternions, normalise, apply.

    No candy-wrapper twist and no volume loss at bent joints, unlike LBS.

    Args:
        vertices: (V, 3) rest vertices; weights (V, J); rotation (N, J, 3, 3); translation (N, J, 3).

    Returns:
        (N, V, 3) posed vertices.
    """
    import torch

    from handlib.geometry import matrix_to_quaternion

    real = matrix_to_quaternion(torch.as_tensor(rotation)).numpy()  # (N, J, 4)
    dual = 0.5 * _quaternion_multiply(np.concatenate([np.zeros(translation.shape[:-1] + (1,)), translation], -1),
                                      real)
    pivot = real[:, np.argmax(weights, axis=1)]  # (N, V, 4): the dominant joint of each vertex
    sign = np.sign(np.einsum("nvq,njq->nvj", pivot, real))
    sign[sign == 0] = 1.0
    signed_weights = weights[None] * sign  # (N, V, J)
    b_real = np.einsum("nvj,njq->nvq", signed_weights, real)
    b_dual = np.einsum("nvj,njq->nvq", signed_weights, dual)
    norm = np.linalg.norm(b_real, axis=-1, keepdims=True)
    b_real, b_dual = b_real / norm, b_dual / norm
    conjugate = b_real * np.array([1.0, -1.0, -1.0, -1.0])
    t = 2.0 * _quaternion_multiply(b_dual, conjugate)[..., 1:]
    w, v = b_real[..., :1], b_real[..., 1:]
    x = np.broadcast_to(vertices, t.shape)
    rotated = x + 2.0 * np.cross(v, np.cross(v, x) + w * x)
    return rotated + t


def fit_pose_correctives(v_template, weights, rest_joints, poses, ridge: float = 1e-2,
                         threshold: float = 1e-3):
    """Pose blend shapes such that LBS + B_P(theta) reproduces DQS of the same rig.

    For each training pose, LBS is linear in a rest-space offset d_i of vertex i:
    (sum_k w_ik R_k) d_i = DQS_i - LBS_i, a 3x3 system per vertex. The offsets are then ridge-
    regressed on MANO's pose feature p(theta) = vec(R_k - I) (135-D), each vertex using only the
    features of the joints that influence it (weight > ``threshold``).

    Args:
        v_template: (V, 3); weights (V, 16); rest_joints (16, 3); poses (N, 48) full axis-angle.

    Returns:
        posedirs (V, 3, 135).
    """
    local, rotation, translation = _posed_frames(rest_joints, poses)
    lbs_vertices = linear_blend_skinning(v_template, weights, rotation, translation)
    dqs_vertices = dual_quaternion_skinning(v_template, weights, rotation, translation)
    blended = np.einsum("vj,njab->nvab", weights, rotation)
    offsets = np.linalg.solve(blended, (dqs_vertices - lbs_vertices)[..., None])[..., 0]  # (N, V, 3)
    features = (local[:, 1:] - np.eye(3)).reshape(len(poses), 135)
    V = len(v_template)
    posedirs = np.zeros((V, 3, 135))
    groups = {}
    for i in range(V):
        joints = tuple(k for k in range(1, 16) if weights[i, k] > threshold)
        groups.setdefault(joints, []).append(i)
    for joints, ids in groups.items():
        if not joints:
            continue
        columns = np.concatenate([np.arange(9 * (k - 1), 9 * k) for k in joints])
        X = features[:, columns]  # (N, c)
        Y = offsets[:, ids].reshape(len(poses), -1)  # (N, 3n)
        coefficients = np.linalg.solve(X.T @ X + ridge * np.eye(len(columns)), X.T @ Y)  # (c, 3n)
        posedirs[np.array(ids)[:, None, None], np.arange(3)[None, :, None], columns[None, None, :]] = \
            coefficients.reshape(len(columns), len(ids), 3).transpose(1, 2, 0)
    return posedirs


def corrective_errors(v_template, weights, rest_joints, posedirs, poses) -> dict:
    """Vertex errors (mm) against DQS of plain LBS and of LBS + correctives, on the given poses."""
    local, rotation, translation = _posed_frames(rest_joints, poses)
    dqs_vertices = dual_quaternion_skinning(v_template, weights, rotation, translation)
    lbs_vertices = linear_blend_skinning(v_template, weights, rotation, translation)
    features = (local[:, 1:] - np.eye(3)).reshape(len(poses), 135)
    corrected = v_template + np.einsum("np,vdp->nvd", features, posedirs)
    lbs_corrected = linear_blend_skinning(corrected, weights, rotation, translation)
    plain = np.linalg.norm(lbs_vertices - dqs_vertices, axis=-1) * 1000
    fixed = np.linalg.norm(lbs_corrected - dqs_vertices, axis=-1) * 1000
    return {"lbs_mean_mm": float(plain.mean()), "lbs_max_mm": float(plain.max()),
            "corrected_mean_mm": float(fixed.mean()), "corrected_max_mm": float(fixed.max())}


# -------------------------------------------------------------------------------------------------
# Mesh checks (used by the tests and the build)


def mesh_edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (E, 2) and how many faces use each (E,)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    return unique, counts


def boundary_loops(faces: np.ndarray) -> list[np.ndarray]:
    """The boundary loops of a triangle mesh, each in the order its faces traverse it reversed
    (so a fan over the loop closes the mesh with matching orientation)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    present = set(map(tuple, directed))
    boundary = [(a, b) for a, b in directed if (b, a) not in present]
    following = {b: a for a, b in boundary}  # walk the boundary backwards
    loops, seen = [], set()
    for start in sorted(following):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = following[v]
        loops.append(np.array(loop))
    return loops


def closed_faces(model) -> np.ndarray:
    """The faces with the wrist opening capped by a fan: (F + b - 2, 3), 1552 for MANO's topology.

    Like manotorch's ``get_mano_closed_faces``: the capped mesh is closed, so its volume, inside
    tests and watertight renders make sense.

    Args:
        model: a ManoModel, a dict with key "f", or a (F, 3) faces array.

    Returns:
        (F + b - 2, 3) int64 faces.
    """
    faces = model if isinstance(model, np.ndarray) else (model["f"] if isinstance(model, dict) else model.faces)
    faces = np.asarray(faces, dtype=np.int64)
    loops = boundary_loops(faces)
    if len(loops) != 1:
        raise ValueError(f"model: expected one boundary loop (the wrist), found {len(loops)}")
    return np.concatenate([faces, _wrist_cap(loops[0])])


def winding_numbers(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Generalised winding number of points w.r.t. a closed mesh (Jacobson et al. 2013): ~1 inside,
    ~0 outside. (P, 3) -> (P,)."""
    a, b, c = (vertices[faces[:, k]][None] - points[:, None] for k in range(3))  # (P, F, 3)
    la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
    numerator = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
    denominator = (la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc + np.einsum("pfi,pfi->pf", b, c) * la
                   + np.einsum("pfi,pfi->pf", c, a) * lb)
    return np.arctan2(numerator, denominator).sum(1) / (2 * np.pi)


def self_intersections(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The (edge, triangle) pairs that cross, among pairs sharing no vertex.

    Two triangles of a mesh intersect exactly when an edge of one crosses the other, so an empty
    result means the surface does not intersect itself.

    Returns:
        (K, 3) int64: edge's two vertices and the face index of each crossing.
    """
    edges, _ = mesh_edges(faces)
    p, q = vertices[edges[:, 0]], vertices[edges[:, 1]]
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    crossings = []
    lo_e, hi_e = np.minimum(p, q), np.maximum(p, q)
    tri = np.stack([a, b, c], 1)
    lo_t, hi_t = tri.min(1), tri.max(1)
    for start in range(0, len(edges), 256):
        e = slice(start, start + 256)
        overlap = np.all((lo_e[e, None] <= hi_t[None]) & (hi_e[e, None] >= lo_t[None]), axis=-1)  # (n, F)
        ei, fi = np.nonzero(overlap)
        ei = ei + start
        shared = np.any(edges[ei][:, :, None] == faces[fi][:, None, :], axis=(1, 2))
        ei, fi = ei[~shared], fi[~shared]
        if len(ei) == 0:
            continue
        o, d = p[ei], q[ei] - p[ei]
        e1, e2 = b[fi] - a[fi], c[fi] - a[fi]
        h = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, h)
        scale = np.linalg.norm(d, axis=1) * np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1)
        ok = np.abs(det) > 1e-9 * scale  # an edge parallel to the triangle's plane does not cross it
        s = o - a[fi]
        u = np.einsum("ij,ij->i", s, h) / np.where(ok, det, 1)
        qv = np.cross(s, e1)
        v = np.einsum("ij,ij->i", d, qv) / np.where(ok, det, 1)
        t = np.einsum("ij,ij->i", e2, qv) / np.where(ok, det, 1)
        eps = 1e-9  # touching at a shared point is not crossing
        hit = ok & (u > eps) & (v > eps) & (u + v < 1 - eps) & (t > eps) & (t < 1 - eps)
        crossings.append(np.concatenate([edges[ei[hit]], fi[hit, None]], 1))
    return np.concatenate(crossings).astype(np.int64) if crossings else np.zeros((0, 3), np.int64)


# -------------------------------------------------------------------------------------------------
# Assembly


def _fingertip_permutation(topology: HandTopology) -> np.ndarray:
    """order such that new vertex i is old vertex order[i], with the fingertip apexes at MANO's ids."""
    order = np.arange(topology.num_vertices)
    for name, target in zip(TIP_ORDER, MANO_FINGERTIP_VERTEX_IDS):
        apex = topology.caps[name][1]
        where = int(np.flatnonzero(order == apex)[0])
        order[where], order[target] = order[target], order[where]
    return order


def mirror_model(arrays: dict) -> dict:
    """The left hand: the mirror image x -> -x of a right-hand model (faces re-wound).

    Posing the left model with the mirrored parameters (each axis-angle (a, b, c) -> (a, -b, -c))
    gives the mirror image of the right model posed with the originals.
    """
    m = np.array([-1.0, 1.0, 1.0])
    left = dict(arrays)
    left["v_template"] = arrays["v_template"] * m
    left["f"] = arrays["f"][:, [0, 2, 1]].copy()
    left["shapedirs"] = arrays["shapedirs"] * m[None, :, None]
    # The pose feature of the mirrored rotation M R M is vec(M (R - I) M): entry (a, b) times m_a m_b.
    feature_sign = np.tile(np.outer(m, m).ravel(), 15)
    left["posedirs"] = arrays["posedirs"] * m[None, :, None] * feature_sign[None, None, :]
    axis_sign = np.tile(-m, 15)  # axis-angle (a, b, c) -> (a, -b, -c)
    left["hands_components"] = arrays["hands_components"] * axis_sign[None]
    left["hands_mean"] = arrays["hands_mean"] * axis_sign
    return left


def build_open_hand(seed: int = 0, num_shapes: int = 1000, num_poses: int = 3000, num_test_poses: int = 500,
                    num_pca_poses: int = 20000, return_report: bool = False):
    """Build the open hand model: the arrays of a MANO right-hand file.

    Args:
        seed: seeds every random draw (shapes, poses); the same seed gives the same arrays.
        num_shapes: sampled hands for the shape PCA.
        num_poses, num_test_poses: sampled poses to fit the pose correctives, and held out to
            report their error.
        num_pca_poses: sampled poses for the pose PCA (hands_components).
        return_report: also return a dict of the numbers the build measured.

    Returns:
        dict of MANO arrays (v_template (778, 3), f (1538, 3), weights (778, 16), J_regressor
        (16, 778), kintree_table (2, 16), shapedirs (778, 3, 10), posedirs (778, 3, 135),
        hands_components (45, 45), hands_mean (45,), fingertip_vertex_ids (5,)), float64 / int64;
        and the report if asked.
    """
    import torch

    from handlib.mano.prior import HandPosePrior

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    topology = hand_topology()
    bones = hand_skeleton()
    joints, tips = skeleton_joints(bones)
    v_template = hand_vertices(None, topology)
    weights = skinning_weights(v_template, topology)
    regressor = joint_regressor(v_template, joints, topology)
    shapedirs, shape_stats = shape_space(topology, rng, num_shapes)

    prior = HandPosePrior(joints, tips, is_right=True)
    generator = torch.Generator().manual_seed(seed)
    poses = prior.sample_poses(num_poses + num_test_poses, generator).double().numpy()
    full = np.concatenate([np.zeros((len(poses), 3)), poses], 1)
    posedirs = fit_pose_correctives(v_template, weights, joints, full[:num_poses])
    errors = corrective_errors(v_template, weights, joints, posedirs, full[num_poses:])

    pca_poses = prior.sample_poses(num_pca_poses, generator).double().numpy()
    hands_mean = pca_poses.mean(0)
    covariance = np.cov(pca_poses - hands_mean, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    eigenvectors = eigenvectors * np.sign(eigenvectors[np.argmax(np.abs(eigenvectors), 0), np.arange(45)])
    explained = np.cumsum(eigenvalues) / eigenvalues.sum()

    order = _fingertip_permutation(topology)
    inverse = np.argsort(order)
    arrays = {
        "v_template": v_template[order],
        "f": inverse[topology.faces],
        "weights": weights[order],
        "J_regressor": regressor[:, order],
        "kintree_table": np.stack([np.array(MANO_PARENTS), np.arange(16)]).astype(np.int64),
        "shapedirs": shapedirs[order],
        "posedirs": posedirs[order],
        "hands_components": eigenvectors.T.copy(),
        "hands_mean": hands_mean,
        "fingertip_vertex_ids": np.array(MANO_FINGERTIP_VERTEX_IDS, dtype=np.int64),
    }
    if not return_report:
        return arrays
    tip_ids = list(MANO_FINGERTIP_VERTEX_IDS)
    wrist_loop = inverse[topology.wrist]
    betas = np.random.default_rng(seed + 1).standard_normal((2000, 10))
    shaped = arrays["v_template"] + np.einsum("bk,vdk->bvd", betas, arrays["shapedirs"])
    lengths = hand_length(shaped, tip_ids, wrist_loop)
    report = {
        "num_vertices": len(v_template), "num_faces": len(arrays["f"]),
        "hand_length_mm": float(hand_length(arrays["v_template"], tip_ids, wrist_loop) * 1000),
        "wrist_to_middle_mcp_mm": float(np.linalg.norm(joints[4] - joints[0]) * 1000),
        "shape_explained": shape_stats["explained"].tolist(),
        "shape_explained_total": float(shape_stats["explained"].sum()),
        "hand_length_beta_mm": {"p2.5": float(np.percentile(lengths, 2.5) * 1000),
                                "p97.5": float(np.percentile(lengths, 97.5) * 1000),
                                "sd": float(lengths.std() * 1000)},
        "correctives": errors,
        "pose_pca_explained_6": float(explained[5]), "pose_pca_explained_15": float(explained[14]),
        "build_seconds": time.perf_counter() - start,
    }
    return arrays, report


def write_open_hand(directory=None, seed: int = 0, **kwargs) -> list[Path]:
    """Build the open hand and write ``MANO_RIGHT.pkl`` and ``MANO_LEFT.pkl`` (atomically).

    Args:
        directory: output folder (default: ``handlib/assets/mano``, where handlib looks for it).
        seed, kwargs: passed to ``build_open_hand``.

    Returns:
        [path of MANO_RIGHT.pkl, path of MANO_LEFT.pkl].
    """
    from handlib.mano.io import save_mano

    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent.parent / "assets" / "mano"
    right = build_open_hand(seed=seed, **kwargs)
    return [save_mano(right, directory / "MANO_RIGHT.pkl"), save_mano(mirror_model(right), directory / "MANO_LEFT.pkl")]
