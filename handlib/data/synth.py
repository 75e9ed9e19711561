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
3. **Looks** (domain randomisation). Skin albedo from the 10 tones of the Monk Skin Tone scale
   (see ``SKIN_TONES``), with smooth per-vertex variation and lighter palms; Lambert shading with a
   random light direction, colour, intensity and ambient term, and a faint specular sheen;
   procedural backgrounds (gradients, smooth colour noise, multi-octave noise, stripes and checks,
   random shapes, some of them skin-coloured so that a mask is not just "the skin-coloured
   pixels"), rendered at half resolution (a defocused background); distractor occluders in front of
   or between the fingers; colour jitter, blur and sensor noise.
4. **Labels.** ``keypoints_2d = project(keypoints_3d, K)``; ``visibility`` (see ``VISIBILITY_TOLERANCE``);
   ``mask`` = hand pixels not covered by an occluder; ``depth`` = the hand's depth there.

Determinism. Each sample's randomness comes only from (seed, split, index): a torch.Generator
seeded with ``sample_seed(seed, split, index)`` draws its camera, looks and noise, and its pose
and orientation are row ``index % POSE_BLOCK`` of one prior call for block ``index // POSE_BLOCK``
(the prior is much faster in batches; blocks are cached). So a sample is the same whether it is
rendered alone or in any batch, in any worker, in any order; the batch only makes it faster.

Knobs for the challenges of chapter 0: ``occlusion`` (0 none .. 1 heavy), ``image_size``,
``viewpoint`` ("any", "palm_towards", "palm_away"), ``pose_kind`` (a grasp of the prior or
"mixture"), ``hand_side`` ("right"; "left" or "both" mirror samples with ``mirror_sample``).

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

ENGINE_VERSION = 1  # bump when the same (seed, split, index) would render differently: caches use it
SPLITS = {"train": 0, "val": 1, "test": 2}
VIEWPOINTS = {"any": "any", "palm_towards": "towards", "palm_away": "away"}
HAND_SIDES = ("right", "left", "both")
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

_UNIFORMS_PER_SAMPLE = 512  # uniforms drawn per sample, in sections (columns) per stage:
_SECTIONS = {"hand": (0, 32), "camera": (32, 64), "looks": (64, 128), "background": (128, 320),
             "occluders": (320, 416), "finish": (416, 480), "side": (480, 512)}
_BACKGROUND_SHAPES = 6
_GAMMA_LEVELS = 1024
_MAX_OCCLUDERS = 3
_NOISE_GRIDS = ((3, 4), (1, 8), (1, 16))  # (channels, side) of the background's noise octaves


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
        background: "procedural" (random textures and shapes) or "black".
    """

    image_size: int = 128
    occlusion: float = 0.3
    viewpoint: str = "any"
    pose_kind: str = "mixture"
    hand_side: str = "right"
    distance: tuple = (0.3, 0.7)
    margin: tuple = (1.25, 1.6)
    jitter: float = 0.08
    background: str = "procedural"

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
        if self.background not in ("procedural", "black"):
            raise ValueError(f"background: expected 'procedural' or 'black', got {self.background!r}")
        return self

    def to_json(self) -> str:
        """The knobs as canonical JSON (for cache fingerprints)."""
        return json.dumps({key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()},
                          sort_keys=True)


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
    return _Hand(layer, faces, rest, palm_side, prior, digest.hexdigest())


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


def _random_numbers(indices, seed, split, image_size):
    """Per sample: the uniform table, the background's noise grids, and the pixel noise."""
    grid_count = sum(c * s * s for c, s in _NOISE_GRIDS)
    uniforms, grids, pixels = [], [], []
    for index in indices:
        generator = torch.Generator().manual_seed(sample_seed(seed, split, index))
        uniforms.append(torch.rand(_UNIFORMS_PER_SAMPLE, generator=generator))
        grids.append(torch.randn(grid_count, generator=generator))
        pixels.append(torch.randn(3, image_size, image_size, generator=generator))
    return _Draws(torch.stack(uniforms)), torch.stack(grids), torch.stack(pixels)


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


def _skin_albedo(draws: _Draws, hand: _Hand) -> torch.Tensor:
    """(B, V, 3) per-vertex albedo: a skin tone, smooth variation over the hand, lighter palms."""
    tone = skin_colors(draws.uniform(1))[:, 0]  # (B, 3)
    redness = draws.uniform(1, low=-0.04, high=0.06)  # a warmer or cooler tint
    tone = (tone + redness * torch.tensor([1.0, -0.3, -0.6], dtype=tone.dtype)).clamp(0, 1)
    # Smooth variation: three random plane waves over the rest hand, about 4 cm long.
    directions = F.normalize(draws.normal(3, 3), dim=-1)  # (B, 3, 3)
    phase = draws.uniform(3, high=2 * math.pi)
    waves = torch.sin(torch.einsum("vd,bkd->bvk", hand.rest_vertices.double(), directions) * (2 * math.pi / 0.04) + phase[:, None])
    variation = 1 + 0.05 * waves.mean(-1, keepdim=True)  # (B, V, 1)
    palm = draws.uniform(1, low=0.1, high=0.35)  # how much lighter the palm is (more for darker skin)
    lighter = tone + (torch.tensor([0.93, 0.78, 0.70], dtype=tone.dtype) - tone).clamp(min=0) * palm
    albedo = tone[:, None] + (lighter - tone)[:, None] * hand.palm_side.double()[None, :, None]
    return (albedo * variation).clamp(0, 1).float()


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
# The batch


def render_batch(indices, seed: int = 0, split: str = "train", config: SynthConfig | None = None, *,
                 device=None, return_layers: bool = False, **knobs) -> dict:
    """Render synthetic samples (seed, split, index) for many indices at once.

    Args:
        indices: a number n (indices 0 .. n-1) or a list / tensor of non-negative indices.
        seed: non-negative int; the same seed gives the same samples.
        split: "train", "val" or "test" (independent streams of samples).
        config: a ``SynthConfig``; ``knobs`` (image_size, occlusion, viewpoint, pose_kind,
            hand_side, distance, margin, jitter, background) override its fields.
        device: where to rasterize (default CPU); results come back on that device.
        return_layers: also return "hand_mask" (B, H, W), the hand before occluders,
            "occluder_mask" (B, H, W), occluder pixels in front of everything, and
            "background" (B, 3, H, W), "vertices" (B, V, 3) the posed mesh in the camera frame,
            metres (faces: ``hand_faces()``).

    Returns:
        dict of batched tensors with the keys of ``handlib.data.sample.SAMPLE_KEYS``
        (image (B, 3, S, S) in [0, 1], mask (B, S, S), depth (B, S, S) metres, keypoints_2d
        (B, 21, 2) px, keypoints_3d (B, 21, 3) metres camera frame, visibility (B, 21), K (B, 3, 3),
        pose (B, 48), betas (B, 10), is_right (B,), has_* (B,) bool), plus the layers if asked.
        Row i is sample ``indices[i]`` whatever the other indices are.

    Example:
        >>> batch = render_batch([0, 5], seed=1, image_size=64, occlusion=0.5)   # doctest: +SKIP
    """
    config = make_config(config, **knobs)
    _check_seed_split(seed, split)
    indices = _check_indices(indices)
    device = torch.device("cpu") if device is None else torch.device(device)
    hand = _hand()
    size = config.image_size
    batch = len(indices)
    draws, grids, pixel_noise = _random_numbers(indices, seed, split, size)

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
    vertices, joints = (vertices + shift).float(), (joints + shift).float()

    # The crop, in normalised image coordinates (focal length 1, principal point 0).
    unit_camera = make_intrinsics(1.0, 0.0, 0.0)
    normalised = joints[..., :2] / joints[..., 2:]  # (B, 21, 2)
    low, high = normalised.amin(1), normalised.amax(1)
    side = (high - low).amax(-1) * draws.uniform(low=config.margin[0], high=config.margin[1]).float()[:, 0]  # (B,)
    middle = (low + high) / 2 + draws.uniform(2, low=-config.jitter, high=config.jitter).float() * side[:, None]
    K = crop_intrinsics(unit_camera, (middle[:, 0] - side / 2, middle[:, 1] - side / 2, side), size)  # (B, 3, 3)
    keypoints_2d = project_points(joints, K)  # (B, 21, 2) pixels

    # 3. The hand's picture: rasterize (back faces culled: the capped mesh is closed), then shade.
    skin = _skin_albedo(draws.seek("looks"), hand)
    light = F.normalize(torch.cat([draws.uniform(2, low=-1.0, high=1.0), draws.uniform(1, low=-1.0, high=0.2)], 1),
                        dim=-1).float()  # (B, 3) towards the light: from the camera's side, mostly
    ambient = draws.uniform(low=0.2, high=0.55)[:, 0]
    diffuse = ((1 - ambient) * draws.uniform(low=0.75, high=1.25)[:, 0]).float()
    ambient = ambient.float()
    specular = draws.uniform(low=0.0, high=0.12)[:, 0].float()
    hue = draws.uniform(1, low=-0.05, high=0.12) % 1.0  # warm to slightly cool
    light_color = hsv_to_rgb(torch.cat([hue, draws.uniform(1, high=0.25), torch.ones(batch, 1, dtype=hue.dtype)], 1))
    light_color = (light_color / light_color.amax(-1, keepdim=True)).float()
    faces = hand.faces.to(device)
    with torch.no_grad():
        verts = vertices.to(device)
        fragments = rasterize(verts, faces, K.to(device), size, cull_backfaces=True)
        # Per-sample light, colour, ambient, diffuse and sheen; per-pixel arithmetic only (see _Draws).
        colors = shade_covered(verts, faces, fragments, skin.to(device), light.to(device), ambient.to(device),
                               diffuse.to(device), specular.to(device), light_color.to(device))  # (N, 3)
    hand_depth = fragments.depth.cpu()  # (B, S, S), 0 off the hand
    hand_mask = fragments.mask.cpu()
    hand_rgb = torch.zeros(batch * size * size, 3).index_put((fragments.pixel_index.cpu(),), colors.cpu())
    hand_rgb = hand_rgb.view(batch, size, size, 3).permute(0, 3, 1, 2)

    # 4. Background, then the occluders in front (far to near), each with its own depth.
    if config.background == "procedural":
        background = procedural_backgrounds(draws.seek("background"), grids, size)
    else:
        background = torch.zeros(batch, 3, size, size)
    image = torch.where(hand_mask[:, None], hand_rgb, background)
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

    # Where each keypoint falls, and the hand surface there (0 where the pixel is off the hand).
    column, row = keypoints_2d.unbind(-1)
    inside = pixels_in_image(keypoints_2d, size)  # (B, 21)
    pixel = (row.floor().clamp(0, size - 1) * size + column.floor().clamp(0, size - 1)).long()  # (B, 21)
    surface = hand_depth.flatten(1).gather(1, pixel)  # (B, 21)
    z = joints[..., 2]
    nearest = torch.where(surface > 0, surface, z)  # the nearest thing of the hand along the keypoint's ray

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
        covers = alpha * ((hand_depth[rows] == 0) | (depth_j < hand_depth[rows]))  # (M, S, S)
        shading = 1 + ((x - occluder_centre[rows, j, 0, None, None, None]) * tilt[rows, j, 0, None, None, None]
                       + (y - occluder_centre[rows, j, 1, None, None, None]) * tilt[rows, j, 1, None, None, None])
        fill = (occluder_color[rows, j, :, None, None] * shading).clamp(0, 1)  # (M, 3, S, S)
        image[rows] = image[rows] * (1 - covers[:, None]) + fill * covers[:, None]
        in_front[rows] |= covers > 0.5
        over = alpha.flatten(1).gather(1, pixel[rows]) > 0.5  # (M, 21)
        covered[rows] |= over & (occluder_depth[rows, j, None] < nearest[rows])
    mask = hand_mask & ~in_front
    depth = torch.where(mask, hand_depth, torch.zeros(()))

    # 5. Visibility: inside the image, no occluder over it, no hand surface more than the tolerance in front.
    unoccluded_by_hand = (surface == 0) | (surface >= z - torch.tensor(VISIBILITY_TOLERANCE))
    visibility = (inside & unoccluded_by_hand & ~covered).float()

    # 6. The camera's look: exposure and white balance, blur, noise.
    gain = (draws.seek("finish").uniform(3, low=0.94, high=1.06) * draws.uniform(1, low=0.8, high=1.15)).float()
    gamma = draws.uniform(1, low=0.8, high=1.25)
    levels = torch.linspace(0, 1, _GAMMA_LEVELS, dtype=torch.float64)
    curve = (levels ** gamma).float()  # (B, L): the gamma curve as a table (no per-pixel pow: see _Draws)
    level = ((image.clamp(0, 1) * gain[..., None, None]).clamp(0, 1) * (_GAMMA_LEVELS - 1)).round().long()
    image = curve.gather(1, level.flatten(1)).view_as(image)
    sigma = torch.where(draws.uniform(1)[:, 0] < 0.3, draws.uniform(1, low=0.6, high=1.3)[:, 0],
                        draws.uniform(1, low=0.2, high=0.55)[:, 0])
    image = _blur(image, sigma)
    image = (image + draws.uniform(1, high=0.03).float()[..., None, None] * pixel_noise).clamp(0, 1)

    result = {
        "image": image, "mask": mask.float(), "depth": depth, "keypoints_2d": keypoints_2d, "keypoints_3d": joints,
        "visibility": visibility, "K": K, "pose": torch.cat([orientation, finger_pose], 1), "betas": betas,
        "is_right": torch.ones(batch), "has_3d": torch.ones(batch, dtype=torch.bool),
        "has_mask": torch.ones(batch, dtype=torch.bool), "has_depth": torch.ones(batch, dtype=torch.bool),
        "has_mano": torch.ones(batch, dtype=torch.bool),
    }
    if return_layers:
        result.update(hand_mask=hand_mask.float(), occluder_mask=in_front.float(), background=background,
                      vertices=vertices)
    mirrored = draws.seek("side").uniform(1)[:, 0] < {"right": 0.0, "left": 1.0, "both": 0.5}[config.hand_side]
    if mirrored.any():
        result = _mirror_rows(result, mirrored)
    return {key: value.to(device) for key, value in result.items()}


def _mirror_rows(batch: dict, rows: torch.Tensor) -> dict:
    """Mirror the chosen rows with ``mirror_sample`` (right hands become left hands)."""
    from handlib.data.datasets import mirror_sample

    out = {key: value.clone() for key, value in batch.items()}
    for i in rows.nonzero().flatten().tolist():
        flipped = mirror_sample({key: batch[key][i] for key in SAMPLE_KEYS})
        for key in SAMPLE_KEYS:
            out[key][i] = flipped[key]
        for key in ("hand_mask", "occluder_mask", "background"):
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
