"""The benchmark's pieces that chapter 7 adds: PCK curves, the floors, error by condition, the
plausibility of predicted poses, and every method on one photo. Tiny sizes: 32 px crops, sets of
64 hands cached in a temporary folder, and "methods" that answer from the labels with a known error."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from handlib import evaluate, methods
from handlib.methods import Prediction
from handlib.runtime import torch_threads

SIZE = 32
OFFSET_3D = torch.tensor([0.0095, 0.0, 0.0])                 # metres: every keypoint 9.5 mm off
OFFSET_2D = torch.tensor([3.0, 4.0])                          # pixels: every keypoint 5 px off


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Every set (test sets and the baselines' training set) cached in a temporary folder."""
    monkeypatch.setattr(methods, "CACHE_DIR", tmp_path)
    return tmp_path


def offset_predict(model, batch, config):
    """An oracle with a known error: the labels, moved by OFFSET_3D (camera frame) and OFFSET_2D."""
    return Prediction(keypoints_2d=batch["keypoints_2d"] + OFFSET_2D, keypoints_3d=batch["keypoints_3d"] + OFFSET_3D,
                      frame="camera")


def oracle(alignment="none", predict=offset_predict):
    return (SimpleNamespace(name="oracle", predict=predict, alignment=alignment), nn.Identity(),
            SimpleNamespace(image_size=SIZE))


def test_the_pck_curve_is_zero_below_the_error_and_one_above():
    truth = torch.rand(3, 21, 3)
    targets = {"keypoints_3d": truth, "has_3d": torch.tensor([True, True, False])}
    prediction = Prediction(keypoints_2d=torch.zeros(3, 21, 2), keypoints_3d=truth + OFFSET_3D, frame="camera")
    curve = evaluate.pck_curve_3d(prediction, targets, "none", thresholds_mm=(0.0, 5.0, 9.0, 10.0, 20.0))
    assert curve == pytest.approx([0.0, 0.0, 0.0, 1.0, 1.0])
    # "root" alignment removes a common offset: every keypoint is then exact.
    assert evaluate.pck_curve_3d(prediction, targets, "root", thresholds_mm=(0.01, 1.0)) == pytest.approx([1.0, 1.0])
    assert evaluate.pck_curve_3d(Prediction(keypoints_2d=torch.zeros(3, 21, 2)), targets) is None


def test_a_lower_resolution_set_holds_the_same_hands_scaled_up(cache):
    low = evaluate.condition_test_set("image_size", 16, num_samples=64, image_size=SIZE)
    native = evaluate.condition_test_set("image_size", SIZE, num_samples=64, image_size=SIZE)
    sample, reference = low[5], native[5]
    assert sample["image"].shape == reference["image"].shape == (3, SIZE, SIZE)
    assert torch.equal(sample["keypoints_3d"], reference["keypoints_3d"])         # the same hand and camera
    assert torch.allclose(sample["keypoints_2d"], reference["keypoints_2d"], atol=1e-3)   # u * 32 / 16
    assert torch.allclose(sample["K"], reference["K"], atol=1e-3)
    assert sample["mask"].shape == (SIZE, SIZE)
    # Fewer pixels, less detail: the scaled-up image is smoother than the one rendered at 32 px.
    assert (sample["image"].diff(dim=-1).abs().mean() < reference["image"].diff(dim=-1).abs().mean())
    with pytest.raises(ValueError, match="occlusion"):
        evaluate.condition_test_set("occlusion", 2.0, num_samples=64, image_size=SIZE)
    with pytest.raises(ValueError, match="size"):
        evaluate.ResizedSet(native, 0)


def test_error_by_condition_gives_one_row_per_method_knob_and_value(cache):
    conditions = {"occlusion": (0.0, 1.0), "image_size": (16, SIZE)}
    rows = evaluate.error_by_condition(models={"oracle": oracle()}, conditions=conditions, num_samples=64,
                                       baseline_samples=64)
    assert [(row["method"], row["condition"], row["value"]) for row in rows] == [
        (name, condition, value) for condition, values in conditions.items() for value in values
        for name in ("oracle", "mean training pose")]
    for row in rows:
        assert row["num_samples"] == 64 and set(evaluate.CONDITION_COLUMNS) <= set(row)
        if row["method"] == "oracle":                       # the known error, whatever the condition
            assert row["epe_3d_mm"] == pytest.approx(9.5, abs=1e-3) and row["epe_2d_px"] == pytest.approx(5.0, abs=1e-4)
            assert row["alignment"] == "none"
        else:                                               # the floor: far worse
            assert row["epe_3d_mm"] > 9.5 and row["alignment"] == "root"
    with pytest.raises(ValueError, match="list of values"):
        evaluate.error_by_condition(models={"oracle": oracle()}, conditions={"occlusion": 0.5})


def test_the_floors_are_scored_like_the_methods(cache):
    test_set = evaluate.condition_test_set("occlusion", 0.3, num_samples=64, image_size=SIZE)
    rows = evaluate.floor_rows(test_set, SIZE, baselines=True, peers=False, baseline_samples=64, curves=True)
    assert [row["method"] for row in rows] == list(evaluate.BASELINES)
    centre, mean_pose = rows
    assert "epe_3d_mm" not in centre and centre["pck_3d"] is None and centre["epe_2d_px"] > 0
    assert len(mean_pose["pck_3d"]) == len(evaluate.PCK_THRESHOLDS_MM) and mean_pose["epe_3d_mm"] > 0
    assert np.all(np.diff(mean_pose["pck_3d"]) >= 0)                                # a PCK curve never falls
    assert mean_pose["parameters"] is None and mean_pose["ms_per_image"] is None
    table = evaluate.format_table(rows, evaluate.BENCHMARK_COLUMNS)
    assert "| crop centre | - |" in table and "mean training pose" in table


