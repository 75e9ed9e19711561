"""Synthetic hand samples: the hand model posed by the pose prior, rendered with randomised looks.

Every sample is the course's sample dict (``handlib.data.sample``): an RGB crop around a right
hand, its mask and depth, the 21 keypoints in 2D (pixels) and 3D (metres, camera frame), which of
them are visible, the crop's intrinsics K, and the MANO pose and shape that made it.

How one sample is made (``render_batch`` does it for many at once):

1. **Hand.** A pose from the prior (``handlib.mano.prior.sample_poses``, grasp mixture by default),
   a global rotation with the palm towards / away from the camera or anything
   (``sample_global_orientations``), a shape beta ~ N(0, 1) (clipped at 2.5 SD). The hand model
   (``ManoLayer``) gives vertices and the 21 joints.
2. **Camera.** The centre of the hand goes ``distance`` metres (0.3 to 0.7) in front of the camera,
   up to ~15 degrees off its axis. A square crop is cut around the 2D keypoints' box, ``margin``
   (1.25 to 1.6) times its side, its centre and size jittered. We never render the full image:
   with a focal length of 1 (normalised image coordinates) the crop box is
   (x0, y0, side), and ``K = handlib.render.crop_intrinsics(K_1, box, image_size)`` is the
   intrinsics of the crop. Rendering directly with this K gives the crop, with no resampling.
3. **Forearm** (``forearm``). A tapered tube of the wrist opening's elliptic shape continues the
   skin from the wrist, away from the fingers, bent by up to 20 degrees, 22 to 30 cm long so that
   it leaves the crop, sometimes in a sleeve (``forearm_rings``). It is part of the hand's mesh:
   one z-buffer, so the forearm hides the hand and the hand the forearm.
4. **Looks** (domain randomisation). Skin albedo from the 10 tones of the Monk Skin Tone scale
   (see ``SKIN_TONES``), with smooth per-vertex variation and lighter palms, and (``skin_detail``)
   blotches, nails, darker concave parts and creases drawn per pixel; Lambert shading with a key
   light and a fill or rim light of other colours (``lighting``), an ambient term and a faint
   specular sheen; backgrounds (``background``): photo-like cluttered rooms
   (``clutter_backgrounds``) or the v1 procedural textures (``procedural_backgrounds``: gradients,
   colour noise, stripes and checks, random shapes, some skin-coloured so that a mask is not just
   "the skin-coloured pixels"), rendered at half resolution (a defocused background); skin-coloured
   distractors behind the hand (``distractors``: a second hand from the same model, a face, an
   arm); occluders in front of or between the fingers; white balance, exposure, blur and sensor
   noise. ``appearance="held_out"`` swaps in looks that training never draws (``HELD_OUT``).
5. **Labels.** ``keypoints_2d = project(keypoints_3d, K)``; ``visibility`` (see ``VISIBILITY_TOLERANCE``;
   the forearm and a second hand can hide keypoints too); ``mask`` = hand pixels (not the forearm)
   not covered by anything; ``depth`` = the hand's depth there.

Determinism. Each sample's randomness comes only from (seed, split, index): a torch.Generator
seeded with ``sample_seed(seed, split, index)`` draws its camera, looks and noise, and its pose
and orientation are row ``index % POSE_BLOCK`` of one prior call for block ``index // POSE_BLOCK``
(the prior is much faster in batches; blocks are cached). So a sample is the same whether it is
rendered alone or in any batch, in any worker, in any order; the batch only makes it faster.

Knobs for the challenges of chapter 0: ``occlusion`` (0 none .. 1 heavy), ``image_size``,
``viewpoint`` ("any", "palm_towards", "palm_away"), ``pose_kind`` (a grasp of the prior or
"mixture"), ``hand_side`` ("right"; "left" or "both" mirror samples with ``mirror_sample``),
``two_hands`` (the other hand interacting with the labelled one: chapter 7's two-hand demo).
Knobs for the synthetic-to-real gap (engine version 2; each can be turned off, ``SynthConfig``):
``forearm``, ``sleeve``, ``skin_detail``, ``background``, ``distractors``, ``lighting``,
``appearance``. The v1 look: ``forearm=0, skin_detail=0, distractors=0, background="procedural",
lighting="single"`` (the same kind of pictures, not the same pixels: v2 draws other numbers).

Throughput. ``render_batch`` renders 16 to 64 samples at once (the rasterizer is fastest there).
``SyntheticHandDataset`` renders blocks of ``block_size`` consecutive indices and keeps the last
blocks, and implements ``__getitems__``: a ``DataLoader(dataset, batch_size=32, shuffle=True)``
hands each batch's indices to one ``render_batch`` call. Workers (``num_workers > 0``) each render
their own batches.

Example:
    >>> batch = render_batch(4, seed=0, image_size=64)            # doctest: +SKIP
    >>> batch["image"].shape, batch["keypoints_3d"].shape         # doctest: +SKIP
    (torch.Size([4, 3, 64, 64]), torch.Size([4, 21, 3]))
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from handlib.data.sample import SAMPLE_KEYS
from handlib.geometry import project_points
from handlib.render import (crop_intrinsics, make_intrinsics, pixels_in_image, rasterize, shade_covered,
                            vertex_normals)

ENGINE_VERSION = 2  # bump when the same (seed, split, index) would render differently: caches use it
SPLITS = {"train": 0, "val": 1, "test": 2}
VIEWPOINTS = {"any": "any", "palm_towards": "towards", "palm_away": "away"}
HAND_SIDES = ("right", "left", "both")
BACKGROUNDS = ("mixed", "clutter", "procedural", "black")
LIGHTINGS = ("multi", "single")
APPEARANCES = ("train", "held_out")
# What appearance="held_out" changes (poses, shapes, cameras, occluders and the knobs' probabilities
# stay those of "train"): a stand-in for real photos, whose looks the training set never showed.
HELD_OUT = {
    "background": "outdoor scenes (sky, horizon, grass and foliage, posts; outdoor_backgrounds), a family "
                  "'train' never draws, whatever the background knob (except 'black')",
    "skin tint": "redness in [-0.12, -0.06] or [0.08, 0.14] (train: [-0.04, 0.06]) along (1, -0.3, -0.6)",
    "key light": "hue 0.2..0.9 (greens, blues, purples), saturation 0.25..0.4 (train: hue -0.05..0.12, "
                 "saturation 0..0.25)",
    "fill light": "warm, hue -0.1..0.12, saturation 0.3..0.5 (train: cool, hue 0.5..0.7, saturation 0..0.3)",
    "sleeve": "hue 0.05..0.45: yellow, green, cyan (train: 0.45..1.05: blue, purple, red)",
    "camera": "white balance +-12% (train +-6%), noise 0.01..0.06 (train 0..0.03), motion blur of 2 to 7 px "
              "(per 128 px) in half of the samples and faded colours (saturation 0..0.6) in 40% (train: never)",
}
FOREARM_LENGTH = (0.22, 0.30)  # metres from the wrist opening to the far end of the forearm
MIXED_CLUTTER = 0.75  # with background="mixed", the fraction of samples with a cluttered scene
POSE_BLOCK = 64  # poses come from the prior in blocks of this many consecutive indices
DEFAULT_TEST_SEED = 0  # the seed of the fixed test set every method is evaluated on
CHUNK_SIZE = 64  # samples per cache file

# A keypoint counts as visible when nothing lies more than its tolerance in front of it along its
# pixel's ray (metres, course order). Fingertip keypoints are skin vertices at the end of the finger:
# seen head-on the rendered depth is their own, seen from the back of the finger the nail side lies
# up to a fingertip's thickness (~1 cm) in front. The finger joints are centres *inside* the finger:
# the skin over a visible joint lies half a finger's thickness (6 to 12 mm, measured on the open hand)
# in front of it. 1.5 cm accepts that, while another finger crossing in front (its own thickness,
# 12 to 20 mm, plus the gap) hides the joint. The knuckles (MCP) sit deeper in the palm (10 to 14 mm):
# 2 cm. The wrist joint is in the middle of the wrist (18 to 22 mm under the skin from either side)
# and the thumb's CMC deep in the ball of the thumb (up to 29 mm): 3 and 3.5 cm. It is a compromise:
# a finger resting right on top of another can still count as "visible" for a few millimetres.
VISIBILITY_TOLERANCE = (0.03,  # wrist
                        0.035, 0.02, 0.015, 0.015,  # thumb CMC, MCP, IP, tip
                        *(0.02, 0.015, 0.015, 0.015) * 4)  # index, middle, ring, pinky: MCP, PIP, DIP, tip

# Skin albedos: the 10 swatches of the Monk Skin Tone (MST) scale, lightest to darkest (Ellis Monk;
# published by Google in 2022 under CC BY 4.0, https://skintone.google). They span the range of the
# Fitzpatrick types I-VI (MST 1-3 ~ types I-II, 4-6 ~ III-IV, 7-10 ~ V-VI) with more steps in the
# darker half, where Fitzpatrick is coarse. A sample picks a point between two neighbouring swatches.
SKIN_TONES = ("#f6ede4", "#f3e7db", "#f7ead0", "#eadaba", "#d7bd96", "#a07e56", "#825c43", "#604134",
              "#3a312a", "#292420")

_UNIFORMS_PER_SAMPLE = 1536  # uniforms drawn per sample, in sections (columns) per stage:
_SECTIONS = {"hand": (0, 32), "camera": (32, 64), "looks": (64, 128), "background": (128, 320),
             "occluders": (320, 416), "finish": (416, 480), "side": (480, 512), "forearm": (512, 576),
             "skin": (576, 704), "lights": (704, 768), "clutter": (768, 1280), "distractors": (1280, 1408),
             "choices": (1408, 1424)}
_BACKGROUND_SHAPES = 6
_GAMMA_LEVELS = 1024
_MAX_OCCLUDERS = 3
_NOISE_GRIDS = ((3, 4), (1, 8), (1, 16))  # (channels, side) of the background's noise octaves
_CLUTTER_GRIDS = ((3, 4), (3, 8), (1, 16), (1, 32))  # octaves of the cluttered scenes' 1/f noise
_CLUTTER_SHAPES = 14


@dataclass(frozen=True)
class SynthConfig:
    """The knobs of the synthetic data. Every field has a default; ``validate`` checks them all.

    Attributes:
        image_size: side of the square crop, pixels (16 to 1024).
        occlusion: 0..1, the probability that a sample has distractor occluders in front of the
            hand, and how many (1 to 3) and how large they are.
        viewpoint: "any", "palm_towards" (the palm faces the camera) or "palm_away".
        pose_kind: the prior's grasp type ("mixture" draws one per sample; see
            ``handlib.mano.prior.GRASPS``).
        hand_side: "right", "left" (every sample mirrored) or "both" (half of them).
        distance: (near, far) metres from the camera to the centre of the hand.
        margin: (low, high) side of the crop / side of the 2D keypoints' bounding box.
        jitter: shift of the crop's centre, fraction of its side (uniform in +-jitter).
        background: "clutter" (photo-like scenes: a room, furniture, edges and textures at all
            scales, out-of-focus blobs; ``clutter_backgrounds``), "procedural" (the v1 textures
            and shapes), "mixed" (each sample: clutter with probability ``MIXED_CLUTTER``, else
            procedural) or "black".
        forearm: 0..1, the probability that a sample has a forearm continuing out of the wrist
            (``forearm_rings``); without one the wrist is capped.
        sleeve: 0..1, the probability that a forearm wears a sleeve (a cloth tube a few cm up).
        skin_detail: 0..1, the strength of the skin's fine detail: creases at the finger joints,
            nails, blotchy tone, darkening in concave parts (0: the v1 smooth skin).
        distractors: 0..1, the probability of a skin-coloured distractor behind the hand: a
            second (mirrored, partial) hand rendered from the same model, a face or an arm.
        two_hands: 0..1, the probability that the other hand (a mirrored one: a left hand beside
            a right) interacts with the hand: it overlaps the crop's centre, its centre a few
            centimetres in front of or behind the hand's, and hides keypoints where it is nearer.
            It takes the place of a distractor in that sample. 0 (the default) renders exactly as
            before the knob existed.
        lighting: "multi" (a key light, a fill light of another colour, sometimes a rim light
            from behind; a wide exposure range) or "single" (the v1 single light and exposure).
        appearance: "train" or "held_out": held-out appearance families that "train" never draws
            (``HELD_OUT``), for a test set that stands in for real photos; poses and cameras are
            drawn from the same distribution.

    The v1 look: ``forearm=0, skin_detail=0, distractors=0, background="procedural", lighting="single"``.
    """

    image_size: int = 128
    occlusion: float = 0.3
    viewpoint: str = "any"
    pose_kind: str = "mixture"
    hand_side: str = "right"
    distance: tuple = (0.3, 0.7)
    margin: tuple = (1.25, 1.6)
    jitter: float = 0.08
    background: str = "mixed"
    forearm: float = 0.9
    sleeve: float = 0.4
    skin_detail: float = 1.0
    distractors: float = 0.3
    lighting: str = "multi"
    appearance: str = "train"
    two_hands: float = 0.0

    def validate(self) -> "SynthConfig":
        """Raise ValueError naming the first bad knob; return self."""
        from handlib.mano.prior import KINDS

        if not isinstance(self.image_size, (int, np.integer)) or not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size: expected an int number of pixels in [16, 1024], got {self.image_size!r}")
        if not isinstance(self.occlusion, (int, float)) or not 0.0 <= self.occlusion <= 1.0:
            raise ValueError(f"occlusion: expected a number in [0, 1] (0: none, 1: heavy), got {self.occlusion!r}")
        if self.viewpoint not in VIEWPOINTS:
            raise ValueError(f"viewpoint: expected one of {tuple(VIEWPOINTS)}, got {self.viewpoint!r}")
        if self.pose_kind not in KINDS:
            raise ValueError(f"pose_kind: expected one of {KINDS}, got {self.pose_kind!r}")
        if self.hand_side not in HAND_SIDES:
            raise ValueError(f"hand_side: expected one of {HAND_SIDES}, got {self.hand_side!r}")
        for name, low_bound in (("distance", 0.05), ("margin", 1.0)):
            value = getattr(self, name)
            if len(value) != 2 or not low_bound <= value[0] <= value[1]:
                raise ValueError(f"{name}: expected (low, high) with {low_bound} <= low <= high, got {value!r}")
        if not isinstance(self.jitter, (int, float)) or not 0.0 <= self.jitter <= 0.5:
            raise ValueError(f"jitter: expected a fraction in [0, 0.5], got {self.jitter!r}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background: expected one of {BACKGROUNDS}, got {self.background!r}")
        for name in ("forearm", "sleeve", "skin_detail", "distractors", "two_hands"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:  # True / False: 1 / 0
                raise ValueError(f"{name}: expected a number in [0, 1] (a probability or strength; 0 turns it off), "
                                 f"got {value!r}")
        if self.lighting not in LIGHTINGS:
            raise ValueError(f"lighting: expected one of {LIGHTINGS}, got {self.lighting!r}")
        if self.appearance not in APPEARANCES:
            raise ValueError(f"appearance: expected one of {APPEARANCES} (held_out: the proxy test set's looks), "
                             f"got {self.appearance!r}")
        return self

    def to_json(self) -> str:
        """The knobs as canonical JSON (for cache fingerprints). A knob added after ENGINE_VERSION 2
        is left out at its default (which renders as before it existed), so the caches stay valid."""
        knobs = {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}
        if knobs["two_hands"] == 0:
            del knobs["two_hands"]
        return json.dumps(knobs, sort_keys=True)


def make_config(config: SynthConfig | None = None, **knobs) -> SynthConfig:
    """A validated ``SynthConfig``: ``config`` (or the defaults) with ``knobs`` replaced.

    Raises:
        ValueError: for an unknown knob or a bad value.
    """
    base = asdict(config or SynthConfig())
    unknown = set(knobs) - set(base)
    if unknown:
        raise ValueError(f"unknown synthetic-data knob(s) {sorted(unknown)}; expected some of {sorted(base)}")
    base.update(knobs)
    for key in ("distance", "margin"):
        try:
            base[key] = tuple(float(v) for v in base[key])
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a pair of numbers (low, high), got {base[key]!r}") from None
    return SynthConfig(**base).validate()


def sample_seed(seed: int, split: str, index: int) -> int:
    """The seed of one sample: a hash of (seed, split, index), the same on every machine and worker.

    Unlike ``seed * big + index``, a hash gives unrelated streams for neighbouring seeds and indices.

    Returns:
        An int in [0, 2**63).
    """
    key = f"handlib.synth/{ENGINE_VERSION}/{int(seed)}/{split}/{int(index)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def _check_indices(indices) -> list[int]:
    if isinstance(indices, (int, np.integer)):
        if indices < 1:
            raise ValueError(f"indices: expected a positive number of samples or a list of indices, got {indices}")
        return list(range(int(indices)))
    indices = [int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices)]
    if not indices or min(indices) < 0:
        raise ValueError(f"indices: expected a non-empty list of non-negative sample indices, got {indices[:8]}")
    return indices


def _check_seed_split(seed, split):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {tuple(SPLITS)}, got {split!r}")


# -------------------------------------------------------------------------------------------------
# The hand model, its prior, and the poses


@dataclass
class _Hand:
    layer: torch.nn.Module  # ManoLayer in float64 (batch-size independent to the last bit)
    faces: torch.Tensor  # (F', 3) faces with the wrist opening capped
    rest_vertices: torch.Tensor  # (V, 3) template, for the smooth skin-colour variation
    palm_side: torch.Tensor  # (V,) in [0, 1], 1 on the palm's skin
    prior: object
    fingerprint: str
    wrist_loop: torch.Tensor  # (16,) the vertices around the wrist opening, in the order of the cap's fan
    scene_faces: torch.Tensor  # (F + forearm faces, 3): the open hand's faces, then the forearm's
    hand_face_count: int  # F: faces below this index are the hand's
    creases: torch.Tensor  # (V', 3) per scene vertex: signed distances (m) to two families of creases, depth
    nails: torch.Tensor  # (V,) in [0, 1], 1 on a fingernail


# The forearm (``forearm_rings``): rings of the wrist opening's shape at these distances along the
# forearm, as fractions of its length (ring 0 is the opening itself), then the sleeve's rings: two at
# its start (the skin's profile, then the cloth's: the cuff) and three to the far end, then the
# centre of the far end (a fan closes the tube). The rings of a forearm without a sleeve past its
# end, and every ring of a sample without a forearm, collapse onto one point (zero-area triangles,
# which the rasterizer drops): so one fixed topology serves every sample.
_FOREARM_RINGS = (0.06, 0.14, 0.24, 0.36, 0.52, 0.72, 1.0)
_SLEEVE_RINGS = (0.0, 0.0, 1 / 3, 2 / 3, 1.0)  # along the sleeve, from its start to the far end
# Creases (``_crease_coordinates``): (joint, child, fraction along the bone, family) in the course's
# keypoint order; neighbouring creases of a digit alternate between two families, so that a
# vertex's nearest crease of a family is never the wrong one across a triangle.
_CREASES = (*((mcp, mcp + 1, 0.4, 0) for mcp in (5, 9, 13, 17)), *((mcp + 1, mcp + 2, 0.0, 1) for mcp in (5, 9, 13, 17)),
            *((mcp + 2, mcp + 3, 0.0, 0) for mcp in (5, 9, 13, 17)), (2, 3, 0.0, 0), (3, 4, 0.0, 1))


def _forearm_faces(loop: np.ndarray, first_vertex: int) -> np.ndarray:
    """Faces of the forearm tube: ring 0 is ``loop``, the next rings and the end's centre are new
    vertices from ``first_vertex`` on. Wound like the cap's fan (outwards)."""
    count = len(loop)
    rings = [np.asarray(loop)] + [first_vertex + count * k + np.arange(count)
                                  for k in range(len(_FOREARM_RINGS) + len(_SLEEVE_RINGS))]
    faces = []
    for a, b in zip(rings[:-1], rings[1:]):
        a_next, b_next = np.roll(a, -1), np.roll(b, -1)
        faces += [np.stack([a, a_next, b_next], 1), np.stack([a, b_next, b], 1)]
    centre = rings[-1][-1] + 1
    faces.append(np.stack([np.full(count, centre), rings[-1], np.roll(rings[-1], -1)], 1))
    return np.concatenate(faces)


