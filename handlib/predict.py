"""Predicting the 3D hand in your own photos: any method, any image size, left or right hands.

``predict_images`` runs a method on image tensors; ``predict_files`` reads image files, writes a
JSON file of the predictions and pictures of them; ``python -m handlib predict`` is its shell
form. One hand per image: each image is a crop around one hand (any size, RGB).

For each image of W x H pixels:

1. A LEFT hand is mirrored (``images.mirror_image``): the course's models know right hands,
   and the model is told ``is_right = 1``.
2. The image is padded to a square and resized to the method's S x S input
   (``images.square_crop_resize``), remembering the map back: u = scale u_crop + x0.
3. The method predicts (``Method.predict``, in eval mode, without gradients), in batches.
4. The 2D keypoints are mapped back to the image's pixels, and for a left hand mirrored back,
   u -> W - u; the 3D keypoints (and vertices) are mirrored back, x -> -x.
5. The 3D hand is made metric and root-relative (wrist at the origin, camera axes, metres):
   a "normalized" prediction (in units of the middle finger's MCP-PIP bone,
   ``skeleton.SCALE_BONE``) is multiplied by that bone's length in the course's hand model
   (``course_scale_bone_length``), so its absolute size is the AVERAGE hand's, not the person's;
   a "camera" prediction (in the method's own camera of its S x S input) has its wrist
   subtracted. Depth and size are not observable from one image without a known hand size.
6. With the photo's intrinsics (fx, fy, cx, cy), the hand is placed in the photo's camera frame
   by the translation T that best reprojects it onto its 2D keypoints
   (``geometry.solve_translation``: fx (X + Tx) - (u - cx)(Z + Tz) = 0, and alike for v).
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch

from handlib.files import atomic_path
from handlib.geometry import solve_translation
from handlib.images import (
    check_image,
    mirror_image,
    mirror_keypoints_2d,
    mirror_points_3d,
    read_image,
    square_crop_resize,
)
from handlib.methods import Method, Prediction
from handlib.render.camera import make_intrinsics
from handlib.skeleton import WRIST

HANDS = ("left", "right")
BATCH_SIZE = 32


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def check_intrinsics(values, name: str = "intrinsics") -> tuple[float, float, float, float]:
    """``values`` as (fx, fy, cx, cy), pixels: 4 finite numbers with positive focal lengths.

    Raises:
        ValueError: "intrinsics: ..." saying what is wrong.
    """
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or len(numbers) != 4:
        raise ValueError(f"{name}: expected 4 numbers FX FY CX CY (focal lengths and principal point, pixels of "
                         f"the image), got {values!r}")
    if not all(math.isfinite(v) for v in numbers):
        raise ValueError(f"{name}: expected finite numbers, got {numbers}")
    if numbers[0] <= 0 or numbers[1] <= 0:
        raise ValueError(f"{name}: the focal lengths fx, fy must be positive (pixels), got fx={numbers[0]}, "
                         f"fy={numbers[1]}")
    return tuple(numbers)


def _is_four_numbers(values) -> bool:
    try:
        return len(values) == 4 and all(np.ndim(v) == 0 and not isinstance(v, (str, bytes)) for v in values)
    except TypeError:
        return False


def _intrinsics_per_image(intrinsics, count: int) -> list:
    """None, one (fx, fy, cx, cy) for all images, or a list of ``count`` of them (or None) -> a list of ``count``."""
    if intrinsics is None:
        return [None] * count
    if isinstance(intrinsics, (torch.Tensor, np.ndarray)):
        intrinsics = intrinsics.tolist()
    if _is_four_numbers(intrinsics):
        return [check_intrinsics(intrinsics)] * count
    if not isinstance(intrinsics, (list, tuple)) or len(intrinsics) != count:
        raise ValueError(f"intrinsics: expected None, one (fx, fy, cx, cy) or a list of {count} of them (one per "
                         f"image), got {intrinsics!r}")
    return [None if values is None else check_intrinsics(values, f"intrinsics[{i}]")
            for i, values in enumerate(intrinsics)]


def _hands_per_image(hand, count: int) -> list[bool]:
    """"left"/"right" for all images, or a list of them -> is_right per image."""
    hands = [hand] * count if isinstance(hand, str) else list(hand)
    if len(hands) != count or any(h not in HANDS for h in hands):
        raise ValueError(f"hand: expected 'left' or 'right' (or a list of {count} of them), got {hand!r}")
    return [h == "right" for h in hands]


@functools.lru_cache(maxsize=None)
def course_scale_bone_length() -> float:
    """The length of the scale bone (middle finger MCP -> PIP, ``skeleton.SCALE_BONE``) of the course's
    hand model at rest (zero pose, zero shape: the average hand), metres, measured as
    ``metrics.scale_bone_length`` measures it. About 0.043 m for the open hand; computed once.
    ``$HANDLIB_MANO_MODEL`` chooses another hand model (``mano.default_model_path``)."""
    from handlib.mano import ManoLayer
    from handlib.metrics import scale_bone_length

    rest_keypoints = ManoLayer()().joints                                # (1, 21, 3)
    return float(scale_bone_length(rest_keypoints)[0])


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------
# Predicting images
# --------------------------------------------------------------------------------------------

def _metric_root_relative(points: torch.Tensor, root: torch.Tensor, frame: str) -> torch.Tensor:
    """Points (N, 3) of a prediction in ``frame`` -> metres, relative to ``root`` (3,) (the predicted wrist)."""
    points = points - root
    return points * course_scale_bone_length() if frame == "normalized" else points


def _one_hand(prediction: Prediction, j: int, transform, is_right: bool, camera) -> dict:
    """Hand j of a prediction, in its original image (the steps 4 to 6 of the module docstring)."""
    keypoints_2d = transform.to_original(prediction.keypoints_2d[j].float())         # (21, 2)
    if not is_right:
        keypoints_2d = mirror_keypoints_2d(keypoints_2d, transform.width)
    hand = {"keypoints_2d": keypoints_2d, "keypoints_3d": None, "frame": None}
    if prediction.keypoints_3d is None:
        return hand
    root = prediction.keypoints_3d[j, WRIST].float()
    keypoints_3d = _metric_root_relative(prediction.keypoints_3d[j].float(), root, prediction.frame)  # (21, 3)
    vertices = None
    if prediction.vertices is not None:
        vertices = _metric_root_relative(prediction.vertices[j].float(), root, prediction.frame)    # (V, 3)
    if not is_right:
        keypoints_3d = mirror_points_3d(keypoints_3d)
        vertices = None if vertices is None else mirror_points_3d(vertices)
    frame = "root_relative"
    if camera is not None:
        fx, fy, cx, cy = camera
        K = make_intrinsics(fx, cx, cy, focal_y=fy, dtype=torch.float64)
        T = solve_translation(keypoints_3d.double(), keypoints_2d.double(), K).float()  # (3,)
        keypoints_3d = keypoints_3d + T
        vertices = None if vertices is None else vertices + T
        frame = "camera"
    hand.update(keypoints_3d=keypoints_3d, frame=frame)
    if vertices is not None:
        hand["vertices"] = vertices
    return hand


def predict_images(method: Method, model: torch.nn.Module, config, images, is_right, intrinsics=None,
                   device=None, batch_size: int = BATCH_SIZE) -> list[dict]:
    """Run a method on photos of hands, one hand per image, and give each answer in its image's pixels.

    See the module docstring for the steps. The model runs in eval mode without gradients (its
    training flag is put back afterwards).

    Args:
        method: the ``Method`` (its ``predict``).
        model: its ``nn.Module``.
        config: the run's config (``config.image_size`` is S, the side of the model's input).
        images: list of (3, H, W) float tensors in [0, 1] (``images.read_image``), any sizes.
        is_right: list of bool, one per image: False for a left hand.
        intrinsics: None; or (fx, fy, cx, cy) of every image, pixels of the image; or a list of
            those (or None) per image.
        device: where the model runs; None = where the model is (else the model is moved there).
        batch_size: images per call of ``method.predict``.

    Returns:
        One dict per image, in order, tensors on the CPU (float32):
            "keypoints_2d": (21, 2) pixels of that image (u right, v down; pixel i covers [i, i + 1)).
            "keypoints_3d": (21, 3) metres, course order; None for a 2D-only method.
            "frame": "camera" (OpenCV camera frame of the photo) when the image has intrinsics,
                else "root_relative" (wrist at the origin, camera axes); None for a 2D-only method.
            "vertices": (V, 3) metres, same frame, only for a method with a mesh.
        Without a known hand size the absolute scale (and so the depth Tz) is the average hand's.

    Raises:
        ValueError: a malformed image, flag or intrinsics (naming which), or a method whose
            prediction does not fit its batch.
    """
    images, is_right = list(images), list(is_right)
    if len(is_right) != len(images):
        raise ValueError(f"is_right: expected one flag per image ({len(images)}), got {len(is_right)}")
    for i, (image, flag) in enumerate(zip(images, is_right)):
        check_image(image, f"images[{i}]")
        if flag not in (True, False):
            raise ValueError(f"is_right[{i}]: expected True (a right hand) or False (a left hand), got {flag!r}")
    cameras = _intrinsics_per_image(intrinsics, len(images))
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if device is not None:
        model.to(device)
    device = _model_device(model)
    size = config.image_size

    results = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = range(start, min(start + batch_size, len(images)))
                crops, transforms = [], []
                for i in chunk:                                     # steps 1 and 2
                    crop, transform = square_crop_resize(images[i] if is_right[i] else mirror_image(images[i]), size)
                    crops.append(crop)
                    transforms.append(transform)
                batch = {"image": torch.stack(crops).to(device),                            # (B, 3, S, S)
                         "is_right": torch.ones(len(chunk), device=device)}                  # (B,) all right now
                prediction = method.predict(model, batch, config)                          # step 3
                if not isinstance(prediction, Prediction) or len(prediction) != len(chunk):
                    raise ValueError(f"method {method.name!r}: predict returned {type(prediction).__name__} "
                                     f"for a batch of {len(chunk)}; expected a Prediction of that batch")
                prediction = prediction.detach("cpu")
                for j, i in enumerate(chunk):                               # steps 4 to 6
                    results.append(_one_hand(prediction, j, transforms[j], is_right[i], cameras[i]))
    finally:
        model.train(was_training)
    return results


# --------------------------------------------------------------------------------------------
# Predicting files
# --------------------------------------------------------------------------------------------

def load_model(name: str, profile: str | None = "full", checkpoint=None, device=None):
    """``handlib.checkpoints.load_model`` (imported when called): (method, model, config) of a trained method."""
    from handlib.checkpoints import load_model as load

    return load(name, profile=profile, checkpoint=checkpoint, device=device)


def _rounded(tensor: torch.Tensor, digits: int) -> list:
    return [[round(float(x), digits) for x in row] for row in tensor.tolist()]


def json_entry(path, hand: dict) -> dict:
    """A hand as JSON: pixels to 1e-4 px, metres to 1e-7 m (0.1 micrometre)."""
    entry = {"image": str(path), "keypoints_2d": _rounded(hand["keypoints_2d"], 4)}
    entry["keypoints_3d"] = None if hand["keypoints_3d"] is None else _rounded(hand["keypoints_3d"], 7)
    entry["frame"] = hand["frame"]
    if hand.get("vertices") is not None:
        entry["vertices"] = _rounded(hand["vertices"], 7)
    return entry


def write_predictions(path, entries: list[dict]) -> Path:
    """Write the entries as a JSON list, one object per line, atomically (``files.atomic_path``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write("[\n" + ",\n".join(json.dumps(entry) for entry in entries) + "\n]\n")
    return path


def write_overlay(path, image: torch.Tensor, keypoints_2d: torch.Tensor) -> Path:
    """Save a PNG of the image with the skeleton drawn on it (``viz.plot2d``'s colours), atomically.

    Args:
        path: the .png to write.
        image: (3, H, W) in [0, 1].
        keypoints_2d: (21, 2) pixels of that image.

    Returns:
        ``path``. The PNG has about the image's size; it is drawn with matplotlib's Agg canvas
        (no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from handlib.viz.plot2d import draw_keypoints_2d, show_image

    check_image(image)
    keypoints_2d = torch.as_tensor(keypoints_2d, dtype=torch.float32)
    _, height, width = image.shape
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 1))
    show_image(ax, image)
    pixel_points = 72.0 / dpi                                   # one pixel, in points
    extent = float((keypoints_2d.amax(0) - keypoints_2d.amin(0)).max().clamp(0, max(width, height)))
    thickness = max(1.0, extent / 60)                           # pixels: thin lines on a small hand
    draw_keypoints_2d(ax, keypoints_2d, linewidth=thickness * pixel_points,
                      markersize=2 * thickness * pixel_points)
    ax.set_axis_off()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def overlay_paths(paths, directory, suffix: str = "_overlay.png") -> list[Path]:
    """DIR/<stem><suffix> per image; a stem seen before gets -2, -3, ... (photos from two folders)."""
    seen, result = {}, []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
        result.append(Path(directory) / f"{name}{suffix}")
    return result


def predict_files(method_name: str, paths, hand="right", intrinsics=None, out=None, overlay_dir=None,
                  checkpoint=None, device=None, profile: str | None = "full", loader=None,
                  batch_size: int = BATCH_SIZE) -> tuple[list[dict], list[dict]]:
    """Predict the hand in each image file; write the predictions as JSON and, if asked, pictures.

    A file that cannot be read is recorded as an error and the others go on.

    Args:
        method_name: "method" or "method:variant" (``handlib.registry``).
        paths: the image files (JPEG, PNG, ...), one hand each.
        hand: "left" or "right" for every image, or a list with one per image.
        intrinsics: None, (fx, fy, cx, cy) for every image, or a list with one (or None) per image;
            pixels of each image (see ``predict_images``).
        out: the JSON file to write (atomically), or None to write nothing.
        overlay_dir: a folder for ``<stem>_overlay.png`` per predicted image, or None.
        checkpoint: a .pt file; None = the method's checkpoint of ``profile`` (``load_model``).
        device: where the model runs (None: CUDA when available).
        profile: whose checkpoint to find when ``checkpoint`` is None.
        loader: ``(name, profile=, checkpoint=, device=) -> (method, model, config)``; None =
            this module's ``load_model`` (looked up when called, so a test can replace it).
        batch_size: images per batch.

    Returns:
        (results, errors): results has one JSON-ready dict per path, in the order given, either
        {"image", "keypoints_2d" (21 x 2), "keypoints_3d" (21 x 3), "frame", ["vertices" (V x 3)]}
        (the fields of ``predict_images``, as lists) or {"image", "error"}; errors are the
        latter. ``out`` holds exactly ``results``; "image" is the path as given.

    Raises:
        ValueError: a malformed hand, intrinsics or method name (an unknown method, from the registry).
        FileNotFoundError: no checkpoint.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("paths: expected at least one image file")
    is_right = _hands_per_image(hand, len(paths))
    cameras = _intrinsics_per_image(intrinsics, len(paths))
    method, model, config = (loader if loader is not None else load_model)(
        method_name, profile=profile, checkpoint=checkpoint, device=device)

    images, errors = {}, {}
    for i, path in enumerate(paths):
        try:
            images[i] = read_image(path)
        except (FileNotFoundError, ValueError) as error:    # ImageError is a ValueError
            message = str(error)
            errors[i] = {"image": str(path), "error": message if str(path) in message else f"{path}: {message}"}

    good = sorted(images)
    hands = predict_images(method, model, config, [images[i] for i in good], [is_right[i] for i in good],
                           intrinsics=[cameras[i] for i in good], batch_size=batch_size) if good else []
    predicted = dict(zip(good, hands))
    results = [errors[i] if i in errors else json_entry(path, predicted[i]) for i, path in enumerate(paths)]
    if out is not None:
        write_predictions(out, results)
    if overlay_dir is not None:
        pictures = overlay_paths(paths, overlay_dir)
        for i in good:
            write_overlay(pictures[i], images[i], predicted[i]["keypoints_2d"])
    return results, [results[i] for i in sorted(errors)]


__all__ = ["BATCH_SIZE", "HANDS", "check_intrinsics", "course_scale_bone_length", "json_entry", "load_model",
           "overlay_paths", "predict_files", "predict_images", "write_overlay", "write_predictions"]
