"""Keypoint orders: every map round-trips, and each dataset's order lands where its documentation says."""
import numpy as np
import pytest
import torch

from handlib import skeleton
from handlib.skeleton import BONES, KEYPOINT_NAMES, ORDERS, PARENTS, from_course_order, palm_to_wrist, to_course_order


@pytest.mark.parametrize("order", ORDERS)
def test_every_order_round_trips(order):
    keypoints = np.random.default_rng(0).random((4, 21, 3))
    assert np.array_equal(from_course_order(to_course_order(keypoints, order), order), keypoints)
    assert sorted(skeleton.ORDER_MAPS[order]) == list(range(21)), "a map is a permutation"
    tensor = torch.from_numpy(keypoints)
    assert torch.equal(to_course_order(tensor, order), torch.from_numpy(to_course_order(keypoints, order)))


def test_orders_by_their_documentation():
    index = np.arange(21)[:, None]
    # RHD: 1 = thumb tip ... 4 = thumb MCP, so course thumb CMC..tip = RHD 4, 3, 2, 1.
    assert to_course_order(index, "rhd")[1:5, 0].tolist() == [4, 3, 2, 1]
    # STB: root is the palm, then pinky MCP..tip at 1-4, thumb at 17-20.
    assert to_course_order(index, "stb")[17:21, 0].tolist() == [1, 2, 3, 4]
    assert to_course_order(index, "stb")[1:5, 0].tolist() == [17, 18, 19, 20]
    # MANO + tips (T, I, M, R, P): index MCP is MANO joint 1, the thumb tip the first tip (16).
    assert to_course_order(index, "mano")[5, 0] == 1 and to_course_order(index, "mano")[4, 0] == 16
    # InterHand2.6M: the wrist is last (20), thumb tip first (0).
    assert to_course_order(index, "interhand")[0, 0] == 20 and to_course_order(index, "interhand")[4, 0] == 0


def test_bones_follow_the_parents():
    assert len(BONES) == 20 and len(KEYPOINT_NAMES) == 21
    assert all(PARENTS[child] == parent for parent, child in BONES)
    lengths = skeleton.bone_lengths(torch.arange(63.0).reshape(21, 3))
    assert lengths.shape == (20,) and torch.allclose(lengths[0], torch.tensor(3 ** 0.5 * 3))


def test_palm_to_wrist_by_hand():
    keypoints = np.zeros((21, 3))
    keypoints[0] = [1.0, 0, 0]  # the palm
    keypoints[13] = [0.0, 0, 0]  # ring MCP
    assert np.allclose(palm_to_wrist(keypoints)[0], [2.0, 0, 0])
    assert np.allclose(keypoints[0], [1.0, 0, 0]), "the input is not modified"


def test_bad_input():
    with pytest.raises(ValueError, match="unknown keypoint order 'coco'"):
        to_course_order(np.zeros((21, 3)), "coco")
    with pytest.raises(ValueError, match=r"\(\.\.\., 21, D\)"):
        to_course_order(np.zeros((20, 3)), "rhd")