def _crease_coordinates(rest: np.ndarray, rest_joints: np.ndarray, weights: np.ndarray, palm_side: np.ndarray):
    """(V, 3): per vertex, the signed distance (metres, along the bone) to the nearest crease of
    family 0 and of family 1 on its own digit (1 where there is none), and how deep its creases
    are (1 in the middle of the palmar side, fading towards the digit's sides, 0.1 on the back)."""
    digit_of_joint = {}  # MANO joint -> digit number in course order (thumb 0 .. pinky 4)
    for digit, mano_joints in enumerate(((13, 14, 15), (1, 2, 3), (4, 5, 6), (10, 11, 12), (7, 8, 9))):
        for joint in mano_joints:
            digit_of_joint[joint] = digit
    dominant = weights.argmax(1)
    digit = np.array([digit_of_joint.get(int(j), -1) for j in dominant])  # (V,), -1 on the palm
    coordinates = np.ones((len(rest), 2))
    for joint, child, fraction, family in _CREASES:
        axis = rest_joints[child] - rest_joints[joint]
        point = rest_joints[joint] + fraction * axis
        axis = axis / np.linalg.norm(axis)
        on_digit = digit == (joint - 1) // 4
        signed = (rest - point) @ axis
        closer = on_digit & (np.abs(signed) < np.abs(coordinates[:, family]))
        coordinates[closer, family] = signed[closer]
    depth = 0.1 + 0.9 * palm_side
    return np.concatenate([coordinates, depth[:, None]], 1)


