"""The real hand samples that come with the course: the repository's ``data/samples/`` folder.

A few images of public datasets, kept byte for byte as mmpose publishes them in its test data
(provenance and licences in ``data/samples/README.md``). The tests check the loaders of
``handlib.data.datasets`` on them, and chapters 0 and 2 show them to make the synthetic-to-real
gap visible. Their licences are research / non-commercial: never train on them.

This module is the one place that names the folder (``SAMPLES_DIR``) and the one way to open its
samples (``real_samples``), through the dataset loaders:

==================== ======================= ===================== ======================
dataset              files                   loader                what a sample has
==================== ======================= ===================== ======================
RHD (rendered)       rhd/                    RHDCoco               2D, 3D, K
FreiHAND             freihand/               FreiHANDKeypoints2D   2D
CMU Panoptic hands   panoptic/               CMUHands2D            2D
InterHand2.6M        interhand2.6m/          InterHand26M          2D (projected), 3D, K
==================== ======================= ===================== ======================

``freihand_official_files/evaluation_K.json`` (FreiHAND's evaluation intrinsics, no images) is
read by the tests only.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from handlib.data import datasets
from handlib.data.datasets._common import CMU_HANDS, FREIHAND, INTERHAND, RHD, DatasetSource, require_file

SAMPLES_DIR = Path(__file__).resolve().parents[2] / "data" / "samples"


class RealDataset(NamedTuple):
    """One dataset of ``data/samples/``: how to open it with its loader.

    Attributes:
        name: the dataset's name as the chapters print it.
        loader: class name in ``handlib.data.datasets``.
        files: the loader's annotation files, relative to the samples folder; the images lie
            beside the first one.
        source: where the dataset comes from and its licence.
        options: keyword arguments for the loader (left hands are kept left).
    """

    name: str
    loader: str
    files: tuple[str, ...]
    source: DatasetSource
    options: dict

    @property
    def licence(self) -> str:
        return self.source.licence


REAL_DATASETS = (
    RealDataset("RHD (rendered)", "RHDCoco", ("rhd/test_rhd.json",), RHD, {"mirror_left": False}),
    RealDataset("FreiHAND", "FreiHANDKeypoints2D", ("freihand/test_freihand.json",), FREIHAND, {}),
    RealDataset("CMU Panoptic hands", "CMUHands2D", ("panoptic/test_panoptic.json",), CMU_HANDS,
                {"mirror_left": False}),
    RealDataset("InterHand2.6M", "InterHand26M", ("interhand2.6m/test_interhand2.6m_data.json",
                                                  "interhand2.6m/test_interhand2.6m_camera.json",
                                                  "interhand2.6m/test_interhand2.6m_joint_3d.json"),
                INTERHAND, {"mirror_left": False}),
)


def require_samples(folder=None) -> Path:
    """The samples folder, checked.

    Args:
        folder: a folder in the layout of ``data/samples/``; default ``SAMPLES_DIR``.

    Returns:
        The folder as a Path.

    Raises:
        FileNotFoundError: the folder is missing (handlib installed without its repository, or
            a partial copy), with what to do.
    """
    folder = SAMPLES_DIR if folder is None else Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such folder. The real hand samples live in the repository's data/samples/ folder, "
            "which a package install does not include: clone the course's git repository (it holds "
            "data/samples/) and install handlib from the clone (make setup, or pip install -e .).")
    return folder


def real_samples(size: int = 128, folder=None) -> list[dict]:
    """Every real sample of the samples folder, cropped around the hand with ``crop_to_hand``.

    The datasets come in the order of ``REAL_DATASETS``, and each one's samples in its loader's
    order (one per annotated hand: an InterHand2.6M frame with two hands gives two samples).
    Left hands stay left (``is_right`` 0): mirror them with ``mirror_sample`` where a method
    expects right hands.

    Args:
        size: side of the crops, pixels.
        folder: a folder in the layout of ``data/samples/``; default ``SAMPLES_DIR``.

    Returns:
        A list of dicts ``{"name": str, "dataset": str, "licence": str, "sample": dict}``: ``name``
        is the image's path in the folder (e.g. ``"freihand/00000355.jpg"``), followed by
        ``" (left hand)"`` / ``" (right hand)"`` when the image holds several annotated hands;
        ``sample`` has the keys of ``handlib.data.sample.SAMPLE_KEYS``, image (3, size, size),
        keypoints_2d (21, 2) px in the crop, keypoints_3d (21, 3) metres where the dataset has 3D.

    Raises:
        FileNotFoundError: the folder or one of its files is missing.
        ValueError: ``size`` is not a positive integer.

    Example:
        >>> samples = real_samples(size=64)                                      # doctest: +SKIP
        >>> samples[0]["name"], samples[0]["sample"]["image"].shape               # doctest: +SKIP
        ('rhd/00111.png', torch.Size([3, 64, 64]))
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive integer number of pixels, got {size!r}")
    folder = require_samples(folder)
    samples = []
    for dataset in REAL_DATASETS:
        paths = [require_file(folder / name, dataset.source) for name in dataset.files]
        image_dir = paths[0].parent                                  # images beside the annotations
        data = getattr(datasets, dataset.loader)(*paths, image_dir=image_dir, **dataset.options)
        names = [f"{image_dir.name}/{item[0]['file_name']}" for item in data.items]
        for index, name in enumerate(names):
            sample = datasets.crop_to_hand(data[index], size=size)
            if names.count(name) > 1:
                name += " (right hand)" if sample["is_right"] else " (left hand)"
            samples.append({"name": name, "dataset": dataset.name, "licence": dataset.licence, "sample": sample})
    return samples


__all__ = ["REAL_DATASETS", "SAMPLES_DIR", "RealDataset", "real_samples", "require_samples"]
