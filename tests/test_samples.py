"""Tests of handlib.data.samples: the real samples that ship in the repository's data/samples/.

Every sample is checked against its source file: which hand it is (RHD's ``hand_type``, CMU's
``_l`` / ``_r`` file names, InterHand2.6M's per-hand annotations), which datasets have 3D, and
that the crop keeps the 3D keypoints projecting onto the 2D ones.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from handlib.data.datasets import mirror_sample
from handlib.data.sample import SAMPLE_KEYS
from handlib.data.samples import REAL_DATASETS, SAMPLES_DIR, real_samples, require_samples
from handlib.geometry import project_points
from handlib.viz.challenges import load_real_examples

SIZE = 96   # not the default 128, so that the size argument is seen to be used

# What the loaders give, counted by hand from the json files: one sample per annotated hand.
EXPECTED_COUNTS = {"RHD (rendered)": 3, "FreiHAND": 8, "CMU Panoptic hands": 4, "InterHand2.6M": 6}
EXPECTED_LEFT = {
    "rhd/00111.png", "rhd/01111.png",                                   # hand_type "left"
    "panoptic/005880453_01_l.jpg", "panoptic/ex2_2.flv_000040_l.jpg",   # CMU's _l files
    "interhand2.6m/image69148.jpg (left hand)", "interhand2.6m/image44669.jpg (left hand)",
    "interhand2.6m/image29590.jpg",                                     # hand_type "left"
}
WITH_3D = {"RHD (rendered)", "InterHand2.6M"}


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return real_samples(size=SIZE)


def image_file(name: str) -> str:
    """The image path in a sample's name ("freihand/00000355.jpg", or "rhd/x.png (left hand)" -> "rhd/x.png")."""
    return name.split(" (")[0]


def test_samples_folder_is_in_the_repository_with_its_licence_and_readme():
    assert SAMPLES_DIR.is_dir()
    assert SAMPLES_DIR.parent.name == "data" and (SAMPLES_DIR.parents[1] / "handlib").is_dir()
    assert require_samples() == SAMPLES_DIR
    assert "Apache License" in (SAMPLES_DIR / "LICENSE_mmpose_apache2.txt").read_text()
    readme = (SAMPLES_DIR / "README.md").read_text()
    for folder in ("rhd/", "freihand/", "interhand2.6m/", "panoptic/", "freihand_official_files/"):
        assert f"`{folder}" in readme
    assert "CC-BY-NC 4.0" in readme and "Do not train on them" in readme


def test_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="data/samples/.*clone"):
        require_samples(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        real_samples(folder=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="test_rhd.json: no such file"):
        real_samples(folder=tmp_path)                     # a folder without the samples' files


@pytest.mark.parametrize("size", [0, -3, 12.5, True])
def test_size_must_be_a_positive_integer(size):
    with pytest.raises(ValueError, match="size"):
        real_samples(size=size)


def test_every_sample_is_returned_once(samples):
    assert Counter(entry["dataset"] for entry in samples) == EXPECTED_COUNTS
    assert sum(EXPECTED_COUNTS.values()) == len(samples) == 21
    names = [entry["name"] for entry in samples]
    assert len(set(names)) == len(names)
    assert [entry["dataset"] for entry in samples] == sorted(
        (entry["dataset"] for entry in samples), key=[d.name for d in REAL_DATASETS].index)
    for entry in samples:
        assert set(entry) == {"name", "dataset", "licence", "sample"}
        assert (SAMPLES_DIR / image_file(entry["name"])).is_file()
        assert any(term in entry["licence"].lower() for term in ("research", "non-commercial"))
    # every image of the folder is used, and only those
    images = {p.relative_to(SAMPLES_DIR).as_posix() for p in SAMPLES_DIR.glob("*/*") if p.suffix in (".jpg", ".png")}
    assert {image_file(name) for name in names} == images


def test_samples_are_cropped_with_finite_keypoints_inside(samples):
    for entry in samples:
        sample = entry["sample"]
        assert set(sample) == set(SAMPLE_KEYS), entry["name"]
        assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
        assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
        keypoints = sample["keypoints_2d"]
        assert keypoints.shape == (21, 2) and torch.isfinite(keypoints).all(), entry["name"]
        visible = sample["visibility"] > 0.5
        assert visible.sum() >= 15, entry["name"]           # the crop holds the hand
        assert ((keypoints[visible] >= 0) & (keypoints[visible] <= SIZE)).all(), entry["name"]


def test_left_and_right_hands_are_as_the_sources_say(samples):
    is_right = {entry["name"]: bool(entry["sample"]["is_right"]) for entry in samples}
    assert {name for name, right in is_right.items() if not right} == EXPECTED_LEFT
    # the same, read from the source files
    rhd = json.loads((SAMPLES_DIR / "rhd" / "test_rhd.json").read_text())
    files = {image["id"]: image["file_name"] for image in rhd["images"]}
    for annotation in rhd["annotations"]:
        assert is_right[f"rhd/{files[annotation['image_id']]}"] == (annotation["hand_type"] == "right")
    for name, right in is_right.items():
        if name.startswith("panoptic/"):
            assert right == name.endswith("_r.jpg")
        if name.startswith("freihand/"):
            assert right                                   # FreiHAND has right hands only
    interhand = json.loads((SAMPLES_DIR / "interhand2.6m" / "test_interhand2.6m_data.json").read_text())
    files = {image["id"]: image["file_name"] for image in interhand["images"]}
    for annotation in interhand["annotations"]:
        name = f"interhand2.6m/{files[annotation['image_id']]}"
        if annotation["hand_type"] == "interacting":
            assert is_right[f"{name} (right hand)"] and not is_right[f"{name} (left hand)"]
        else:
            assert is_right[name] == (annotation["hand_type"] == "right")


def test_3d_where_the_dataset_has_it_and_it_projects_onto_2d(samples):
    for entry in samples:
        sample = entry["sample"]
        assert bool(sample["has_3d"]) == (entry["dataset"] in WITH_3D), entry["name"]
        if not sample["has_3d"]:
            assert torch.isnan(sample["keypoints_3d"]).all() and torch.isnan(sample["K"]).all()
            continue
        assert torch.isfinite(sample["keypoints_3d"]).all()
        assert 0.2 < float(sample["keypoints_3d"][:, 2].min()) < 2.0        # metres in front of the camera
        projected = project_points(sample["keypoints_3d"].double(), sample["K"].double())
        assert float((projected - sample["keypoints_2d"].double()).norm(dim=-1).max()) < 0.5, entry["name"]


def test_load_real_examples_gives_the_first_sample_of_each_dataset_as_a_right_hand(samples):
    examples = load_real_examples(size=SIZE)
    assert [name for name, _, _ in examples] == [dataset.name for dataset in REAL_DATASETS]
    for name, licence, example in examples:
        first = next(entry for entry in samples if entry["dataset"] == name)
        assert licence == first["licence"]
        assert example["is_right"] == 1.0
        expected = first["sample"] if first["sample"]["is_right"] else mirror_sample(first["sample"])
        assert torch.equal(example["image"], expected["image"])
        assert torch.equal(example["keypoints_2d"], expected["keypoints_2d"])
