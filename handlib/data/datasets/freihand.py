"""FreiHAND (Zimmermann et al., ICCV 2019): real photos of hands with 3D keypoints and MANO fits.

Layout of the official release ``FreiHAND_pub_v2/``::

    training/rgb/%08d.jpg      130240 images, 224 x 224: 4 versions of 32560 samples
    training/mask/%08d.jpg     32560 hand masks, one per sample
    evaluation/rgb/%08d.jpg    3960 images (green-screen version only)
    training_K.json            list[32560] of 3x3 intrinsics, pixels
    training_xyz.json          list[32560] of 21x3 keypoints, metres, camera frame
    training_mano.json         list[32560] of 1x61 MANO vectors
    training_scale.json        list[32560] of the middle finger's MCP -> PIP length, metres (not read)
    evaluation_K.json          list[3960]; evaluation_xyz.json / _mano.json in the later release

Each training sample was photographed once and recoloured three times, so image id
``sample + 32560 k`` shows sample ``sample`` in version k = 0 green screen ("gs"),
1 homogenised ("hom"), 2 "sample", 3 "auto"; all four share the annotation ``id % 32560``.

FreiHAND's keypoint order is the course order (0 wrist, 1-4 thumb base to tip, ...), and
``keypoints_2d`` is computed as the dataset's own code does, ``uv = (K @ xyz.T).T``,
``uv = uv[:, :2] / uv[:, 2:]``.

The MANO vector (61) is ``pose[0:48]`` (axis-angle, 3 global + 45 finger, no PCA),
``betas[48:58]``, the root's image position ``[58:60]`` and a scale ``[60]``. The finger pose is
**relative to MANO's mean hand**: FreiHAND poses the model with ``flat_hand_mean=False``, so the
absolute pose the sample stores (zero = flat hand) is::

    pose_absolute[:3] = pose[:3]                      # global rotation, camera frame
    pose_absolute[3:] = pose[3:] + hands_mean         # hands_mean: (45,) of the MANO model

``hands_mean`` is taken from ``mano_model`` (a ``handlib.mano.io.ManoModel`` or anything with a
``hands_mean`` attribute). It must be the model the annotations were fitted with (the official
``MANO_RIGHT.pkl``); with another model the pose is only approximately the photographed one.
Without ``mano_model`` the sample's ``has_mano`` is False.

Licence: research purposes only, no commercial use (https://lmb.informatik.uni-freiburg.de/projects/freihand/).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from handlib.data.sample import make_sample
from handlib.skeleton import to_course_order

from ._common import FREIHAND, as_array, project, read_image, read_json, require_dir

VERSIONS = ("gs", "hom", "sample", "auto")
TRAINING_SAMPLES = 32560
EVALUATION_SAMPLES = 3960


def image_id(sample_id: int, version: str = "gs") -> int:
    """The image id of FreiHAND training sample ``sample_id`` in ``version``: ``sample_id + 32560 k``.

    Args:
        sample_id: 0 <= sample_id < 32560.
        version: one of "gs", "hom", "sample", "auto" (k = 0, 1, 2, 3).

    Returns:
        The image id (the file name is ``"%08d.jpg" % image_id``).
    """
    if version not in VERSIONS:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    if not 0 <= int(sample_id) < TRAINING_SAMPLES:
        raise ValueError(f"sample_id: expected 0 <= sample_id < {TRAINING_SAMPLES}, got {sample_id}")
    return int(sample_id) + TRAINING_SAMPLES * VERSIONS.index(version)


def sample_id_of(image: int) -> tuple[int, str]:
    """Inverse of ``image_id``: the annotation index ``image % 32560`` and the version name."""
    image = int(image)
    if not 0 <= image < TRAINING_SAMPLES * len(VERSIONS):
        raise ValueError(f"image: expected 0 <= image id < {TRAINING_SAMPLES * len(VERSIONS)}, got {image}")
    return image % TRAINING_SAMPLES, VERSIONS[image // TRAINING_SAMPLES]


def _hands_mean(mano_model) -> np.ndarray | None:
    if mano_model is None:
        return None
    mean = getattr(mano_model, "hands_mean", None)
    if mean is None:
        raise ValueError("mano_model: expected an object with a hands_mean attribute (a ManoModel), "
                         f"got {type(mano_model).__name__}")
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    if mean.shape != (45,):
        raise ValueError(f"mano_model.hands_mean: expected 45 values, got shape {mean.shape}")
    return mean


class FreiHAND(Dataset):
    """FreiHAND v2 in its official layout, one sample per image, in the course's sample structure.

    Args:
        root: the ``FreiHAND_pub_v2`` folder (holding ``training/``, ``training_K.json``, ...).
        split: "training" or "evaluation".
        versions: which of the four image versions to use (training only; default all four).
            The dataset is ordered version by version: index ``i`` is sample ``i % N`` in
            version ``versions[i // N]``.
        mano_model: optional MANO model whose ``hands_mean`` turns FreiHAND's relative pose into
            the absolute pose of the sample (see the module docstring); None -> has_mano False.
        load_mask: read ``training/mask/%08d.jpg`` when it exists (has_mask True).

    Each sample: image (3, 224, 224), keypoints_3d (21, 3) m, keypoints_2d (21, 2) px projected
    from them, K, visibility 1 (FreiHAND labels no occlusion), is_right 1 (all hands are right).
    An evaluation split without ``evaluation_xyz.json`` gives has_3d False and NaN keypoints.

    Example:
        >>> data = FreiHAND("data/FreiHAND_pub_v2", versions=("gs",))   # doctest: +SKIP
        >>> data[0]["keypoints_3d"].shape                                # doctest: +SKIP
        torch.Size([21, 3])
    """

    def __init__(self, root, split: str = "training", versions=None, mano_model=None, load_mask: bool = True):
        if split not in ("training", "evaluation"):
            raise ValueError(f"split: expected 'training' or 'evaluation', got {split!r}")
        self.root = require_dir(root, FREIHAND, "training/rgb/, training_K.json, training_xyz.json, ...")
        self.split = split
        if versions is None:
            versions = VERSIONS if split == "training" else ("gs",)
        versions = tuple(versions)
        unknown = [v for v in versions if v not in VERSIONS]
        if unknown or not versions:
            raise ValueError(f"versions: expected a non-empty subset of {VERSIONS}, got {versions}")
        if split == "evaluation" and versions != ("gs",):
            raise ValueError(f"versions: the evaluation split has only the 'gs' version, got {versions}")
        self.versions = versions
        self.image_dir = require_dir(self.root / split / "rgb", FREIHAND, "%08d.jpg images")
        self.load_mask = load_mask

        K_path = self.root / f"{split}_K.json"
        self.K = as_array(read_json(K_path, FREIHAND), (-1, 3, 3), "K", K_path)
        xyz_path = self.root / f"{split}_xyz.json"
        if split == "training" or xyz_path.exists():
            self.xyz = as_array(read_json(xyz_path, FREIHAND), (-1, 21, 3), "xyz", xyz_path)
            if len(self.xyz) != len(self.K):
                raise ValueError(f"{xyz_path}: {len(self.xyz)} entries but {K_path} has {len(self.K)}")
        else:
            self.xyz = None
        mano_path = self.root / f"{split}_mano.json"
        self.mano = None
        if mano_path.exists():
            mano = as_array(read_json(mano_path, FREIHAND), (-1, 1, 61), "mano", mano_path)[:, 0]
            if len(mano) != len(self.K):
                raise ValueError(f"{mano_path}: {len(mano)} entries but {K_path} has {len(self.K)}")
            self.mano = mano
        self.hands_mean = _hands_mean(mano_model)

    @property
    def num_samples(self) -> int:
        """Number of annotated samples (unique hands), N."""
        return len(self.K)

    def __len__(self) -> int:
        return self.num_samples * len(self.versions)

    def locate(self, index: int) -> tuple[int, int, str]:
        """(annotation index, image id, version) of dataset item ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} FreiHAND items")
        index %= len(self)
        version = self.versions[index // self.num_samples]
        sample = index % self.num_samples
        offset = TRAINING_SAMPLES if self.split == "training" else EVALUATION_SAMPLES
        return sample, sample + offset * VERSIONS.index(version), version

    def image_path(self, index: int) -> Path:
        """The image file of dataset item ``index``."""
        return self.image_dir / f"{self.locate(index)[1]:08d}.jpg"

    def mano_pose(self, sample: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Absolute MANO pose (48,) and betas (10,) of annotation ``sample``, or None if unknown."""
        if self.mano is None or self.hands_mean is None:
            return None
        vector = self.mano[sample]
        pose = vector[:48].copy()
        pose[3:] += self.hands_mean
        return pose, vector[48:58]

    def __getitem__(self, index: int) -> dict:
        sample, image, _ = self.locate(index)
        rgb = read_image(self.image_dir / f"{image:08d}.jpg", FREIHAND)
        K = self.K[sample]
        keypoints_3d = keypoints_2d = None
        if self.xyz is not None:
            keypoints_3d = to_course_order(self.xyz[sample], "freihand")
            keypoints_2d = project(keypoints_3d, K)
        mask = None
        mask_path = self.root / self.split / "mask" / f"{sample:08d}.jpg"
        if self.load_mask and mask_path.exists():
            mask = (read_image(mask_path, FREIHAND, mode="L") > 127).astype(np.float32)
        mano = self.mano_pose(sample)
        pose, betas = mano if mano is not None else (None, None)
        if keypoints_2d is None:
            keypoints_2d = np.full((21, 2), np.nan)
        return make_sample(torch.from_numpy(rgb), keypoints_2d, K, mask=mask, keypoints_3d=keypoints_3d,
                           pose=pose, betas=betas, is_right=True)


class FreiHANDKeypoints2D(Dataset):
    """FreiHAND images with 2D keypoints only, in mmpose's COCO-style conversion (``freihand_*.json``).

    mmpose's json keeps each image's 2D keypoints (FreiHAND order = course order) but no K and
    no xyz, so samples have has_3d False and K NaN. ``sample_id(index)`` gives the annotation
    index ``image id % 32560`` shared by the four versions of one photograph.

    Args:
        json_path: the COCO-style json file.
        image_dir: folder of the ``%08d.jpg`` images; default the json's folder.

    Example:
        >>> from handlib.data.samples import SAMPLES_DIR
        >>> data = FreiHANDKeypoints2D(SAMPLES_DIR / "freihand" / "test_freihand.json")
        >>> data.sample_id(0)
        17620
    """

    def __init__(self, json_path, image_dir=None):
        from ._coco import image_folder, read_coco_keypoints

        self.json_path = Path(json_path)
        self.items = read_coco_keypoints(json_path, FREIHAND)
        self.image_dir = require_dir(image_folder(json_path, image_dir), FREIHAND, "the %08d.jpg images")

    def __len__(self) -> int:
        return len(self.items)

    def image_id(self, index: int) -> int:
        """The FreiHAND image id of item ``index``."""
        return int(self.items[index][0]["id"])

    def sample_id(self, index: int) -> int:
        """The annotation index (``image id % 32560``) of item ``index``."""
        return sample_id_of(self.image_id(index))[0]

    def version(self, index: int) -> str:
        """The image version ("gs", "hom", "sample" or "auto") of item ``index``."""
        return sample_id_of(self.image_id(index))[1]

    def __getitem__(self, index: int) -> dict:
        image, _, keypoints = self.items[index]
        rgb = read_image(self.image_dir / image["file_name"], FREIHAND)
        keypoints = to_course_order(keypoints, "freihand")
        return make_sample(torch.from_numpy(rgb), keypoints[:, :2], None,
                           visibility=(keypoints[:, 2] > 0).astype(np.float32), is_right=True)