def _nail_weights(rest: np.ndarray, normals: np.ndarray, rest_joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(V,) in [0, 1]: the fingernails, on the back of each digit's last 2 to 13 mm.

    The back of a digit is the mean hand's dorsal direction of that digit (``hand_skeleton``: the
    thumb's is turned by its pronation)."""
    from handlib.mano.openhand import hand_skeleton

    bones = hand_skeleton()
    nails = np.zeros(len(rest))
    distal = {0: 15, 1: 3, 2: 6, 3: 12, 4: 9}  # digit (course order) -> MANO joint of its last phalanx
    names = ("thumb", "index", "middle", "ring", "pinky")
    dominant = weights.argmax(1)
    for digit, joint in distal.items():
        tip = rest_joints[4 + 4 * digit]
        axis = tip - rest_joints[3 + 4 * digit]
        axis = axis / np.linalg.norm(axis)
        dorsal = bones[names[digit]].dorsal - (bones[names[digit]].dorsal @ axis) * axis
        dorsal = dorsal / np.linalg.norm(dorsal)
        back = (tip - rest) @ axis  # (V,) metres back from the tip
        along = np.clip(np.minimum(back - 0.001, 0.013 - back) / 0.003, 0, 1)
        facing = np.clip((normals @ dorsal - 0.3) / 0.3, 0, 1)
        nails = np.where(dominant == joint, np.maximum(nails, along * facing), nails)
    return nails


@lru_cache(maxsize=4)
def _load_hand(model_path: str, mtime: float) -> _Hand:
    from handlib.mano import ManoLayer, load_mano
    from handlib.mano.openhand import closed_faces
    from handlib.mano.prior import HandPosePrior

    model = load_mano(model_path)
    layer = ManoLayer(model).double()
    prior = HandPosePrior.from_model(model)
    rest = torch.as_tensor(np.asarray(model.v_template), dtype=torch.float32)
    faces = torch.as_tensor(closed_faces(model))  # the wrist capped, so back faces can be culled
    normals = vertex_normals(rest[None], faces)[0]  # (V, 3)
    palm_side = ((normals @ prior.palm_normal.float()).clamp(0, 1) ** 2)  # (V,) 1 on the palm
    digest = hashlib.blake2b(np.ascontiguousarray(model.v_template, dtype=np.float32).tobytes()
                             + np.ascontiguousarray(model.faces, dtype=np.int64).tobytes(), digest_size=6)
    open_faces = np.asarray(model.faces, dtype=np.int64)
    loop = np.asarray(faces[len(open_faces):, 0][:1].tolist() + faces[len(open_faces):, 1].tolist()
                      + faces[len(open_faces):, 2][-1:].tolist())  # the cap's fan, in order
    num_vertices = len(rest)
    scene_faces = np.concatenate([open_faces, _forearm_faces(loop, num_vertices)])
    forearm_vertices = int(scene_faces.max()) + 1 - num_vertices
    with torch.no_grad():
        rest_joints = layer(hand_pose=torch.zeros(1, 45, dtype=torch.float64),
                            betas=torch.zeros(1, 10, dtype=torch.float64)).joints[0].numpy()
    weights = np.asarray(model.weights)
    creases = _crease_coordinates(rest.double().numpy(), rest_joints, weights, palm_side.double().numpy())
    creases = np.concatenate([creases, np.tile([[1.0, 1.0, 0.0]], (forearm_vertices, 1))])
    nails = _nail_weights(rest.double().numpy(), normals.double().numpy(), rest_joints, weights)
    return _Hand(layer, faces, rest, palm_side, prior, digest.hexdigest(), torch.as_tensor(loop),
                 torch.as_tensor(scene_faces), len(open_faces), torch.as_tensor(creases, dtype=torch.float32),
                 torch.as_tensor(nails, dtype=torch.float32))


def _hand() -> _Hand:
    from handlib.mano import default_model_path

    path = default_model_path()
    return _load_hand(str(path), path.stat().st_mtime)


def hand_faces() -> torch.Tensor:
    """(F, 3) long: the faces the synthetic data renders (the hand model's, wrist capped)."""
    return _hand().faces


@lru_cache(maxsize=8192)
def _pose_block(fingerprint: str, seed: int, split: str, block: int, kind: str, palm: str):
    """(POSE_BLOCK, 45) finger poses and (POSE_BLOCK, 3) global orientations of one block."""
    hand = _hand()
    generator = torch.Generator().manual_seed(sample_seed(seed, f"{split}/poses/{kind}/{palm}", block))
    poses = hand.prior.sample_poses(POSE_BLOCK, generator, kind)
    orientations = hand.prior.sample_global_orientations(POSE_BLOCK, generator, palm)
    return poses, orientations


def _poses(indices, seed, split, config) -> tuple[torch.Tensor, torch.Tensor]:
    hand, palm = _hand(), VIEWPOINTS[config.viewpoint]
    rows = [_pose_block(hand.fingerprint, seed, split, i // POSE_BLOCK, config.pose_kind, palm) for i in indices]
    poses = torch.stack([block[0][i % POSE_BLOCK] for block, i in zip(rows, indices)])  # (B, 45)
    orientations = torch.stack([block[1][i % POSE_BLOCK] for block, i in zip(rows, indices)])  # (B, 3)
    return poses, orientations


# -------------------------------------------------------------------------------------------------
# Per-sample random numbers


class _Draws:
    """Hands out columns of a (B, N) table of uniforms, one row per sample, in a fixed order.

    The draws are float64. Vectorised transcendental functions (sin, exp, pow, erfinv, ...) may
    round the last bit differently for the elements of a SIMD block and those of the scalar tail,
    and where the tail falls depends on the batch size; in float64, such a difference vanishes when
    the result is cast to float32, so a sample is bit-identical in any batch.
    """

    def __init__(self, table: torch.Tensor):
        self.table, self.used, self.end, self.section = table.double(), 0, 0, ""

    def seek(self, section: str) -> "_Draws":
        """Move to a section's own columns, so that one stage's draws never shift another's
        (a black background, say, leaves the hand and the occluders as they were)."""
        self.section = section
        self.used, self.end = _SECTIONS[section]
        return self

    def uniform(self, *shape, low=0.0, high=1.0) -> torch.Tensor:
        """(B, *shape) uniforms in [low, high); shape () means (1,)."""
        shape = shape or (1,)
        count = math.prod(shape)
        if self.used + count > self.end:
            raise RuntimeError(f"synth: section {self.section!r} ran out of per-sample uniforms; enlarge it in _SECTIONS")
        out = self.table[:, self.used:self.used + count].reshape(-1, *shape)
        self.used += count
        return low + (high - low) * out

    def normal(self, *shape) -> torch.Tensor:
        u = self.uniform(*shape).clamp(1e-6, 1 - 1e-6)
        return math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)

    def rows(self, index: torch.Tensor) -> "_Draws":
        """The same columns for a subset of the samples (rows ``index``), at the same position."""
        subset = _Draws(self.table[index])
        subset.used, subset.end, subset.section = self.used, self.end, self.section
        return subset


def _random_numbers(indices, seed, split, image_size):
    """Per sample: the uniform table, the procedural background's noise grids, the pixel noise,
    and the cluttered and outdoor scenes' noise grids."""
    grid_count = sum(c * s * s for c, s in _NOISE_GRIDS)
    scene_count = sum(c * s * s for c, s in _CLUTTER_GRIDS)
    uniforms, grids, pixels, scenes = [], [], [], []
    for index in indices:
        generator = torch.Generator().manual_seed(sample_seed(seed, split, index))
        uniforms.append(torch.rand(_UNIFORMS_PER_SAMPLE, generator=generator))
        grids.append(torch.randn(grid_count, generator=generator))
        pixels.append(torch.randn(3, image_size, image_size, generator=generator))
        scenes.append(torch.randn(scene_count, generator=generator))
    return _Draws(torch.stack(uniforms)), torch.stack(grids), torch.stack(pixels), torch.stack(scenes)


def _hex_to_rgb(colors) -> torch.Tensor:
    return torch.tensor([[int(c[i:i + 2], 16) / 255.0 for i in (1, 3, 5)] for c in colors])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV (..., 3) in [0, 1] -> RGB (..., 3) in [0, 1]."""
    h, s, v = hsv.unbind(-1)
    k = torch.stack([(5 + 6 * h) % 6, (3 + 6 * h) % 6, (1 + 6 * h) % 6], -1)  # (..., 3)
    return v[..., None] - (v * s)[..., None] * torch.minimum(k, 4 - k).clamp(0, 1)


def skin_colors(u: torch.Tensor) -> torch.Tensor:
    """Skin albedos along the Monk Skin Tone scale: u in [0, 1] (lightest .. darkest) -> (..., 3) RGB."""
    tones = _hex_to_rgb(SKIN_TONES).to(u.dtype)  # (10, 3)
    position = u.clamp(0, 1) * (len(tones) - 1)
    low = position.floor().long().clamp(max=len(tones) - 2)
    t = (position - low)[..., None]
    return tones[low] * (1 - t) + tones[low + 1] * t


def _random_colors(draws: _Draws, count: int, skin_fraction: float) -> torch.Tensor:
    """(B, count, 3) colours: natural HSV colours, some replaced by skin tones."""
    hsv = torch.stack([draws.uniform(count), draws.uniform(count) ** 1.5, draws.uniform(count, low=0.15, high=0.95)], -1)
    skin = skin_colors(draws.uniform(count)) * draws.uniform(count, 1, low=0.7, high=1.1)
    return torch.where(draws.uniform(count, 1) < skin_fraction, skin.clamp(0, 1), hsv_to_rgb(hsv)).float()


# -------------------------------------------------------------------------------------------------
# Pictures: backgrounds, occluders, the hand's shading


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [0, 1], shapes (1, 1, size, 1) and (1, 1, 1, size) (y, x)."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    return centres.view(1, 1, size, 1), centres.view(1, 1, 1, size)


def _shapes_alpha(y, x, centre, axes, angle, is_box, softness):
    """Coverage (B, K, H, W) of K ellipses or rotated boxes with soft edges.

    centre (B, K, 2) as (x, y), axes (B, K, 2) half sizes, angle (B, K), all in image units;
    softness: edge width in image units.
    """
    centre, axes = centre.float(), axes.float()
    dx, dy = x - centre[..., 0, None, None], y - centre[..., 1, None, None]
    cos, sin = torch.cos(angle).float()[..., None, None], torch.sin(angle).float()[..., None, None]
    a = (dx * cos + dy * sin) / axes[..., 0, None, None]
    b = (-dx * sin + dy * cos) / axes[..., 1, None, None]
    ellipse = (a * a + b * b).sqrt() - 1.0
    box = torch.maximum(a.abs(), b.abs()) - 1.0
    distance = torch.where(is_box[..., None, None], box, ellipse) * axes.amin(-1)[..., None, None]
    return (0.5 - distance / softness).clamp(0, 1)


def procedural_backgrounds(draws: _Draws, grids: torch.Tensor, image_size: int) -> torch.Tensor:
    """Random backgrounds (B, 3, S, S) in [0, 1], made at half resolution and upsampled (defocus).

    A gradient between two colours, plus smooth colour noise, plus a few octaves of luminance noise,
    plus stripes or checks, under up to ``_BACKGROUND_SHAPES`` random shapes (a quarter of them
    skin-coloured). Each ingredient's strength is random, so some backgrounds are plain and some busy.
    """
    batch, size = grids.shape[0], max(image_size // 2, 8)
    y, x = _grid(size)
    colors = _random_colors(draws, 2, skin_fraction=0.1)  # (B, 2, 3)
    angle = draws.uniform(1, 1, 1, high=2 * math.pi)
    t = ((x - 0.5) * torch.cos(angle).float() + (y - 0.5) * torch.sin(angle).float()).add(0.5).clamp(0, 1)  # (B, 1, S, S)
    image = colors[:, 0, :, None, None] * (1 - t) + colors[:, 1, :, None, None] * t  # (B, 3, S, S)

    octaves, start = [], 0
    for channels, side in _NOISE_GRIDS:
        grid = grids[:, start:start + channels * side * side].view(batch, channels, side, side)
        start += channels * side * side
        octaves.append(F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False))
    strength = (draws.uniform(3) ** 2 * torch.tensor([0.12, 0.2, 0.1], dtype=torch.float64)).float()  # (B, 3)
    for octave, amount in zip(octaves, strength.unbind(1)):  # colour blotches, then luminance detail
        image = image + amount.view(-1, 1, 1, 1) * octave

    frequency = draws.uniform(1, 1, 1, low=3.0, high=24.0)
    phase = draws.uniform(1, 1, 1, high=2 * math.pi)
    direction = draws.uniform(1, 1, 1, high=math.pi)
    x64, y64 = x.double(), y.double()  # per-pixel sines in float64 (see _Draws)
    along = x64 * torch.cos(direction) + y64 * torch.sin(direction)
    across = -x64 * torch.sin(direction) + y64 * torch.cos(direction)
    stripes = torch.sin(2 * math.pi * frequency * along + phase)
    checks = torch.tanh(3 * stripes * torch.sin(2 * math.pi * frequency * across + phase))
    pattern = torch.where(draws.uniform(1, 1, 1) < 0.5, stripes, checks).float()  # (B, 1, S, S)
    pattern_color = _random_colors(draws, 1, skin_fraction=0.0)[:, 0, :, None, None] - image.mean((2, 3), keepdim=True)
    pattern_amount = torch.where(draws.uniform(1, 1, 1) < 0.35, draws.uniform(1, 1, 1, high=0.4), 0.0).float()
    image = image + pattern_amount * 0.5 * (pattern + 1) * pattern_color

    k = _BACKGROUND_SHAPES
    busy = draws.uniform(1)  # (B, 1) how cluttered
    active = draws.uniform(k) < busy  # (B, K)
    centre = draws.uniform(k, 2, low=-0.1, high=1.1)
    major = draws.uniform(k, low=0.04, high=0.3)
    axes = torch.stack([major, major * draws.uniform(k, low=0.2, high=1.0)], -1)  # (B, K, 2)
    angle, is_box = draws.uniform(k, high=math.pi), draws.uniform(k) < 0.4
    shape_colors = _random_colors(draws, k, skin_fraction=0.25)  # (B, K, 3)
    tilt = (0.25 * torch.cos(draws.uniform(k, high=6.3))).float()  # brightness gradient across each shape
    for j in range(k):  # paint shape j on the images that have it (only those: it saves time)
        rows = active[:, j].nonzero().flatten()
        alpha = _shapes_alpha(y, x, centre[rows, j, None], axes[rows, j, None], angle[rows, j, None],
                              is_box[rows, j, None], 1.5 / size)  # (M, 1, S, S)
        shading = 1 + tilt[rows, j, None, None, None] * (x - centre[rows, j, 0, None, None, None].float())
        fill = shape_colors[rows, j, :, None, None] * shading
        image[rows] = image[rows] * (1 - alpha) + fill * alpha
    image = F.interpolate(image, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return image.clamp(0, 1)


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable 5-tap Gaussian blur with a sigma (B,) per image, pixels (elementwise: batch independent)."""
    taps = torch.arange(-2, 3, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma.double().clamp_min(1e-3)[:, None]) ** 2)
    weights = (weights / weights.sum(1, keepdim=True)).float()[:, :, None, None, None]  # (B, 5, 1, 1, 1)
    for dim in (2, 3):
        padded = F.pad(images, (2, 2, 0, 0) if dim == 3 else (0, 0, 2, 2), mode="replicate")
        images = sum(weights[:, i] * padded.narrow(dim, i, images.shape[dim]) for i in range(5))
    return images


# -------------------------------------------------------------------------------------------------
# The forearm


def _rotate_about(vectors: torch.Tensor, axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: rotate (B, ..., 3) vectors about unit axes (B, 3) by angles (B,), radians."""
    shape = (-1,) + (1,) * (vectors.ndim - 2)
    k, cos, sin = axis.view(*shape, 3), torch.cos(angle).view(*shape, 1), torch.sin(angle).view(*shape, 1)
    return vectors * cos + torch.cross(k.expand_as(vectors), vectors, dim=-1) * sin + k * (k * vectors).sum(-1, keepdim=True) * (1 - cos)


def forearm_rings(loop: torch.Tensor, direction: torch.Tensor, dorsal: torch.Tensor, bend: torch.Tensor,
                  length: torch.Tensor, widen: torch.Tensor, sleeve_start: torch.Tensor,
                  sleeve_scale: torch.Tensor) -> torch.Tensor:
    """The forearm's vertices: rings of the wrist opening's shape along a tapered, bent tube.

    Ring 0 is the wrist opening itself (the hand's vertices), so the skin continues without a seam.
    The other rings (``_FOREARM_RINGS``, fractions of the length) keep the opening's elliptic
    cross-section (wider than thick, like a wrist), widening towards the elbow: its width by
    ``1 + widen[:, 0] s`` and its thickness by ``1 + widen[:, 1] s``, s a smoothstep from 0 at the
    wrist to 1 at the far end. The wrist bends: the first ring turns by half of ``bend``, the rest by
    all of it (about the wrist's radial axis, flexion, then its dorsal axis, deviation). The sleeve's
    rings (``_SLEEVE_RINGS``) start at ``sleeve_start``, ``sleeve_scale`` times wider (a cuff); skin
    rings past that point collapse onto it, and with ``sleeve_start >= length`` there is no sleeve.
    A ``length`` of 0 collapses every ring onto the opening's centre: a flat cap over the wrist.

    Args:
        loop: (B, R, 3) the posed wrist opening, in the cap's order, metres.
        direction: (B, 3) unit, from the hand into the forearm (middle-finger MCP to wrist).
        dorsal: (B, 3) unit, out of the back of the wrist (orthogonal to ``direction``).
        bend: (B, 2) radians, flexion and deviation of the forearm from ``direction``.
        length, sleeve_start, sleeve_scale: (B,) metres, metres, factor (>= 1).
        widen: (B, 2) growth of the width and the thickness at the far end (fractions).

    Returns:
        (B, (len(_FOREARM_RINGS) + len(_SLEEVE_RINGS)) R + 1, 3): the new rings, then the far end's
        centre, in the order of the faces of ``_forearm_faces``.
    """
    centre = loop.mean(1)  # (B, 3)
    radial = torch.cross(direction, dorsal, dim=-1)  # (B, 3) towards the thumb
    offset = loop - centre[:, None]  # (B, R, 3)
    across = (offset * radial[:, None]).sum(-1)  # (B, R) along the width
    up = (offset * dorsal[:, None]).sum(-1)  # (B, R) along the thickness
    present = (length > 0).to(loop.dtype)[:, None, None]  # (B, 1, 1)

    def frame(fraction):  # the cross-section's axes after `fraction` of the bend
        axes = torch.stack([direction, radial, dorsal], 1)  # (B, 3, 3)
        axes = _rotate_about(axes, radial, bend[:, 0] * fraction)
        return _rotate_about(axes, axes[:, 2], bend[:, 1] * fraction).unbind(1)

    half, full = frame(0.5), frame(1.0)
    first = _FOREARM_RINGS[0] * length  # (B,) where the wrist has bent halfway
    end = torch.minimum(sleeve_start, length)  # (B,) the skin ends here

    def ring(t, axes, scale):  # (B,) distance, frame, (B,) extra scale -> (B, R, 3)
        along, side, back = axes
        point = centre + torch.minimum(t, first)[:, None] * half[0] + (t - first).clamp_min(0)[:, None] * along
        profile = (t / FOREARM_LENGTH[1]).clamp(0, 1)
        profile = profile * profile * (3 - 2 * profile)  # smoothstep
        width = ((1 + widen[:, 0] * profile) * scale)[:, None, None]
        thickness = ((1 + widen[:, 1] * profile) * scale)[:, None, None]
        return point[:, None] + present * (across[..., None] * width * side[:, None] + up[..., None] * thickness * back[:, None])

    ones = torch.ones_like(length)
    rings = [ring(torch.minimum(fraction * length, end), half if k == 0 else full, ones)
             for k, fraction in enumerate(_FOREARM_RINGS)]
    has_sleeve = sleeve_start < length
    cuff = torch.where(has_sleeve, sleeve_scale, ones)
    rings += [ring(end + fraction * (length - end), full, ones if k == 0 else cuff) for k, fraction in enumerate(_SLEEVE_RINGS)]
    far = centre + first[:, None] * half[0] + (length - first)[:, None] * full[0]  # (B, 3)
    return torch.cat([*rings, far[:, None]], 1)


def _forearm_albedo(skin_tone: torch.Tensor, cloth: torch.Tensor, has_sleeve: torch.Tensor, dorsal_side: torch.Tensor):
    """(B, V_forearm, 3) albedo of the forearm's new vertices: skin (lighter on the inner side) on
    the skin rings, cloth on the sleeve's rings and the far end (skin there without a sleeve).

    skin_tone, cloth: (B, 3). has_sleeve: (B,) bool. dorsal_side: (B, R) in [-1, 1] per ring vertex."""
    count = dorsal_side.shape[1]
    inner = (torch.tensor([0.93, 0.80, 0.72], dtype=skin_tone.dtype) - skin_tone).clamp(min=0)  # towards a light skin
    skin = skin_tone[:, None] + 0.15 * inner[:, None] * (-dorsal_side).clamp(0, 1)[..., None]  # (B, R, 3)
    sleeve = torch.where(has_sleeve[:, None, None], cloth[:, None], skin)  # (B, R, 3)
    rings = [skin] * len(_FOREARM_RINGS) + [sleeve] * len(_SLEEVE_RINGS)
    return torch.cat([*rings, sleeve[:, :1]], 1).reshape(len(skin_tone), len(rings) * count + 1, 3)


def _ambient_occlusion(vertices: torch.Tensor, normals: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
    """(B, V) in [0, 1]: how much of a vertex's outward view the hand's bones fill, a cheap
    ambient occlusion that darkens the concave parts (between fingers, a palm under curled fingers).

    Each bone is a capsule of radius r = 9 mm; a vertex at distance d from a bone's nearest point
    q, looking along its normal n, sees it cover a solid angle ~ (r / d)^2 max(0, n . (q - v) / d).
    The bones of its own finger lie behind its normal, so they count for nothing unless the finger
    curls over itself. One bone at a time, products and sums written out (no reductions whose order
    could depend on the batch), in float32.
    """
    from handlib.skeleton import BONES

    radius = 0.009
    x, y, z = vertices.float().unbind(-1)  # (B, V) each
    nx, ny, nz = normals.float().unbind(-1)
    joints = joints.float()
    total = torch.zeros_like(x)
    for parent, child in BONES:
        start, segment = joints[:, parent, :, None], (joints[:, child] - joints[:, parent])[..., None]  # (B, 3, 1)
        rx, ry, rz = x - start[:, 0], y - start[:, 1], z - start[:, 2]  # (B, V) vertex - bone start
        sx, sy, sz = segment[:, 0], segment[:, 1], segment[:, 2]  # (B, 1)
        t = ((rx * sx + ry * sy + rz * sz) / (sx * sx + sy * sy + sz * sz).clamp_min(1e-12)).clamp(0, 1)
        tx, ty, tz = sx * t - rx, sy * t - ry, sz * t - rz  # vertex -> nearest point of the bone
        squared = (tx * tx + ty * ty + tz * tz).clamp_min(radius * radius)
        facing = (nx * tx + ny * ty + nz * tz).clamp_min(0) / squared.sqrt()
        total = total + (radius * radius) / squared * facing
    return total.clamp(0, 1)


# -------------------------------------------------------------------------------------------------
# Cluttered scenes (photo-like backgrounds) and skin-coloured distractors


def _scene_colors(draws: _Draws, count: int, palette) -> torch.Tensor:
    """(B, count, 3) colours of things in a scene: mostly muted and dark-to-mid, as indoors.

    ``palette`` (B, 1) in [0, 1]: 0 a dim room, 1 a bright one; some colours are vivid, some white."""
    hue = draws.uniform(count)
    saturation = draws.uniform(count) ** 2 * 0.55 + torch.where(draws.uniform(count) < 0.12, 0.4, 0.0)
    value = (0.08 + 0.8 * draws.uniform(count) ** (1.6 - palette)).clamp(0, 0.97)
    return hsv_to_rgb(torch.stack([hue, saturation.clamp(0, 1), value], -1)).float()


def _octave_noise(noise: torch.Tensor, grids, size: int) -> list[torch.Tensor]:
    """The noise grids (B, sum c s^2) as octaves upsampled to (B, c, size, size)."""
    octaves, start = [], 0
    for channels, side in grids:
        grid = noise[:, start:start + channels * side * side].view(len(noise), channels, side, side)
        start += channels * side * side
        octaves.append(F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False))
    return octaves


def _paint_shapes(image, y, x, draws: _Draws, count: int, colors, palette, size: int, kinds=(0.55, 0.2, 0.25)):
    """Paint up to ``count`` things over (B, 3, S, S) ``image``, far to near, at all scales:
    boxes (mostly upright, as furniture, shelves, frames, books), ellipses, and long thin lines
    (edges, cables, door frames); some striped (textiles, book spines), some out of focus."""
    k = count
    present = draws.uniform(k) < draws.uniform(1, low=0.35, high=1.0)  # (B, K)
    scale = torch.exp(draws.uniform(k, low=math.log(0.03), high=math.log(0.7)))  # log-uniform sizes
    centre = draws.uniform(k, 2, low=-0.15, high=1.15)
    kind = draws.uniform(k)
    is_line = kind > 1 - kinds[2]
    is_box = (kind < kinds[0]) | is_line
    aspect = torch.where(is_line, draws.uniform(k, low=0.004, high=0.025), draws.uniform(k, low=0.15, high=1.0))
    axes = torch.stack([scale, scale * aspect], -1)  # (B, K, 2)
    upright = draws.uniform(k) < 0.7  # furniture: edges along the image's axes, or a multiple of 90 degrees
    angle = torch.where(upright, (draws.uniform(k) < 0.5) * (math.pi / 2) + draws.normal(k) * 0.04,
                        draws.uniform(k, high=math.pi))
    blur = torch.where(draws.uniform(k) < 0.3, draws.uniform(k, low=3.0, high=10.0), 1.0) / size  # out of focus
    striped = draws.uniform(k) < 0.15
    frequency = draws.uniform(k, low=3.0, high=16.0)
    contrast = draws.uniform(k, low=0.2, high=0.7).float()
    stripe_color = _scene_colors(draws, k, palette)
    tilt = 0.35 * draws.normal(k, 2).float()
    for j in range(k):
        rows = present[:, j].nonzero().flatten()
        if len(rows) == 0:
            continue
        c = centre[rows, j, None]
        alpha = _shapes_alpha(y, x, c, axes[rows, j, None], angle[rows, j, None], is_box[rows, j, None],
                              blur[rows, j, None, None, None].float())  # (M, 1, S, S)
        fill = colors[rows, j, :, None, None] * (1 + tilt[rows, j, 0, None, None, None] * (x - c[:, :, 0, None, None].float())
                                                 + tilt[rows, j, 1, None, None, None] * (y - c[:, :, 1, None, None].float()))
        stripe_rows = striped[rows, j].nonzero().flatten()
        if len(stripe_rows):  # a triangle wave across the shape, sharpened: exact arithmetic per pixel
            r = rows[stripe_rows]
            cos, sin = torch.cos(angle[r, j]).float().view(-1, 1, 1, 1), torch.sin(angle[r, j]).float().view(-1, 1, 1, 1)
            phase = (x * cos + y * sin) * frequency[r, j].float().view(-1, 1, 1, 1)
            stripes = (4 * ((phase - phase.floor() - 0.5).abs() - 0.25) + 0.5).clamp(0, 1)  # (M', 1, S, S)
            stripes = stripes * contrast[r, j].view(-1, 1, 1, 1)
            fill[stripe_rows] = fill[stripe_rows] + stripes * (stripe_color[r, j, :, None, None] - fill[stripe_rows])
        image[rows] = image[rows] * (1 - alpha) + fill.clamp(0, 1) * alpha
    return image


def _pink_noise(noise: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, S, S) 1/f noise from the grids of ``_CLUTTER_GRIDS``: a pyramid, each octave twice the
    frequency and half the amplitude of the one before (upsampled step by step, cheaply)."""
    total, start = None, 0
    for number, (channels, side) in enumerate(_CLUTTER_GRIDS):
        grid = noise[:, start:start + channels * side * side].view(len(noise), channels, side, side) / 2 ** number
        start += channels * side * side
        total = grid if total is None else F.interpolate(total, size=(side, side), mode="bilinear", align_corners=False) + grid
    return F.interpolate(total, size=(size, size), mode="bicubic", align_corners=False)


def clutter_backgrounds(draws: _Draws, noise: torch.Tensor, image_size: int) -> torch.Tensor:
    """Photo-like indoor scenes (B, 3, S, S) in [0, 1], made at half resolution and upsampled.

    A room (a wall and a floor meeting at a slanted edge, sometimes a corner), muted colours that
    are dark in a dim room, 1/f ("pink") noise whose power falls with frequency as in photographs,
    then up to ``_CLUTTER_SHAPES`` things at all scales (``_paint_shapes``), some sharp and some out
    of focus, and a few bright out-of-focus blobs (lamps, windows).
    """
    batch, size = len(noise), max(image_size // 2, 8)
    y, x = _grid(size)
    palette = draws.uniform(1)  # (B, 1) dim .. bright room
    room = _scene_colors(draws, 3, palette)  # wall, floor, the other wall
    slope = draws.uniform(1, 1, 1, low=-0.35, high=0.35).float()
    horizon = draws.uniform(1, 1, 1, low=0.2, high=1.3).float()  # above 1: no floor in view
    corner = draws.uniform(1, 1, 1, low=-0.5, high=1.5).float()  # outside [0, 1]: no corner in view
    floor = ((y - horizon - slope * (x - 0.5)) * size + 0.5).clamp(0, 1)  # anti-aliased edges
    other = ((x - corner) * size + 0.5).clamp(0, 1) * (1 - floor)
    image = room[:, 0, :, None, None] * (1 - floor - other) + room[:, 1, :, None, None] * floor + room[:, 2, :, None, None] * other
    image = image * (1 + 0.25 * (draws.uniform(1, 1, 1, low=-1.0, high=1.0).float() * (y - 0.5)))  # light falloff

    amount = draws.uniform(1, low=0.02, high=0.12).float()  # (B, 1)
    image = image + amount.view(-1, 1, 1, 1) * _pink_noise(noise, size) * image.mean(1, keepdim=True).clamp_min(0.1)

    image = _paint_shapes(image, y, x, draws, _CLUTTER_SHAPES, _scene_colors(draws, _CLUTTER_SHAPES, palette), palette, size)
    blobs = 3
    bright = draws.uniform(blobs) < 0.25  # (B, 3)
    blob_centre = draws.uniform(blobs, 2, low=-0.1, high=1.1)
    radius = draws.uniform(blobs, low=0.03, high=0.15)
    warm = hsv_to_rgb(torch.stack([draws.uniform(blobs, low=0.05, high=0.15), draws.uniform(blobs, high=0.4),
                                   torch.ones(batch, blobs, dtype=torch.float64)], -1)).float()
    for j in range(blobs):
        rows = bright[:, j].nonzero().flatten()
        alpha = _shapes_alpha(y, x, blob_centre[rows, j, None], torch.stack([radius, radius], -1)[rows, j, None],
                              torch.zeros(len(rows), 1), torch.zeros(len(rows), 1, dtype=torch.bool),
                              radius[rows, j].float().view(-1, 1, 1, 1))
        image[rows] = image[rows] * (1 - alpha) + warm[rows, j, :, None, None] * alpha
    image = F.interpolate(image, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return image.clamp(0, 1)


def outdoor_backgrounds(draws: _Draws, noise: torch.Tensor, image_size: int) -> torch.Tensor:
    """Outdoor scenes (B, 3, S, S), the held-out background family ("train" never draws it).

    A sky (blue to white, or overcast grey) over a slanted horizon, ground (grass, earth or paving)
    textured by the 1/f noise, foliage (green noise blobs), and upright posts and trunks.
    """
    batch, size = len(noise), max(image_size // 2, 8)
    y, x = _grid(size)
    sky = hsv_to_rgb(torch.stack([draws.uniform(1, low=0.55, high=0.62), draws.uniform(1, high=0.5),
                                  draws.uniform(1, low=0.7, high=1.0)], -1)).float()[:, 0]  # (B, 3)
    ground = hsv_to_rgb(torch.stack([draws.uniform(1, low=0.06, high=0.33), draws.uniform(1, low=0.2, high=0.7),
                                     draws.uniform(1, low=0.2, high=0.6)], -1)).float()[:, 0]
    horizon = draws.uniform(1, 1, 1, low=-0.2, high=0.8).float() + draws.uniform(1, 1, 1, low=-0.3, high=0.3).float() * (x - 0.5)
    below = torch.sigmoid((y - horizon) * size / 1.5)
    image = sky[:, :, None, None] * (1 - 0.3 * y) * (1 - below) + ground[:, :, None, None] * below
    octaves = _octave_noise(noise, _CLUTTER_GRIDS, size)
    foliage = (octaves[1][:, :1] + 0.5 * octaves[2] + 0.25 * octaves[3])  # (B, 1, S, S)
    leaves = torch.sigmoid(3 * (foliage - draws.uniform(1, 1, 1, low=0.0, high=1.5).float())) * (1 - below)
    green = hsv_to_rgb(torch.stack([draws.uniform(1, low=0.2, high=0.38), draws.uniform(1, low=0.3, high=0.8),
                                    draws.uniform(1, low=0.15, high=0.5)], -1)).float()[:, 0]
    image = image * (1 - leaves) + green[:, :, None, None] * (1 + 0.5 * octaves[3]) * leaves
    image = image * (1 + 0.25 * below * (octaves[2] + octaves[3]))
    palette = torch.full((batch, 1), 0.4, dtype=torch.float64)
    posts = hsv_to_rgb(torch.stack([draws.uniform(6, low=0.05, high=0.12), draws.uniform(6, low=0.2, high=0.6),
                                    draws.uniform(6, low=0.1, high=0.7)], -1)).float()
    image = _paint_shapes(image, y, x, draws, 6, posts, palette, size, kinds=(0.9, 0.0, 0.1))
    image = F.interpolate(image, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return image.clamp(0, 1)


def _paint_skin_distractors(image, draws: _Draws, rows, skin_tone: torch.Tensor, size: int):
    """Paint a face (an oval of skin under darker hair) or an arm (a long skin-coloured capsule)
    into the backgrounds of ``rows`` (the background, so behind the hand). In place."""
    y, x = _grid(size)
    face = draws.uniform(1) < 0.5  # (B, 1)
    centre = draws.uniform(1, 2, low=-0.1, high=1.1)
    major = draws.uniform(1, low=0.25, high=0.6)
    axes = torch.where(face[..., None], torch.stack([major * 0.75, major], -1),
                       torch.stack([major * 1.5, major * draws.uniform(1, low=0.15, high=0.3)], -1))  # (B, 1, 2)
    angle = torch.where(face, draws.normal(1) * 0.2, draws.uniform(1, high=math.pi))
    tone = skin_tone[:, None] * draws.uniform(1, 1, low=0.75, high=1.1).float()  # (B, 1, 3) the same person, or not
    hair = _random_colors(draws, 1, skin_fraction=0.0) * 0.35
    light = draws.normal(1, 2).float() * 0.3
    if len(rows) == 0:
        return image
    c = centre[rows]
    alpha = _shapes_alpha(y, x, c, axes[rows], angle[rows], torch.zeros(len(rows), 1, dtype=torch.bool), 2.0 / size)
    shading = 1 + light[rows, 0, 0, None, None, None] * (x - c[:, :, 0, None, None].float()) \
        + light[rows, 0, 1, None, None, None] * (y - c[:, :, 1, None, None].float())
    fill = (tone[rows, 0, :, None, None] * shading).clamp(0, 1)
    # Hair: the top of the face's oval, darker; an arm has none.
    top = (y < c[:, :, 1, None, None].float() - 0.45 * axes[rows, :, 1, None, None].float()).float() * face[rows].float()[..., None, None]
    fill = fill * (1 - top) + hair[rows, 0, :, None, None] * top
    image[rows] = image[rows] * (1 - alpha) + fill * alpha
    return image


def _skin_albedo(draws: _Draws, hand: _Hand, detail: float, appearance: str, vertices: torch.Tensor,
                 joints: torch.Tensor):
    """Per-vertex skin albedo of the posed hands, and their base tone.

    A tone of the Monk scale with a warmer or cooler tint, smooth variation over the hand, lighter
    palms; with ``detail`` > 0 also blotches (plane waves 1.2 to 3 cm long), pinker and lighter
    nails (``_nail_weights``) and darkening in concave parts (``_ambient_occlusion``). The creases
    are finer than the mesh: they are drawn per pixel (``_crease_scale``).

    Args:
        draws: at the "looks" section (the "skin" section is used for the detail).
        vertices, joints: (B, V, 3), (B, 21, 3) float64, the posed hands (any frame).

    Returns:
        albedo (B, V, 3) float32 in [0, 1]; tone (B, 3) float64; crease depth (B,) float32.
    """
    tone = skin_colors(draws.uniform(1))[:, 0]  # (B, 3)
    tint = draws.uniform(1)
    if appearance == "train":
        redness = -0.04 + 0.10 * tint  # a warmer or cooler tint, in [-0.04, 0.06]
    else:  # outside the training range on either side
        redness = torch.where(draws.uniform(1) < 0.5, -0.12 + 0.06 * tint, 0.08 + 0.06 * tint)
    tone = (tone + redness * torch.tensor([1.0, -0.3, -0.6], dtype=tone.dtype)).clamp(0, 1)
    # Smooth variation: three random plane waves over the rest hand, about 4 cm long.
    directions = F.normalize(draws.normal(3, 3), dim=-1)  # (B, 3, 3)
    phase = draws.uniform(3, high=2 * math.pi)
    rest = hand.rest_vertices.double()
    waves = torch.sin(torch.einsum("vd,bkd->bvk", rest, directions) * (2 * math.pi / 0.04) + phase[:, None])
    variation = 1 + 0.05 * waves.mean(-1, keepdim=True)  # (B, V, 1)
    palm = draws.uniform(1, low=0.1, high=0.35)  # how much lighter the palm is (more for darker skin)
    lighter = tone + (torch.tensor([0.93, 0.78, 0.70], dtype=tone.dtype) - tone).clamp(min=0) * palm
    albedo = tone[:, None] + (lighter - tone)[:, None] * hand.palm_side.double()[None, :, None]
    albedo = albedo * variation
    skin = draws.seek("skin")
    crease_depth = (skin.uniform(low=0.25, high=0.5)[:, 0] * detail).float()  # (B,)
    if detail > 0:
        directions = F.normalize(skin.normal(6, 3), dim=-1)  # (B, 6, 3)
        wavelength = skin.uniform(6, low=0.012, high=0.03)
        phase = skin.uniform(6, high=2 * math.pi)
        blotches = torch.sin(torch.einsum("vd,bkd->bvk", rest, directions) * (2 * math.pi / wavelength[:, None]) + phase[:, None])
        amount = skin.uniform(1, low=0.03, high=0.09)[:, None] * detail  # (B, 1, 1)
        luminance = blotches[..., :3].mean(-1, keepdim=True)  # (B, V, 1)
        red = blotches[..., 3:].mean(-1, keepdim=True)
        albedo = albedo * (1 + amount * luminance) + amount * 0.5 * red * torch.tensor([1.0, -0.4, -0.4], dtype=tone.dtype)
        nail = (tone + (torch.tensor([0.95, 0.78, 0.78], dtype=tone.dtype) - tone) * skin.uniform(1, low=0.35, high=0.6))
        weight = hand.nails.double()[None, :, None] * detail  # (1, V, 1)
        albedo = albedo * (1 - weight) + nail[:, None] * weight
        normals = vertex_normals(vertices, hand.faces)  # (B, V, 3) float64
        occlusion = _ambient_occlusion(vertices, normals, joints)  # (B, V)
        albedo = albedo * (1 - skin.uniform(1, low=0.4, high=0.7)[:, None] * detail * occlusion[..., None])
    return albedo.clamp(0, 1).float(), tone, crease_depth


def _crease_scale(hand: _Hand, faces: torch.Tensor, fragments, depth: torch.Tensor) -> torch.Tensor:
    """(N, 1) albedo factors at the covered pixels: darker lines across the digits at the creases
    of the joints (on the palm's side; fainter wrinkles on the back), sharper than the mesh.

    The per-vertex distances to the creases (``_crease_coordinates``) are interpolated to each
    pixel, and a line of half-width 1.2 mm drawn where they cross 0: bump(d) = max(0, 1 - (d/w)^2)^2
    (products only, so per-pixel values do not depend on the batch). ``depth``: (B,) float32."""
    from handlib.render import interpolate_covered

    values = interpolate_covered(hand.creases, faces, fragments)  # (N, 3)
    height, width = fragments.image_size
    image = torch.div(fragments.pixel_index, height * width, rounding_mode="floor")
    line = (1 - (values[:, :2] / 0.0012).square()).clamp_min(0).square().amax(-1, keepdim=True)  # (N, 1)
    return 1 - depth[image, None] * values[:, 2:] * line


def _lights(draws: _Draws, lighting: str, appearance: str):
    """The lights of each sample: directions (B, L, 3) towards the lights, colours (B, L, 3),
    diffuse weights (B, L), ambient (B,), sheen (B,). L = 1 ("single") or 2 ("multi": a key light
    from the camera's side, and either a fill light from the other side in another colour or, in a
    third of the samples, a rim light from behind that lights the hand's outline)."""
    batch = len(draws.table)
    key = F.normalize(torch.cat([draws.uniform(2, low=-1.0, high=1.0), draws.uniform(1, low=-1.0, high=0.2)], 1), dim=-1)
    ambient = draws.uniform(low=0.2, high=0.55)[:, 0]
    diffuse = (1 - ambient) * draws.uniform(low=0.75, high=1.25)[:, 0]  # (B,)
    specular = draws.uniform(low=0.0, high=0.12)[:, 0]
    held_out = appearance == "held_out"
    # Train: a warm to slightly cool key light, a cool fill; held out: tinted keys, warm vivid fills.
    key_hue = draws.uniform(1, low=0.2, high=0.9) if held_out else draws.uniform(1, low=-0.05, high=0.12)
    key_saturation = draws.uniform(1, low=0.25, high=0.4) if held_out else draws.uniform(1, high=0.25)

    def color(hue, saturation):
        rgb = hsv_to_rgb(torch.cat([hue % 1.0, saturation, torch.ones(batch, 1, dtype=hue.dtype)], 1))
        return rgb / rgb.amax(-1, keepdim=True)

    directions, colors, weights = [key], [color(key_hue, key_saturation)], [diffuse]
    if lighting == "multi":
        side = draws.uniform(2, low=-0.4, high=0.4)
        fill = F.normalize(torch.cat([-key[:, :2] + side, draws.uniform(1, low=-1.0, high=-0.2)], 1), dim=-1)
        fill_hue = draws.uniform(1, low=-0.1, high=0.12) if held_out else draws.uniform(1, low=0.5, high=0.7)
        fill_saturation = draws.uniform(1, low=0.3, high=0.5) if held_out else draws.uniform(1, high=0.3)
        fill_weight = diffuse * draws.uniform(low=0.1, high=0.5)[:, 0]
        around = draws.uniform(1, high=2 * math.pi)
        rim = F.normalize(torch.cat([torch.cos(around), torch.sin(around), draws.uniform(1, low=0.3, high=1.2)], 1), dim=-1)
        rim_weight = diffuse * draws.uniform(low=0.4, high=1.0)[:, 0]
        rim_color = color(draws.uniform(1, low=0.05, high=0.15), draws.uniform(1, high=0.2))
        is_rim = draws.uniform(1) < 1 / 3  # (B, 1)
        directions.append(torch.where(is_rim, rim, fill))
        colors.append(torch.where(is_rim, rim_color, color(fill_hue, fill_saturation)))
        weights.append(torch.where(is_rim[:, 0], rim_weight, fill_weight))
    return (torch.stack(directions, 1).float(), torch.stack(colors, 1).float(), torch.stack(weights, 1).float(),
            ambient.float(), specular.float())


def _motion_blur(images: torch.Tensor, length: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Average of 7 copies shifted along a line of ``length`` pixels (B,) at ``angle`` (B,) radians."""
    batch, _, height, width = images.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    base = torch.stack([xs, ys], -1)[None]  # (1, H, W, 2) in grid_sample's coordinates
    step = torch.stack([torch.cos(angle), torch.sin(angle)], -1).float() * length.float()[:, None] / 6  # (B, 2) px per tap
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    out = torch.zeros_like(images)
    for tap in range(-3, 4):
        grid = base + (tap * step * scale)[:, None, None]
        out = out + F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out / 7


# -------------------------------------------------------------------------------------------------
# The batch


def render_batch(indices, seed: int = 0, split: str = "train", config: SynthConfig | None = None, *,
                 device=None, return_layers: bool = False, **knobs) -> dict:
    """Render synthetic samples (seed, split, index) for many indices at once.

    The scene of a sample, back to front: a background (``config.background``), maybe a
    skin-coloured distractor (a second hand with its forearm, a face or an arm), the hand with its
    forearm (one mesh, one z-buffer: the forearm hides the hand and the hand the forearm), and
    occluders in front of or between the fingers; then the camera's finish (exposure, blur, noise).

    Args:
        indices: a number n (indices 0 .. n-1) or a list / tensor of non-negative indices.
        seed: non-negative int; the same seed gives the same samples.
        split: "train", "val" or "test" (independent streams of samples).
        config: a ``SynthConfig``; ``knobs`` (image_size, occlusion, viewpoint, pose_kind,
            hand_side, distance, margin, jitter, background, forearm, sleeve, skin_detail,
            distractors, lighting, appearance) override its fields.
        device: where to rasterize (default CPU); results come back on that device.
        return_layers: also return "hand_mask" (B, H, W), the hand where it is the nearest
            surface of the scene, before the occluders (never the forearm: see ``mask``),
            "forearm_mask" (B, H, W) the forearm's and sleeve's pixels likewise,
            "distractor_mask" (B, H, W) pixels of a second hand (and its arm) in view,
            "occluder_mask" (B, H, W), occluder pixels in front of everything,
            "background" (B, 3, H, W), "vertices" (B, V, 3) the posed hand in the camera frame,
            metres (faces: ``hand_faces()``).

    Returns:
        dict of batched tensors with the keys of ``handlib.data.sample.SAMPLE_KEYS``
        (image (B, 3, S, S) in [0, 1], mask (B, S, S), depth (B, S, S) metres, keypoints_2d
        (B, 21, 2) px, keypoints_3d (B, 21, 3) metres camera frame, visibility (B, 21), K (B, 3, 3),
        pose (B, 48), betas (B, 10), is_right (B,), has_* (B,) bool), plus the layers if asked.
        ``mask`` is the hand alone (as MANO models it, up to the wrist), without the forearm: as
        RHD's hand labels (its arms are "person") and as a rendered MANO silhouette, which mask
        losses compare it with. ``depth`` is the hand's depth on the mask. A keypoint is not
        visible when anything (the forearm, a finger, an occluder) lies in front of it by more
        than its ``VISIBILITY_TOLERANCE``. Row i is sample ``indices[i]`` whatever the other
        indices are.

    Example:
        >>> batch = render_batch([0, 5], seed=1, image_size=64, occlusion=0.5)   # doctest: +SKIP
    """
    from handlib.geometry import axis_angle_to_matrix

    config = make_config(config, **knobs)
    _check_seed_split(seed, split)
    indices = _check_indices(indices)
    device = torch.device("cpu") if device is None else torch.device(device)
    hand = _hand()
    size = config.image_size
    batch = len(indices)
    draws, grids, pixel_noise, scene_noise = _random_numbers(indices, seed, split, size)

    # 1. The hand: pose, orientation and shape, posed by MANO (float64: bit-identical whatever the batch).
    finger_pose, orientation = _poses(indices, seed, split, config)
    betas = draws.seek("hand").normal(10).clamp(-2.5, 2.5).float()  # (B, 10)
    with torch.no_grad():
        out = hand.layer(hand_pose=finger_pose.double(), betas=betas.double(), global_orient=orientation.double())
    vertices, joints = out.vertices, out.joints  # (B, V, 3), (B, 21, 3) float64

    # 2. Camera: the hand's centre `distance` in front, up to ~15 degrees off the axis.
    distance = draws.seek("camera").uniform(1, low=config.distance[0], high=config.distance[1])  # (B, 1)
    off_axis = draws.uniform(2, low=-0.27, high=0.27)  # tan of the angles
    target = torch.cat([off_axis, torch.ones(batch, 1, dtype=torch.float64)], 1) * distance  # (B, 3)
    centre = (joints.amax(1) + joints.amin(1)) / 2  # (B, 3) centre of the keypoints' box
    shift = (target - centre)[:, None]
    vertices64, joints64 = vertices + shift, joints + shift
    vertices, joints = vertices64.float(), joints64.float()

    # The crop, in normalised image coordinates (focal length 1, principal point 0).
    unit_camera = make_intrinsics(1.0, 0.0, 0.0)
    normalised = joints[..., :2] / joints[..., 2:]  # (B, 21, 2)
    low, high = normalised.amin(1), normalised.amax(1)
    side = (high - low).amax(-1) * draws.uniform(low=config.margin[0], high=config.margin[1]).float()[:, 0]  # (B,)
    middle = (low + high) / 2 + draws.uniform(2, low=-config.jitter, high=config.jitter).float() * side[:, None]
    K = crop_intrinsics(unit_camera, (middle[:, 0] - side / 2, middle[:, 1] - side / 2, side), size)  # (B, 3, 3)
    keypoints_2d = project_points(joints, K)  # (B, 21, 2) pixels

    # 3. The forearm: rings continuing the wrist opening away from the fingers, maybe a sleeve.
    arm = _forearm_parameters(draws.seek("forearm"), config, batch)
    rotation = axis_angle_to_matrix(orientation.double())  # (B, 3, 3)
    arm_vertices, arm_albedo_of = _attach_forearm(hand, vertices64, joints64, rotation, arm)
    scene_vertices = torch.cat([vertices64, arm_vertices], 1).float()  # (B, V', 3)

    # 4. The hand's picture: the hand and forearm rasterized together (back faces culled: the
    # mesh is closed), then shaded by the lights, with the skin's creases per pixel.
    skin, tone, crease_depth = _skin_albedo(draws.seek("looks"), hand, float(config.skin_detail), config.appearance,
                              vertices64, joints64)
    albedo = torch.cat([skin, arm_albedo_of(tone)], 1)  # (B, V', 3)
    lights, light_colors, light_weights, ambient, specular = _lights(draws.seek("lights"), config.lighting,
                                                                     config.appearance)
    faces = hand.scene_faces.to(device)
    with torch.no_grad():
        fragments, colors = _shade_scene(hand, scene_vertices.to(device), faces, K.to(device), size, albedo, lights,
                                         light_colors, light_weights, ambient, specular,
                                         crease_depth if config.skin_detail > 0 else None)
    scene_depth = fragments.depth.cpu()  # (B, S, S), 0 off the hand and forearm
    face = fragments.face_index.cpu()
    on_forearm = (face >= hand.hand_face_count) & arm.present[:, None, None]  # without a forearm, its faces cap the wrist
    hand_mask = fragments.mask.cpu() & ~on_forearm
    scene_rgb = torch.zeros(batch * size * size, 3).index_put((fragments.pixel_index.cpu(),), colors.cpu())
    scene_rgb = scene_rgb.view(batch, size, size, 3).permute(0, 3, 1, 2)

    # 5. Background, skin-coloured distractors behind the hand, then the hand and forearm.
    background = _backgrounds(draws, grids, scene_noise, config, size)
    distractor = _distractors(draws.seek("distractors"), config, indices, seed, split, betas, arm, tone, middle, side,
                              joints64, K, lights, light_colors, light_weights, ambient, specular, skin, hand, size)
    background = distractor.paint_background(background)
    distractor_depth = distractor.depth  # (B, S, S), 0 where there is no second hand
    distractor_front = (distractor_depth > 0) & ((scene_depth == 0) | (distractor_depth < scene_depth))
    image = torch.where(distractor_front[:, None], distractor.rgb, background)
    image = torch.where((scene_depth > 0)[:, None] & ~distractor_front[:, None], scene_rgb, image)
    hand_mask = hand_mask & ~distractor_front
    forearm_mask = on_forearm & fragments.mask.cpu() & ~distractor_front
    surface_depth = torch.where(distractor_front, distractor_depth, scene_depth)  # the nearest surface, 0 on none

    # 6. The occluders in front (far to near), each with its own depth.
    y, x = _grid(size)
    k = _MAX_OCCLUDERS
    count = 1 + (draws.seek("occluders").uniform(1) * k * config.occlusion).floor()  # (B, 1) 1..3
    active = (draws.uniform(1) < config.occlusion) & (torch.arange(k) < count)  # (B, K)
    anchor = keypoints_2d[torch.arange(batch)[:, None], (draws.uniform(k) * 21).long().clamp(max=20)] / size  # (B, K, 2)
    occluder_centre = anchor + 0.12 * draws.normal(k, 2).float()
    major = draws.uniform(k, low=0.06, high=0.12 + 0.2 * config.occlusion)
    axes = torch.stack([major, major * draws.uniform(k, low=0.25, high=1.0)], -1)  # (B, K, 2)
    angle, is_box = draws.uniform(k, high=math.pi), draws.uniform(k) < 0.5
    z_near, z_far = joints[..., 2].amin(1, keepdim=True), joints[..., 2].amax(1, keepdim=True)  # (B, 1)
    occluder_depth = z_near - 0.06 + draws.uniform(k).float() * (0.06 + 0.6 * (z_far - z_near))  # (B, K)
    occluder_color = _random_colors(draws, k, skin_fraction=0.15)  # (B, K, 3)
    tilt = 0.3 * draws.normal(k, 2).float()  # brightness gradient across each occluder

    # Where each keypoint falls, and the nearest surface there (0 where the pixel shows the background).
    column, row = keypoints_2d.unbind(-1)
    inside = pixels_in_image(keypoints_2d, size)  # (B, 21)
    pixel = (row.floor().clamp(0, size - 1) * size + column.floor().clamp(0, size - 1)).long()  # (B, 21)
    surface = surface_depth.flatten(1).gather(1, pixel)  # (B, 21)
    z = joints[..., 2]
    nearest = torch.where(surface > 0, surface, z)  # the nearest thing of the scene along the keypoint's ray

    order = occluder_depth.argsort(dim=1, descending=True)  # far to near
    in_front = torch.zeros(batch, size, size, dtype=torch.bool)  # an occluder is the nearest thing here
    covered = torch.zeros(batch, 21, dtype=torch.bool)  # an occluder hides the keypoint
    for step in range(k):
        j = order[:, step]
        rows = active.gather(1, j[:, None])[:, 0].nonzero().flatten()  # images with an occluder at this step
        j = j[rows]
        alpha = _shapes_alpha(y, x, occluder_centre[rows, j, None], axes[rows, j, None], angle[rows, j, None],
                              is_box[rows, j, None], 1.0 / size)[:, 0]  # (M, S, S)
        depth_j = occluder_depth[rows, j][:, None, None]  # (M, 1, 1)
        covers = alpha * ((surface_depth[rows] == 0) | (depth_j < surface_depth[rows]))  # (M, S, S)
        shading = 1 + ((x - occluder_centre[rows, j, 0, None, None, None]) * tilt[rows, j, 0, None, None, None]
                       + (y - occluder_centre[rows, j, 1, None, None, None]) * tilt[rows, j, 1, None, None, None])
        fill = (occluder_color[rows, j, :, None, None] * shading).clamp(0, 1)  # (M, 3, S, S)
        image[rows] = image[rows] * (1 - covers[:, None]) + fill * covers[:, None]
        in_front[rows] |= covers > 0.5
        over = alpha.flatten(1).gather(1, pixel[rows]) > 0.5  # (M, 21)
        covered[rows] |= over & (occluder_depth[rows, j, None] < nearest[rows])
    mask = hand_mask & ~in_front
    depth = torch.where(mask, scene_depth, torch.zeros(()))

    # 7. Visibility: inside the image, no occluder over it, nothing more than the tolerance in front.
    unoccluded = (surface == 0) | (surface >= z - torch.tensor(VISIBILITY_TOLERANCE))
    visibility = (inside & unoccluded & ~covered).float()

    # 8. The camera's look: exposure and white balance, blur, noise (and, held out, motion blur and faded colour).
    image = _finish(draws.seek("finish"), image, pixel_noise, config)

    result = {
        "image": image, "mask": mask.float(), "depth": depth, "keypoints_2d": keypoints_2d, "keypoints_3d": joints,
        "visibility": visibility, "K": K, "pose": torch.cat([orientation, finger_pose], 1), "betas": betas,
        "is_right": torch.ones(batch), "has_3d": torch.ones(batch, dtype=torch.bool),
        "has_mask": torch.ones(batch, dtype=torch.bool), "has_depth": torch.ones(batch, dtype=torch.bool),
        "has_mano": torch.ones(batch, dtype=torch.bool),
    }
    if return_layers:
        result.update(hand_mask=hand_mask.float(), forearm_mask=forearm_mask.float(),
                      distractor_mask=distractor_front.float(), occluder_mask=in_front.float(), background=background,
                      vertices=vertices)
    mirrored = draws.seek("side").uniform(1)[:, 0] < {"right": 0.0, "left": 1.0, "both": 0.5}[config.hand_side]
    if mirrored.any():
        result = _mirror_rows(result, mirrored)
    return {key: value.to(device) for key, value in result.items()}


@dataclass
class _Forearm:
    present: torch.Tensor  # (B,) bool
    bend: torch.Tensor  # (B, 2) radians
    length: torch.Tensor  # (B,) metres, 0 without a forearm
    widen: torch.Tensor  # (B, 2)
    sleeve: torch.Tensor  # (B,) bool
    sleeve_start: torch.Tensor  # (B,) metres (>= length: none)
    sleeve_scale: torch.Tensor  # (B,)
    cloth: torch.Tensor  # (B, 3) the sleeve's colour
    tone: torch.Tensor  # (B, 1) the forearm's skin relative to the hand's


def _forearm_parameters(draws: _Draws, config: SynthConfig, batch: int) -> _Forearm:
    present = draws.uniform(1)[:, 0] < config.forearm
    bend = draws.uniform(2, low=-1.0, high=1.0) * torch.tensor([math.radians(20), math.radians(15)], dtype=torch.float64)
    length = torch.where(present, draws.uniform(1, low=FOREARM_LENGTH[0], high=FOREARM_LENGTH[1])[:, 0], 0.0)
    widen = torch.cat([draws.uniform(1, low=0.05, high=0.25), draws.uniform(1, low=0.3, high=0.7)], 1)
    sleeve = present & (draws.uniform(1)[:, 0] < config.sleeve)
    sleeve_start = torch.where(sleeve, draws.uniform(1, low=0.01, high=0.08)[:, 0], 1.0)  # metres up the arm
    sleeve_scale = draws.uniform(1, low=1.1, high=1.35)[:, 0]
    # Disjoint halves of the hue circle: train sleeves are blue, purple, red; held-out ones yellow, green, cyan.
    hue = draws.uniform(1, low=0.05, high=0.45) if config.appearance == "held_out" else (draws.uniform(1, low=0.45, high=1.05) % 1.0)
    cloth = hsv_to_rgb(torch.cat([hue, draws.uniform(1) ** 1.5 * 0.8, draws.uniform(1, low=0.1, high=0.85)], 1))
    tone = draws.uniform(1, low=0.9, high=1.0)
    return _Forearm(present, bend, length, widen, sleeve, sleeve_start, sleeve_scale, cloth, tone)


def _attach_forearm(hand: _Hand, vertices: torch.Tensor, joints: torch.Tensor, rotation: torch.Tensor, arm: _Forearm):
    """The forearm's vertices (B, V_forearm, 3) float64 for posed hands (float64, camera frame),
    and a function tone (B, 3) -> its albedo (B, V_forearm, 3).

    Its direction is from the middle finger's MCP to the wrist; its dorsal axis the back of the
    hand (the hand's rotation applied to minus the prior's palm normal). The far end stays 8 cm in
    front of the camera (a shorter forearm where it points at the camera)."""
    loop = vertices[:, hand.wrist_loop]  # (B, R, 3)
    direction = F.normalize(joints[:, 0] - joints[:, 9], dim=-1)  # (B, 3) middle MCP -> wrist
    dorsal = -(rotation @ hand.prior.palm_normal.double())  # (B, 3)
    dorsal = F.normalize(dorsal - (dorsal * direction).sum(-1, keepdim=True) * direction, dim=-1)
    start = loop.mean(1)[:, 2]
    reach = (start - 0.08).clamp_min(0.02) / (-direction[:, 2] + 0.45).clamp_min(1e-3)  # bend can turn it up to ~27 deg
    length = torch.minimum(arm.length, reach) * (arm.length > 0)
    sleeve_start = torch.where(arm.sleeve, arm.sleeve_start, length + 1.0)
    rings = forearm_rings(loop, direction, dorsal, arm.bend, length, arm.widen, sleeve_start, arm.sleeve_scale)
    up = ((loop - loop.mean(1, keepdim=True)) * dorsal[:, None]).sum(-1)  # (B, R)
    dorsal_side = up / up.abs().amax(1, keepdim=True).clamp_min(1e-9)

    def albedo(tone):
        return _forearm_albedo((tone * arm.tone).clamp(0, 1), arm.cloth, arm.sleeve, dorsal_side).float()

    return rings, albedo


def _shade_scene(hand, vertices, faces, K, size, albedo, lights, light_colors, light_weights, ambient, specular,
                 crease_depth):
    """Rasterize (back faces culled) and shade; per-pixel arithmetic only (see ``_Draws``)."""
    device = vertices.device
    fragments = rasterize(vertices, faces, K, size, cull_backfaces=True)
    scale = None if crease_depth is None else _crease_scale(hand, faces, fragments, crease_depth.to(device))
    colors = shade_covered(vertices, faces, fragments, albedo.to(device), lights.to(device), ambient.to(device),
                           light_weights.to(device), specular.to(device), light_colors.to(device), albedo_scale=scale)
    return fragments, colors


def _backgrounds(draws: _Draws, grids, scene_noise, config: SynthConfig, size: int) -> torch.Tensor:
    """(B, 3, S, S): each sample's background family, rendered for the rows that have it."""
    batch = len(grids)
    if config.background == "black":
        return torch.zeros(batch, 3, size, size)
    pick = draws.seek("choices").uniform(1)[:, 0]
    if config.appearance == "held_out":
        family = torch.full((batch,), 2)  # outdoor
    else:
        clutter_share = {"clutter": 1.0, "procedural": 0.0, "mixed": MIXED_CLUTTER}[config.background]
        family = (pick < clutter_share).long()  # 1 clutter, 0 procedural
    background = torch.zeros(batch, 3, size, size)
    makers = {0: lambda d, r: procedural_backgrounds(d.seek("background"), grids[r], size),
              1: lambda d, r: clutter_backgrounds(d.seek("clutter"), scene_noise[r], size),
              2: lambda d, r: outdoor_backgrounds(d.seek("clutter"), scene_noise[r], size)}
    for number, make in makers.items():
        rows = (family == number).nonzero().flatten()
        if len(rows):
            background[rows] = make(draws.rows(rows), rows)
    return background


@dataclass
class _DistractorLayer:
    rgb: torch.Tensor  # (B, 3, S, S) a second hand's picture, where depth > 0
    depth: torch.Tensor  # (B, S, S) its depth, 0 elsewhere
    skin_rows: torch.Tensor  # rows with a face or arm painted into the background
    draws: _Draws
    tone: torch.Tensor
    size: int

    def paint_background(self, background: torch.Tensor) -> torch.Tensor:
        return _paint_skin_distractors(background, self.draws, self.skin_rows, self.tone.float(), self.size)


def _distractors(draws: _Draws, config, indices, seed, split, betas, arm: _Forearm, tone, middle, side, joints, K,
                 lights, light_colors, light_weights, ambient, specular, skin, hand: _Hand, size) -> _DistractorLayer:
    """A second hand (the other hand: mirrored, with the same skin, forearm and sleeve) partly in
    the crop, behind the hand; or a face or an arm painted into the background. With ``two_hands``
    the other hand interacts instead: over the crop's centre, a few centimetres in front or behind.

    The interacting hand reuses the draws of the one behind (mapped to nearer ranges), so the knob
    at 0 leaves every other sample's picture bit-identical."""
    batch = len(indices)
    chance = draws.uniform(1)[:, 0]
    interacting = chance < config.two_hands
    present = interacting | (chance < config.distractors)
    is_hand = (draws.uniform(1)[:, 0] < 0.6) | interacting
    mirrored = (draws.uniform(1)[:, 0] < 0.7) | interacting
    around = draws.uniform(1, high=2 * math.pi)[:, 0]
    reach = draws.uniform(1, low=0.5, high=1.1)[:, 0]  # from the crop's centre, in half sides
    behind = draws.uniform(1, low=0.03, high=0.2)[:, 0]
    reach = torch.where(interacting, 0.1 + (reach - 0.5) * (0.4 / 0.6), reach)  # 0.1 to 0.5 half sides
    bend = draws.uniform(2, low=-1.0, high=1.0) * math.radians(20)
    hand_rows = (present & is_hand).nonzero().flatten()
    skin_rows = (present & ~is_hand).nonzero().flatten()
    rgb, depth = torch.zeros(batch, 3, size, size), torch.zeros(batch, size, size)
    if len(hand_rows):
        poses, orientations = _poses([indices[i] for i in hand_rows], seed, f"{split}/distractor",
                                     make_config(pose_kind="mixture", viewpoint="any"))
        from handlib.geometry import axis_angle_to_matrix

        with torch.no_grad():
            out = hand.layer(hand_pose=poses.double(), betas=betas[hand_rows].double(), global_orient=orientations.double())
        flip = torch.where(mirrored[hand_rows], -1.0, 1.0).double()[:, None, None]  # x -> -x: the left hand
        vertices = out.vertices * torch.cat([flip, torch.ones_like(flip), torch.ones_like(flip)], -1)
        other_joints = out.joints * torch.cat([flip, torch.ones_like(flip), torch.ones_like(flip)], -1)
        rotation = axis_angle_to_matrix(orientations.double())
        rotation = rotation * torch.cat([flip, torch.ones_like(flip), torch.ones_like(flip)], 1)  # mirror its axes too
        # Place it behind the hand (its nearest point `behind` beyond the hand's farthest joint), or
        # interacting (its centre within 4 cm of the hand's, in front or behind), its centre `reach`
        # half-sides from the crop's centre.
        z = joints[hand_rows, :, 2].amax(1) + behind[hand_rows] + (other_joints[..., 2].mean(1) - vertices[..., 2].amin(1))
        near = joints[hand_rows, :, 2].mean(1) + (behind[hand_rows] - 0.03) * (0.08 / 0.17) - 0.04
        z = torch.where(interacting[hand_rows], near, z)
        towards = torch.stack([torch.cos(around[hand_rows]), torch.sin(around[hand_rows])], -1)
        centre_2d = middle[hand_rows].double() + 0.5 * side[hand_rows, None].double() * reach[hand_rows, None] * towards
        target = torch.cat([centre_2d * z[:, None], z[:, None]], 1)
        shift = (target - other_joints.mean(1))[:, None]
        vertices, other_joints = vertices + shift, other_joints + shift
        arm_rows = _Forearm(arm.present[hand_rows], bend[hand_rows], arm.length[hand_rows], arm.widen[hand_rows],
                            arm.sleeve[hand_rows], arm.sleeve_start[hand_rows], arm.sleeve_scale[hand_rows],
                            arm.cloth[hand_rows], arm.tone[hand_rows])
        arm_vertices, arm_albedo_of = _attach_forearm(hand, vertices, other_joints, rotation, arm_rows)
        scene = torch.cat([vertices, arm_vertices], 1).float()
        albedo = torch.cat([skin[hand_rows], arm_albedo_of(tone[hand_rows])], 1)
        faces = hand.scene_faces
        with torch.no_grad():
            fragments = rasterize(scene, faces, K[hand_rows], size)  # both windings (mirrored): no culling
            colors = shade_covered(scene, faces, fragments, albedo, lights[hand_rows], ambient[hand_rows],
                                   light_weights[hand_rows], specular[hand_rows], light_colors[hand_rows])
        picture = torch.zeros(len(hand_rows) * size * size, 3).index_put((fragments.pixel_index,), colors)
        rgb[hand_rows] = picture.view(-1, size, size, 3).permute(0, 3, 1, 2)
        depth[hand_rows] = fragments.depth
    return _DistractorLayer(rgb, depth, skin_rows, draws, tone, size)


def _finish(draws: _Draws, image: torch.Tensor, pixel_noise: torch.Tensor, config: SynthConfig) -> torch.Tensor:
    """The camera's look: white balance and exposure (a gamma curve as a table: no per-pixel pow,
    see ``_Draws``), defocus blur, sensor noise; held out, also motion blur and faded colours."""
    held_out = config.appearance == "held_out"
    balance = draws.uniform(3, low=0.88, high=1.12) if held_out else draws.uniform(3, low=0.94, high=1.06)
    if config.lighting == "single":
        exposure = draws.uniform(1, low=0.8, high=1.15)
        gamma = draws.uniform(1, low=0.8, high=1.25)
    else:  # under- to over-exposed
        exposure = torch.exp(draws.uniform(1, low=math.log(0.55), high=math.log(1.5)))
        gamma = draws.uniform(1, low=0.7, high=1.4)
    gain = (balance * exposure).float()
    levels = torch.linspace(0, 1, _GAMMA_LEVELS, dtype=torch.float64)
    curve = (levels ** gamma).float()  # (B, L)
    level = ((image.clamp(0, 1) * gain[..., None, None]).clamp(0, 1) * (_GAMMA_LEVELS - 1)).round().long()
    image = curve.gather(1, level.flatten(1)).view_as(image)
    sigma = torch.where(draws.uniform(1)[:, 0] < 0.3, draws.uniform(1, low=0.6, high=1.3)[:, 0],
                        draws.uniform(1, low=0.2, high=0.55)[:, 0])
    image = _blur(image, sigma)
    noise = draws.uniform(1, low=0.01, high=0.06) if held_out else draws.uniform(1, high=0.03)
    if held_out:
        shaken = draws.uniform(1)[:, 0] < 0.5
        length = torch.where(shaken, draws.uniform(1, low=2.0, high=7.0)[:, 0], 0.0) * image.shape[-1] / 128
        image = torch.where(shaken[:, None, None, None], _motion_blur(image, length, draws.uniform(1, high=math.pi)[:, 0]),
                            image)
        saturation = torch.where(draws.uniform(1) < 0.4, draws.uniform(1, high=0.6), 1.0).float()  # (B, 1)
        gray = image.mean(1, keepdim=True)
        image = gray + saturation[..., None, None] * (image - gray)
    return (image + noise.float()[..., None, None] * pixel_noise).clamp(0, 1)


def _mirror_rows(batch: dict, rows: torch.Tensor) -> dict:
    """Mirror the chosen rows with ``mirror_sample`` (right hands become left hands)."""
    from handlib.data.datasets import mirror_sample

    out = {key: value.clone() for key, value in batch.items()}
    for i in rows.nonzero().flatten().tolist():
        flipped = mirror_sample({key: batch[key][i] for key in SAMPLE_KEYS})
        for key in SAMPLE_KEYS:
            out[key][i] = flipped[key]
        for key in ("hand_mask", "forearm_mask", "distractor_mask", "occluder_mask", "background"):
            if key in out:
                out[key][i] = batch[key][i].flip(-1)
        if "vertices" in out:
            out["vertices"][i, :, 0] = -batch["vertices"][i, :, 0]
    return out


def unbatch(batch: dict) -> list[dict]:
    """A dict of batched tensors -> a list of sample dicts (the keys of ``SAMPLE_KEYS``)."""
    count = len(batch["image"])
    return [{key: batch[key][i] for key in SAMPLE_KEYS} for i in range(count)]


# -------------------------------------------------------------------------------------------------
# The dataset


class SyntheticHandDataset(torch.utils.data.Dataset):
    """Synthetic samples rendered on the fly: item i is sample (seed, split, i), always the same.

    Rendering one sample at a time wastes the renderer, so the dataset renders blocks of
    ``block_size`` consecutive indices and keeps the last ``cached_blocks`` of them (a sequential
    read renders each block once), and it implements ``__getitems__``: a ``DataLoader`` with
    ``batch_size`` asks for a whole batch of (shuffled) indices at once, rendered in one call.
    Either way an item is the same tensors as ``render_batch([i])``.

    Args:
        num_samples: length of the dataset.
        seed: non-negative int.
        split: "train", "val" or "test".
        image_size, occlusion, viewpoint, pose_kind, hand_side, ...: knobs of ``SynthConfig``.
        block_size: indices rendered together for single-item access.
        cached_blocks: how many rendered blocks to keep.

    Example:
        >>> dataset = SyntheticHandDataset(1000, seed=0, image_size=64)              # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True)  # doctest: +SKIP
        >>> batch = next(iter(loader))                                                # doctest: +SKIP
    """

    def __init__(self, num_samples: int, seed: int = 0, split: str = "train", image_size: int = 128,
                 occlusion: float = 0.3, viewpoint: str = "any", pose_kind: str = "mixture",
                 hand_side: str = "right", block_size: int = 32, cached_blocks: int = 2, **knobs):
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        for name, value in (("block_size", block_size), ("cached_blocks", cached_blocks)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        _check_seed_split(seed, split)
        self.num_samples, self.seed, self.split = int(num_samples), int(seed), split
        self.config = make_config(image_size=image_size, occlusion=occlusion, viewpoint=viewpoint,
                                  pose_kind=pose_kind, hand_side=hand_side, **knobs)
        self.block_size, self.cached_blocks = int(block_size), int(cached_blocks)
        self._blocks: OrderedDict[int, list[dict]] = OrderedDict()

    def __len__(self) -> int:
        return self.num_samples

    def _check(self, index) -> int:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for a dataset of {self.num_samples} samples")
        return index

    def __getitem__(self, index) -> dict:
        index = self._check(index)
        block = index // self.block_size
        if block not in self._blocks:
            start = block * self.block_size
            indices = range(start, min(start + self.block_size, self.num_samples))
            self._blocks[block] = unbatch(render_batch(list(indices), self.seed, self.split, self.config))
            while len(self._blocks) > self.cached_blocks:
                self._blocks.popitem(last=False)
        self._blocks.move_to_end(block)
        return self._blocks[block][index - block * self.block_size]

    def __getitems__(self, indices) -> list[dict]:
        """Many items in one ``render_batch`` call (``DataLoader`` uses this when batching)."""
        indices = [self._check(i) for i in indices]
        return unbatch(render_batch(indices, self.seed, self.split, self.config))

    def batch(self, indices) -> dict:
        """The items ``indices`` as one dict of batched tensors (as a DataLoader would collate them)."""
        return render_batch([self._check(i) for i in indices], self.seed, self.split, self.config)


# -------------------------------------------------------------------------------------------------
# Cached sets (the fixed test set, a training set read epoch after epoch), on disk

_CHUNK_ARRAYS = {  # name -> (dtype stored, shape after the sample axis given the image size S)
    "image": (np.uint8, lambda s: (3, s, s)), "mask": (np.bool_, lambda s: (s, s)),
    "depth": (np.float16, lambda s: (s, s)), "keypoints_2d": (np.float32, lambda s: (21, 2)),
    "keypoints_3d": (np.float32, lambda s: (21, 3)), "visibility": (np.float32, lambda s: (21,)),
    "K": (np.float32, lambda s: (3, 3)), "pose": (np.float32, lambda s: (48,)),
    "betas": (np.float32, lambda s: (10,)), "is_right": (np.float32, lambda s: ()),
}


def _to_chunk(batch: dict, indices, fingerprint: str) -> dict:
    arrays = {}
    for key, (dtype, _) in _CHUNK_ARRAYS.items():
        value = batch[key]
        if key == "image":
            value = (value * 255).round()
        elif key == "mask":
            value = value > 0.5
        arrays[key] = value.cpu().numpy().astype(dtype)
    arrays["index"] = np.asarray(indices, dtype=np.int64)
    arrays["fingerprint"] = np.array(fingerprint)
    return arrays


def _check_chunk(arrays: dict, indices, image_size: int, fingerprint: str) -> str | None:
    """None if the chunk holds what it should, else what is wrong."""
    if str(arrays.get("fingerprint", "")) != fingerprint:
        return "it was made with other settings or another hand model"
    if not np.array_equal(arrays.get("index", np.empty(0)), np.asarray(indices)):
        return "its sample indices are not the expected ones"
    for key, (dtype, shape) in _CHUNK_ARRAYS.items():
        expected = (len(indices), *shape(image_size))
        if key not in arrays or arrays[key].dtype != dtype or arrays[key].shape != expected:
            got = "missing" if key not in arrays else f"{arrays[key].dtype} {arrays[key].shape}"
            return f"array {key!r} should be {np.dtype(dtype)} {expected}, got {got}"
        if arrays[key].dtype.kind == "f" and not np.isfinite(arrays[key]).all():
            return f"array {key!r} holds NaN or inf"
    return None


class CachedSynthDataset(torch.utils.data.Dataset):
    """Samples loaded from cache chunks: item i is a sample dict (``SAMPLE_KEYS``).

    Images come back as float in [0, 1] from uint8 (so they differ from ``render_batch`` by at
    most 1/510), depth from float16 (about 0.3 mm at 0.5 m).

    Attributes:
        arrays: dict of numpy arrays over all samples (as stored: image uint8, mask bool, ...).
        directory: the cache folder.
    """

    def __init__(self, arrays: dict, directory: Path):
        self.arrays, self.directory = arrays, directory

    def __len__(self) -> int:
        return len(self.arrays["image"])

    def __getitem__(self, index) -> dict:
        return unbatch(self.batch([index]))[0]

    def __getitems__(self, indices) -> list[dict]:
        """Many items in one read (``DataLoader`` uses this when batching)."""
        return unbatch(self.batch(indices))

    def batch(self, indices) -> dict:
        """The items ``indices`` as one dict of batched tensors (as a DataLoader would collate them).

        Returns:
            dict with the keys of ``SAMPLE_KEYS``, each with the batch axis first (``render_batch``'s).
        """
        a = {key: torch.from_numpy(value[np.asarray(indices, dtype=np.int64)]) for key, value in self.arrays.items()}
        real = torch.ones(len(a["image"]), dtype=torch.bool)          # every field of a synthetic sample is real
        return {"image": a["image"].float() / 255.0, "mask": a["mask"].float(), "depth": a["depth"].float(),
                "keypoints_2d": a["keypoints_2d"], "keypoints_3d": a["keypoints_3d"], "visibility": a["visibility"],
                "K": a["K"], "pose": a["pose"], "betas": a["betas"], "is_right": (a["is_right"] > 0.5).float(),
                "has_3d": real, "has_mask": real.clone(), "has_depth": real.clone(), "has_mano": real.clone()}


class _ChunkJobs(torch.utils.data.Dataset):
    """Item k renders cache chunk ``chunks[k]`` and writes it atomically: (chunk number, arrays).

    A DataLoader over it renders chunks in parallel worker processes. A sample depends only on
    (seed, split, index), so the files are the same whatever the number of workers.
    """

    def __init__(self, chunks, directory, seed, split, config, chunk_size, render_block, fingerprint):
        self.chunks, self.directory, self.seed, self.split, self.config = chunks, directory, seed, split, config
        self.chunk_size, self.render_block, self.fingerprint = chunk_size, render_block, fingerprint

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k) -> tuple[int, dict]:
        from handlib.files import save_npz

        c = self.chunks[k]
        indices = list(range(c * self.chunk_size, (c + 1) * self.chunk_size))
        parts = [render_batch(indices[start:start + self.render_block], self.seed, self.split, self.config)
                 for start in range(0, self.chunk_size, self.render_block)]
        arrays = _to_chunk({key: torch.cat([p[key] for p in parts]) for key in _CHUNK_ARRAYS}, indices,
                           self.fingerprint)
        save_npz(self.directory / f"chunk_{c:05d}.npz", **arrays)
        return c, arrays


def _as_is(item):
    """A DataLoader collate_fn that returns the item unchanged (numpy arrays stay numpy)."""
    return item


def cached_set_directory(split: str, seed: int, image_size: int, cache_dir="data/cache",
                         config: SynthConfig | None = None, chunk_size: int = CHUNK_SIZE) -> Path:
    """The folder of a cached split: named by split, seed, size and a fingerprint of everything that
    changes the files (engine version, knobs, hand model, chunk size)."""
    _check_seed_split(seed, split)
    config = make_config(config, image_size=image_size)
    return _set_directory(cache_dir, split, seed, image_size, _fingerprint(seed, config, chunk_size))


def _set_directory(cache_dir, split: str, seed: int, image_size: int, fingerprint: str) -> Path:
    return Path(cache_dir) / f"synth_{split}_seed{seed}_{image_size}px_{fingerprint}"


def _fingerprint(seed: int, config: SynthConfig, chunk_size: int) -> str:
    text = f"{ENGINE_VERSION}|{seed}|{config.to_json()}|{_hand().fingerprint}|{chunk_size}"
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


def cached_test_set(num_samples: int, seed: int = DEFAULT_TEST_SEED, image_size: int = 128,
                    cache_dir="data/cache", progress: bool = True, config: SynthConfig | None = None,
                    on_corrupt: str = "raise", render_block: int = 32, chunk_size: int = CHUNK_SIZE,
                    workers: int | None = None) -> CachedSynthDataset:
    """The fixed synthetic test set (split "test"), rendered once and cached on disk (``cached_set``).

    Args:
        num_samples: number of samples (each method's profile says how many it is evaluated on:
            the ``test_samples`` of its config, ``handlib.methods``).
        seed: ``DEFAULT_TEST_SEED`` for the course's fixed test set.
        image_size, cache_dir, progress, config, on_corrupt, render_block, chunk_size, workers: as in
            ``cached_set``.

    Returns:
        ``CachedSynthDataset`` of the samples, in index order.
    """
    return cached_set("test", num_samples, seed, image_size, cache_dir, progress, config, on_corrupt,
                      render_block, chunk_size, workers)


def cached_set(split: str, num_samples: int, seed: int = 0, image_size: int = 128, cache_dir="data/cache",
               progress: bool = True, config: SynthConfig | None = None, on_corrupt: str = "raise",
               render_block: int = 32, chunk_size: int = CHUNK_SIZE, workers: int | None = None) -> CachedSynthDataset:
    """Samples ``0 .. num_samples - 1`` of (seed, split), rendered once and cached on disk.

    The fixed test set (``cached_test_set``) and a training set that is read epoch after epoch
    (rendering costs more than a small network's training step on a CPU) both come from here.
    Samples are rendered in chunks of ``chunk_size`` (64) and each chunk is written atomically as a
    compressed .npz (uint8 images, bool masks, float16 depth). An interrupted run resumes: chunks
    already on disk are checked and kept. Chunk c always holds indices 64c .. 64c + 63 (whole
    chunks are rendered), so a smaller set reuses the start of a larger one.

    Args:
        split: "train", "val" or "test".
        num_samples: number of samples (positive int).
        seed: non-negative int.
        image_size: side of the images, pixels.
        cache_dir: parent folder; the set goes to ``cached_set_directory(...)`` inside it.
        progress: show a tqdm progress bar while rendering.
        config: other knobs (``SynthConfig``); default: the defaults.
        on_corrupt: what to do with a chunk that cannot be read or does not hold what it should:
            "raise" (a ValueError naming the file; delete it and call again) or "regenerate".
        render_block: samples rendered per ``render_batch`` call.
        chunk_size: samples per file (part of the folder's fingerprint).
        workers: processes rendering missing chunks in parallel; None = one per CPU core
            (``runtime.available_cpus``); 0 or 1 = render in this process. The files are the same.

    Returns:
        ``CachedSynthDataset`` of the samples, in index order.
    """
    from tqdm import tqdm

    from handlib.files import load_npz
    from handlib.runtime import available_cpus

    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
    _check_seed_split(seed, split)
    if on_corrupt not in ("raise", "regenerate"):
        raise ValueError(f"on_corrupt: expected 'raise' or 'regenerate', got {on_corrupt!r}")
    for name, value in (("chunk_size", chunk_size), ("render_block", render_block)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 0):
        raise ValueError(f"workers: expected None (one per CPU core) or an int >= 0, got {workers!r}")
    config = make_config(config, image_size=image_size)
    fingerprint = _fingerprint(seed, config, chunk_size)
    directory = _set_directory(cache_dir, split, seed, image_size, fingerprint)
    chunks = math.ceil(num_samples / chunk_size)

    loaded, missing = {}, []
    for c in range(chunks):
        path = directory / f"chunk_{c:05d}.npz"
        indices = list(range(c * chunk_size, (c + 1) * chunk_size))
        if not path.exists():
            missing.append(c)
            continue
        try:
            arrays = load_npz(path)
            problem = _check_chunk(arrays, indices, image_size, fingerprint)
        except ValueError as error:
            arrays, problem = None, f"it is not a readable .npz ({error})"
        if problem is None:
            loaded[c] = arrays
        elif on_corrupt == "regenerate":
            missing.append(c)
        else:
            raise ValueError(f"{path}: corrupt cache chunk: {problem}. Delete the file and call again to render it "
                             "anew (or pass on_corrupt='regenerate')")

    workers = min(available_cpus() if workers is None else int(workers), len(missing))
    jobs = _ChunkJobs(missing, directory, seed, split, config, chunk_size, render_block, fingerprint)
    loader = torch.utils.data.DataLoader(jobs, batch_size=None, num_workers=workers if workers > 1 else 0,
                                         collate_fn=_as_is)
    with tqdm(total=chunks * chunk_size, initial=len(loaded) * chunk_size, disable=not (progress and missing),
              unit="sample", desc=f"synthetic {split} set ({directory.name})") as bar:
        for c, arrays in loader:
            loaded[c] = arrays
            bar.update(chunk_size)

    arrays = {key: np.concatenate([loaded[c][key] for c in range(chunks)])[:num_samples] for key in _CHUNK_ARRAYS}
    return CachedSynthDataset(arrays, directory)
