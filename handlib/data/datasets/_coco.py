"""Reading the COCO-style keypoint json that mmpose converts hand datasets to.

``{"images": [{id, file_name, width, height, ...}], "annotations": [{image_id, keypoints, bbox, ...}]}``
with ``keypoints`` either flat (63 = 21 x [u, v, visible]) or nested (21 x [u, v, visible]).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ._common import DatasetSource, as_array, read_json


def read_coco_keypoints(json_path, source: DatasetSource) -> list[tuple[dict, dict, np.ndarray]]:
    """Pair each annotation with its image entry and its keypoints.

    Args:
        json_path: the COCO-style json file.
        source: the dataset, for error messages.

    Returns:
        list of (image entry, annotation, keypoints (21, 3) [u px, v px, visible]) in the
        annotations' order, keypoints in the file's own joint order.
    """
    content = read_json(json_path, source)
    if not isinstance(content, dict) or not {"images", "annotations"} <= set(content):
        raise ValueError(f"{json_path}: expected a COCO-style json with 'images' and 'annotations', "
                         f"got {sorted(content) if isinstance(content, dict) else type(content).__name__}")
    images = {entry["id"]: entry for entry in content["images"]}
    items = []
    for annotation in content["annotations"]:
        if annotation.get("image_id") not in images:
            raise ValueError(f"{json_path}: annotation {annotation.get('id')} refers to image "
                             f"{annotation.get('image_id')}, which is not in 'images'")
        keypoints = as_array(np.reshape(annotation["keypoints"], (-1,)), (63,), "keypoints", json_path)
        items.append((images[annotation["image_id"]], annotation, keypoints.reshape(21, 3)))
    return items


def image_folder(json_path, image_dir) -> Path:
    """The images' folder: ``image_dir`` if given, else the json's own folder."""
    return Path(json_path).parent if image_dir is None else Path(image_dir)