def test_plausibility_scores_mano_poses_and_says_why_it_skips_the_others(cache):
    from handlib.mano.prior import joint_limits  # noqa: F401  (the prior the score measures against)

    def true_pose(model, batch, config):
        return Prediction(keypoints_2d=batch["keypoints_2d"], keypoints_3d=batch["keypoints_3d"], frame="camera",
                          mano_pose=batch["pose"])

    def bent_backwards(model, batch, config):
        pose = batch["pose"].clone()
        pose[:, 3:] = pose[:, 3:] - 2.0                     # every finger angle far past a limit
        return Prediction(keypoints_2d=batch["keypoints_2d"], mano_pose=pose)

    dataset = evaluate.condition_test_set("occlusion", 0.3, num_samples=64, image_size=SIZE)
    rows = evaluate.plausibility({"true": oracle(predict=true_pose), "bent": oracle(predict=bent_backwards),
                                  "keypoints": oracle()}, dataset)
    by_name = {row["method"]: row for row in rows}
    assert by_name["true"]["fraction_outside"] < 1.0 and by_name["true"]["max_excess_degrees"] < 1.0
    assert by_name["bent"]["fraction_outside"] > 30.0 and by_name["bent"]["violation"] > 1.0
    assert by_name["keypoints"]["fraction_outside"] is None and "no MANO" in by_name["keypoints"]["reason"]
    truth = by_name["ground truth (the prior's samples)"]
    assert truth["fraction_outside"] == pytest.approx(by_name["true"]["fraction_outside"])


def test_every_method_on_one_photo_lands_in_the_photos_pixels():
    from handlib.viz import compare

    def centre_of_crop(model, batch, config):
        count, size = len(batch["image"]), batch["image"].shape[-1]
        keypoints_2d = torch.full((count, 21, 2), size / 2.0)
        keypoints_2d[:, 4, 0] += size / 4                    # the thumb tip right of the centre
        return Prediction(keypoints_2d=keypoints_2d, keypoints_3d=torch.rand(count, 21, 3) * 0.05,
                          frame="root_relative")

    photo = torch.rand(3, 100, 200)
    models = {"a": oracle(predict=centre_of_crop), "b": oracle(predict=centre_of_crop)}
    box = (120, 10, 180, 70)                                 # 60 x 60 px: the crop's centre is (150, 40)
    for hand, thumb_x in (("right", 165.0), ("left", 135.0)):   # a left hand is mirrored, and back
        answers = compare.predict_every_method(models, photo, box, hand)
        assert list(answers) == ["a", "b"]
        assert answers["a"]["keypoints_2d"][0].tolist() == pytest.approx([150.0, 40.0], abs=1e-4)
        assert answers["a"]["keypoints_2d"][4, 0].item() == pytest.approx(thumb_x, abs=1e-4)
    assert compare.check_box((-5, -5, 300, 50), 200, 100) == (0, 0, 200, 50)
    with pytest.raises(ValueError, match="box"):
        compare.check_box((250, 0, 260, 10), 200, 100)
    with pytest.raises(ValueError, match="hand"):
        compare.predict_every_method(models, photo, box, "both")
    figure = compare.hands_3d_figure(answers)
    assert [trace.name for trace in figure.data if trace.type == "scatter3d"][-1] == "titles"
    assert sum(trace.type == "scatter3d" for trace in figure.data) == 2 * 5 + 1      # 2 skeletons, titles
    import matplotlib.pyplot as plt

    drawing = compare.draw_predictions_2d(photo, answers, box)
    assert [ax.get_title() for ax in drawing.axes] == ["a", "b"]
    plt.close(drawing)


def test_the_comparison_figure_draws_a_mesh_only_where_there_is_one():
    from handlib.viz.plot3d import hand_comparison_figure, static_picture

    joints = [torch.rand(21, 3) * 0.1, torch.rand(21, 3) * 0.1]
    vertices = torch.rand(10, 3) * 0.1
    faces = torch.tensor([[0, 1, 2], [2, 3, 4]])
    figure = hand_comparison_figure(joints, ["with mesh", "keypoints only"], vertices=[vertices, None], faces=faces)
    assert [trace.name for trace in figure.data if trace.type == "mesh3d"] == ["mesh with mesh"]
    wrists = [np.array([trace.x[0], trace.y[0], trace.z[0]]) for trace in figure.data if trace.name.endswith("thumb")]
    assert np.linalg.norm(wrists[1] - wrists[0]) == pytest.approx(0.22, abs=1e-5)   # side by side, spacing apart
    with pytest.raises(ValueError, match="faces"):
        hand_comparison_figure(joints, ["a", "b"], vertices=[vertices, None])
    with pytest.raises(ValueError, match="labels"):
        hand_comparison_figure(joints, ["a"])
    import matplotlib.pyplot as plt

    static_picture(figure)
    plt.close("all")
