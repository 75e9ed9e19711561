"""Matplotlib pictures of 2D keypoints: the skeleton drawn on an image, one colour per finger.

Every chapter draws keypoints the same way, so a student learns the colours once:
thumb red, index orange, middle green, ring blue, pinky purple; the wrist is grey.
"""
from __future__ import annotations

import numpy as np
import torch

from handlib.skeleton import BONES, FINGER_KEYPOINTS, FINGERS, NUM_KEYPOINTS

# One colour per finger (thumb to pinky), shared by the 2D and 3D plots.
FINGER_COLORS = {"thumb": "#e6194b", "index": "#f58231", "middle": "#3cb44b", "ring": "#4363d8", "pinky": "#911eb4"}
WRIST_COLOR = "#808080"


def keypoint_colors() -> list[str]:
    """The colour of each of the 21 keypoints (course order): the wrist grey, the rest their finger's."""
    colors = [WRIST_COLOR] * NUM_KEYPOINTS
    for finger, indices in FINGER_KEYPOINTS.items():
        for i in indices:
            colors[i] = FINGER_COLORS[finger]
    return colors


def bone_colors() -> list[str]:
    """The colour of each bone of ``skeleton.BONES``: the colour of its child keypoint's finger."""
    colors = keypoint_colors()
    return [colors[child] for _, child in BONES]


