"""Helpers shared by the dataset loaders: where each dataset comes from, and reading its files
with errors that name the file and say what to do."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset is published and under which terms (shown in every 'not found' error)."""

    name: str
    url: str
    licence: str


FREIHAND = DatasetSource("FreiHAND", "https://lmb.informatik.uni-freiburg.de/projects/freihand/",
                         "research purposes only, no commercial use")
RHD = DatasetSource("RHD (Rendered Hand Pose Dataset)",
                    "https://lmb.informatik.uni-freiburg.de/resources/datasets/RenderedHandposeDataset.en.html",
                    "research purposes only, no commercial use")
STB = DatasetSource("STB (Stereo Hand Pose Tracking Benchmark)",
                    "https://github.com/zhjwustc/icip17_stereo_hand_pose_dataset",
                    "see the dataset's page; treat it as research use only")
INTERHAND = DatasetSource("InterHand2.6M", "https://mks0601.github.io/InterHand2.6M/",
                          "CC-BY-NC 4.0 (non-commercial)")
CMU_HANDS = DatasetSource("CMU Panoptic hand keypoints", "http://domedb.perception.cs.cmu.edu/handdb.html",
                          "CMU's terms, research use")


def _where_from(source: DatasetSource) -> str:
    return (f"{source.name} is not shipped with handlib: download it from {source.url} "
            f"(licence: {source.licence}).")


def require_dir(path, source: DatasetSource, expected: str = "") -> Path:
    """Return ``path`` as a Path if it is a folder; else a FileNotFoundError saying where the dataset comes from."""
    path = Path(path)
    if not path.is_dir():
        hint = f" It should hold {expected}." if expected else ""
        raise FileNotFoundError(f"{path}: no such folder.{hint} {_where_from(source)}")
    return path


def require_file(path, source: DatasetSource) -> Path:
    """Return ``path`` as a Path if it is a file; else a FileNotFoundError saying where the dataset comes from."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. {_where_from(source)}")
    return path


def read_json(path, source: DatasetSource):
    """Parse a json file; a missing file is a FileNotFoundError, a corrupt one a ValueError naming it."""
    path = require_file(path, source)
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a valid json file ({error}); the file is corrupt or truncated, "
                         f"download it again from {source.url}") from error


def read_image(path, source: DatasetSource, mode: str | None = "RGB") -> np.ndarray:
    """Read an image file with Pillow.

    Args:
        path: a .png / .jpg file.
        source: the dataset, for the error message.
        mode: Pillow mode to convert to ("RGB" gives (H, W, 3) uint8), or None to keep the
            stored values (label masks, RGB-coded depth).

    Returns:
        numpy array, (H, W, 3) uint8 for mode "RGB", else as stored.
    """
    from PIL import Image, UnidentifiedImageError

    path = require_file(path, source)
    try:
        with Image.open(path) as image:
            if mode is not None:
                image = image.convert(mode)
            return np.array(image)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: not a readable image ({error}); the file is corrupt or truncated, "
                         f"download it again from {source.url}") from error


def read_mat(path, source: DatasetSource, variable: str) -> np.ndarray:
    """Read one variable of a MATLAB .mat file (scipy.io.loadmat), with errors naming the file."""
    import scipy.io

    path = require_file(path, source)
    try:
        content = scipy.io.loadmat(str(path), variable_names=[variable])
    except Exception as error:  # scipy raises ValueError, TypeError, OSError, MatReadError, ...
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({error}); download it again "
                         f"from {source.url}") from error
    if variable not in content:
        raise ValueError(f"{path}: has no variable {variable!r}; expected a {source.name} label file")
    return content[variable]


def as_array(value, shape: tuple, name: str, path) -> np.ndarray:
    """``np.asarray(value, float64)`` checked against ``shape`` (-1 = any), with an error naming the file."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {name} is not numeric ({error})") from error
    if array.ndim != len(shape) or any(s not in (-1, t) for s, t in zip(shape, array.shape)):
        expected = "(" + ", ".join("N" if s == -1 else str(s) for s in shape) + ")"
        raise ValueError(f"{path}: {name} has shape {array.shape}, expected {expected}")
    return array


def intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The 3x3 pinhole matrix K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection in numpy: (N, 3) camera frame -> (N, 2) pixels, u = fx x/z + cx."""
    uvw = points @ K.T
    return uvw[:, :2] / uvw[:, 2:]