def as_numpy(x, name: str, shape: tuple, dtype=np.float64) -> np.ndarray:
    """A (torch or numpy) array as a contiguous numpy array of ``dtype``, checked against ``shape``
    (None = any size); both plotting modules take their inputs through it."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        x = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected a numeric array of shape {shape}, got {type(x).__name__}") from error
    if x.ndim != len(shape) or any(e is not None and e != s for e, s in zip(shape, x.shape)):
        pretty = "(" + ", ".join("N" if e is None else str(e) for e in shape) + ")"
        hint = "; pass one hand, e.g. x[0]" if x.ndim == len(shape) + 1 else ""
        raise ValueError(f"{name}: expected shape {pretty}, got {x.shape}{hint}")
    return np.ascontiguousarray(x)


def _visibility(visibility, count: int) -> np.ndarray:
    if visibility is None:
        return np.ones(count, dtype=bool)
    visibility = as_numpy(visibility, "visibility", (count,))
    return visibility > 0.5


def draw_keypoints_2d(ax, keypoints, visibility=None, *, linewidth: float = 2.0, markersize: float = 4.0,
                      alpha: float = 1.0, color: str | None = None, label: str | None = None,
                      show_hidden: bool = False):
    """Draw the 21 keypoints and the 20 bones on a matplotlib axes, one colour per finger.

    Args:
        ax: a matplotlib Axes (image coordinates: x right, y down, in pixels).
        keypoints: (21, 2) pixel coordinates (u, v), course order; numpy or torch.
        visibility: (21,) 1 for visible, 0 for hidden keypoints; None: all visible. Hidden
            keypoints and their bones are left out (or drawn dashed with ``show_hidden``).
        linewidth: bone width, points.
        markersize: keypoint marker size, points.
        alpha: opacity.
        color: one colour for the whole hand instead of per-finger colours (to overlay a
            prediction on the ground truth, say).
        label: legend label for the hand.
        show_hidden: draw hidden keypoints as hollow markers and their bones dashed.

    Returns:
        The axes.

    Example:
        >>> import matplotlib.pyplot as plt                                   # doctest: +SKIP
        >>> fig, ax = plt.subplots(); draw_keypoints_2d(ax, keypoints_2d[0])  # doctest: +SKIP
    """
    keypoints = as_numpy(keypoints, "keypoints", (NUM_KEYPOINTS, 2))
    visible = _visibility(visibility, NUM_KEYPOINTS)
    colors = [color] * NUM_KEYPOINTS if color is not None else keypoint_colors()
    for parent, child in BONES:                     # a bone takes the colour of its child keypoint
        both = visible[parent] and visible[child]
        if both or show_hidden:
            ax.plot(keypoints[[parent, child], 0], keypoints[[parent, child], 1], color=colors[child],
                    linewidth=linewidth, alpha=alpha, linestyle="-" if both else "--", solid_capstyle="round")
    for i in range(NUM_KEYPOINTS):
        if visible[i] or show_hidden:
            ax.plot(keypoints[i, 0], keypoints[i, 1], "o", color=colors[i], markersize=markersize, alpha=alpha,
                    markerfacecolor=colors[i] if visible[i] else "none")
    if label is not None:  # one legend entry for the whole hand
        ax.plot([], [], "-o", color=color or WRIST_COLOR, label=label, linewidth=linewidth, markersize=markersize)
    return ax


def draw_mesh_2d(ax, vertices_2d, faces, *, color: str = "white", linewidth: float = 0.3, alpha: float = 0.6,
                 label: str | None = None, filled: bool = False):
    """Draw a hand mesh's projected triangles (wireframe) on a matplotlib axes, over an image.

    Args:
        ax: a matplotlib Axes (image coordinates, pixels).
        vertices_2d: (V, 2) projected vertices, pixels (u, v); numpy or torch.
        faces: (F, 3) vertex indices of the triangles.
        color, linewidth, alpha: of the wireframe's edges (with ``filled``: of the triangles).
        label: legend label for the mesh.
        filled: paint the triangles instead of their edges: the mesh's silhouette, to compare with a
            mask (give ``alpha=1``: overlapping translucent triangles would darken each other).

    Returns:
        The matplotlib ``PolyCollection`` of the triangles.
    """
    from matplotlib.collections import PolyCollection

    vertices_2d = as_numpy(vertices_2d, "vertices_2d", (None, 2))
    faces = as_numpy(faces, "faces", (None, 3), dtype=np.int64)
    if faces.min() < 0 or faces.max() >= len(vertices_2d):
        raise ValueError(f"faces: expected vertex indices in [0, {len(vertices_2d)}), got {faces.min()} to "
                         f"{faces.max()}")
    triangles = PolyCollection(vertices_2d[faces], facecolors=color if filled else "none",
                               edgecolors="none" if filled else color, linewidths=0.0 if filled else linewidth,
                               alpha=alpha, label=label)
    ax.add_collection(triangles)
    return triangles


def image_to_numpy(image) -> np.ndarray:
    """An image as an (H, W, 3) or (H, W) float array in [0, 1] for ``imshow``.

    Args:
        image: torch (3, H, W) or (1, H, W) in [0, 1] (handlib's layout), or numpy (H, W, 3),
            (H, W) float in [0, 1] or uint8.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"image: expected (3, H, W) tensor or (H, W, 3) / (H, W) array, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def show_image(ax, image, **imshow_options):
    """``ax.imshow`` in handlib's pixel convention: pixel column i covers [i, i + 1) (centre i + 0.5).

    matplotlib's default puts pixel centres at integers, which would draw keypoints from the renderer
    or a dataset half a pixel off; ``extent=(0, W, H, 0)`` makes the axes' units handlib's pixels.

    Args:
        ax: matplotlib Axes.
        image: anything ``image_to_numpy`` takes.
        imshow_options: passed on to ``imshow`` (a grey colormap is the default for one channel).

    Returns:
        The ``AxesImage``.
    """
    picture = image_to_numpy(image)
    height, width = picture.shape[:2]
    imshow_options.setdefault("cmap", "gray" if picture.ndim == 2 else None)
    shown = ax.imshow(picture, extent=(0, width, height, 0), **imshow_options)
    ax.set_xlim(0, width)          # fixed, so keypoints drawn later outside the image do not rescale it
    ax.set_ylim(height, 0)
    return shown


def show_image_with_keypoints(image, keypoints=None, visibility=None, *, ax=None, title: str | None = None,
                              prediction=None, figsize=(4, 4)):
    """Show an image with its keypoints (and optionally a prediction drawn in one colour on top).

    Args:
        image: (3, H, W) tensor in [0, 1], or an (H, W, 3) array.
        keypoints: (21, 2) pixels, course order, or None for the image alone.
        visibility: (21,) or None.
        ax: axes to draw on; None makes a new figure.
        title: axes title.
        prediction: (21, 2) pixels, drawn in white over the keypoints, or None.
        figsize: size of a new figure, inches.

    Returns:
        The axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    show_image(ax, image)
    if keypoints is not None:
        draw_keypoints_2d(ax, keypoints, visibility)
    if prediction is not None:
        draw_keypoints_2d(ax, prediction, color="white", linewidth=1.0, markersize=2.5, alpha=0.9)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


__all__ = ["FINGER_COLORS", "FINGERS", "WRIST_COLOR", "bone_colors", "draw_keypoints_2d", "image_to_numpy",
           "keypoint_colors", "show_image_with_keypoints"]
