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


def test_score_gives_the_pck_curve_after_the_methods_alignment():
    truth = torch.rand(3, 21, 3)
    targets = {"keypoints_2d": torch.zeros(3, 21, 2), "keypoints_3d": truth, "visibility": torch.ones(3, 21),
               "has_3d": torch.tensor([True, True, False]), "has_mano": torch.zeros(3)}
    prediction = Prediction(keypoints_2d=torch.zeros(3, 21, 2), keypoints_3d=truth + OFFSET_3D, frame="camera")
    row = evaluate.score(prediction, targets, "none", pck_thresholds_mm=(0.0, 5.0, 9.0, 10.0, 20.0))
    assert row["pck_3d"] == pytest.approx([0.0, 0.0, 0.0, 1.0, 1.0])           # every keypoint 9.5 mm off
    # "root" alignment removes a common offset: every keypoint is then exact.
    assert evaluate.score(prediction, targets, "root", (0.01, 1.0))["pck_3d"] == pytest.approx([1.0, 1.0])
    assert "pck_3d" not in evaluate.score(prediction, targets, "root")
    assert evaluate.score(Prediction(keypoints_2d=torch.zeros(3, 21, 2)), targets, "root", (1.0,))["pck_3d"] is None


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
    with pytest.raises(ValueError, match="condition: expected one of"):
        evaluate.condition_test_set("lighting", "single", num_samples=64, image_size=SIZE)
    with pytest.raises(ValueError, match="viewpoint"):
        evaluate.condition_test_set("viewpoint", "palm_towards", num_samples=64, image_size=SIZE)
    with pytest.raises(ValueError, match="size"):
        evaluate.ResizedSet(native, 0)


def test_the_viewpoint_groups_agree_with_the_engines_palm_knob(cache, monkeypatch):
    from handlib.data import synth

    def facing(viewpoint):
        rendered = synth.cached_test_set(64, image_size=SIZE, cache_dir=cache, progress=False, workers=0,
                                         config=synth.make_config(image_size=SIZE, viewpoint=viewpoint))
        return evaluate.palm_facing(evaluate.dataset_targets(rendered, ("keypoints_3d",))["keypoints_3d"])

    towards, away = facing("palm_towards"), facing("palm_away")               # the engine: normal z < -0.3, > 0.3
    assert (towards > 0).float().mean() > 0.95 and (away < 0).float().mean() > 0.95
    assert set(evaluate.viewpoint_of(torch.tensor([[0.0, 0.0, 0.5]]).expand(1, 21, 3).clone())) <= {"side"}
    monkeypatch.setattr(evaluate, "VIEWPOINT_POOL", 64)
    groups = {value: evaluate.condition_test_set("viewpoint", value, num_samples=16, image_size=SIZE)
              for value in evaluate.VIEWPOINTS}
    for value, group in groups.items():
        labels = evaluate.viewpoint_of(evaluate.dataset_targets(group, ("keypoints_3d",))["keypoints_3d"])
        assert 0 < len(group) <= 16 and set(labels) == {value}


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


def test_plausibility_judges_mano_poses_and_fits_the_keypoint_methods(cache):
    def true_pose(model, batch, config):
        return Prediction(keypoints_2d=batch["keypoints_2d"], keypoints_3d=batch["keypoints_3d"], frame="camera",
                          mano_pose=batch["pose"])

    def bent_backwards(model, batch, config):
        pose = batch["pose"].clone()
        pose[:, 3:] = pose[:, 3:] - 2.0                     # every finger angle far past a limit
        return Prediction(keypoints_2d=batch["keypoints_2d"], mano_pose=pose)

    def two_d(model, batch, config):
        return Prediction(keypoints_2d=batch["keypoints_2d"])

    dataset = evaluate.condition_test_set("occlusion", 0.3, num_samples=64, image_size=SIZE)
    rows = evaluate.plausibility({"true": oracle(predict=true_pose), "bent": oracle(predict=bent_backwards),
                                  "keypoints": oracle(), "2d": oracle(predict=two_d)}, dataset, fit_steps=60)
    by_name = {row["method"]: row for row in rows}
    assert set(evaluate.PLAUSIBILITY_COLUMNS) <= set(by_name["keypoints"])
    assert by_name["true"]["fraction_outside"] < 0.01 and by_name["true"]["max_excess_degrees"] < 1.0
    assert by_name["bent"]["fraction_outside"] > 0.3 and by_name["bent"]["violation"] > 1.0
    assert by_name["true"]["fraction_outside"] == pytest.approx(by_name["true poses"]["fraction_outside"])
    # The true keypoints moved by 9.5 mm are fitted like the true keypoints themselves: the same angles.
    assert by_name["keypoints"]["angles"] == "MANO fitted to its keypoints"
    assert by_name["keypoints"]["fraction_outside"] == pytest.approx(by_name["true keypoints"]["fraction_outside"],
                                                                     abs=0.02)
    assert by_name["keypoints"]["fraction_outside"] < by_name["bent"]["fraction_outside"]
    assert by_name["2d"]["fraction_outside"] is None and "2D" in by_name["2d"]["angles"]
    table = evaluate.format_table(rows, evaluate.PLAUSIBILITY_COLUMNS)
    assert "| 2d | none (2D keypoints only) | - |" in table


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
    # With the photo's camera the hands are in its frame; the crop's camera is the photo's, shifted.
    answers_3d = compare.predict_every_method({"a": models["a"]}, photo, box, "right", intrinsics=(300, 300, 100, 50))
    assert answers_3d["a"]["frame"] == "camera"
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


def test_every_method_on_photo_files_writes_one_entry_per_method_and_a_picture(tmp_path):
    import json

    from PIL import Image

    from handlib.viz import compare

    photo = tmp_path / "hand.png"
    Image.fromarray((np.random.default_rng(0).random((90, 160, 3)) * 255).astype(np.uint8)).save(photo)
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a photo")
    def centre(model, batch, config):
        return Prediction(keypoints_2d=torch.full((len(batch["image"]), 21, 2), batch["image"].shape[-1] / 2.0))

    models = {"a": oracle(predict=centre), "b": oracle(predict=centre)}
    out, pictures = tmp_path / "answers.json", tmp_path / "pictures"
    results, errors = compare.predict_photo_files(models, [photo, broken], "left", (100, 10, 160, 70), out=out,
                                                  overlay_dir=pictures)
    assert [entry.get("method") for entry in results] == ["a", "b", None] and len(errors) == 1
    assert "broken.jpg" in errors[0]["error"] and json.loads(out.read_text()) == results
    assert results[0]["keypoints_2d"][0] == pytest.approx([130.0, 40.0], abs=1e-3)   # the box's centre
    assert sorted(path.name for path in pictures.iterdir()) == ["hand_methods.png"]
    with pytest.raises(ValueError, match="no method"):
        compare.predict_photo_files({}, [photo])


def test_the_photo_panel_takes_a_dragged_box_and_answers_for_it(tmp_path):
    from PIL import Image
    from plotly.callbacks import BoxSelector, Points

    from handlib.viz import compare

    photo = tmp_path / "hand.png"
    Image.fromarray((np.random.default_rng(0).random((600, 1000, 3)) * 255).astype(np.uint8)).save(photo)
    seen = []

    def centre(model, batch, config):
        seen.append(batch["image"].shape)
        return Prediction(keypoints_2d=torch.full((len(batch["image"]), 21, 2), batch["image"].shape[-1] / 2.0))

    panel = compare.PhotoPanel({"a": oracle(predict=centre)}, path=photo)
    assert panel.whole.value and [trace.type for trace in panel.picker.data] == ["image", "scatter"]
    assert max(panel.picker.data[0].z.shape[:2]) == compare.PICKER_PIXELS     # shown smaller, ...
    assert panel.picker.data[0].dx == pytest.approx(1000 / compare.PICKER_PIXELS)  # ... in the photo's pixels
    # A rectangle dragged over the photo (what the browser sends) becomes the box, drawn on it.
    panel.picker.data[1]._dispatch_on_selection(Points(), BoxSelector(xrange=[412.6, 300.2], yrange=[100.5, 351]))
    assert [field.value for field in panel.box] == [300, 100, 413, 351] and not panel.whole.value
    assert panel.picker.layout.shapes[0].x0 == 300 and panel.picker.layout.shapes[0].y1 == 351
    panel.run()
    assert len(seen) == 1                                                       # one method, one crop
    panel.whole.value = True
    assert panel.picker.layout.shapes == ()
    panel.path.value = str(tmp_path / "missing.jpg")                           # a bad path: said, nothing lost
    assert len(panel.picker.data) == 2


def test_the_benchmark_figures_draw_a_line_per_method():
    import matplotlib.pyplot as plt

    from handlib.viz.benchmark import condition_figure, pck_figure

    curve = list(np.linspace(0.0, 1.0, len(evaluate.PCK_THRESHOLDS_MM)))
    rows = [{"method": "m", "alignment": "root", "auc_20_50": 0.5, "pck_3d": curve},
            {"method": "floor", "alignment": "root", "auc_20_50": 0.1, "pck_3d": [0.5 * v for v in curve]},
            {"method": "2d only", "pck_3d": None}]
    figure = pck_figure(rows, methods=["m"])
    assert [line.get_label().split(" (")[0] for line in figure.axes[0].lines] == ["m", "floor"]
    assert figure.axes[0].lines[1].get_linestyle() == "--"
    with pytest.raises(ValueError, match="PCK"):
        pck_figure(rows[2:])
    plt.close(figure)
    conditions = {"occlusion": (0.0, 1.0), "viewpoint": evaluate.VIEWPOINTS}
    rows = [{"method": method, "condition": condition, "value": value, "epe_procrustes_mm": 10.0 + i,
             "epe_2d_px": 3.0 + i} for method in ("m", "mean training pose") for condition, values in conditions.items()
            for i, value in enumerate(values)]
    figure = condition_figure(rows)
    assert len(figure.axes) == 2 * 2 and [ax.get_title() for ax in figure.axes[:2]] == ["occlusion", "viewpoint"]
    assert len(figure.axes[2].lines) == 1                  # 2D: the floor has no 2D answer worth a line
    plt.close(figure)


def test_the_published_table_puts_ours_beside_the_papers():
    rows = evaluate.published_rows([{"method": "ge2019", "auc_20_50": 0.47, "alignment": "root",
                                     "epe_procrustes_mm": 19.3}])
    by_name = {row["method"]: row for row in rows}
    assert by_name["ge2019"]["STB"] == "0.998*" and by_name["ge2019"]["auc_20_50"] == 0.47
    assert by_name["zimmermann2017"]["STB"] == "0.948" and by_name["zimmermann2017"]["auc_20_50"] is None
    assert "| zimmermann2017 | 0.948 | - |" in evaluate.format_table(rows, evaluate.PUBLISHED_COLUMNS)


def test_the_stored_results_are_redone_one_method_at_a_time(benchmark_script):
    """benchmarks/benchmark_tables.py: a method's rows are replaced, the others kept, in course order."""
    tables = benchmark_script("benchmark_tables")

    def parts(name, value):
        return {"synthetic": [{"method": name, "epe_3d_mm": value}],
                "real": [{"method": name, "dataset": dataset, "epe_2d_px": value} for dataset in ("RHD", "FreiHAND")],
                "conditions": [{"method": name, "condition": "occlusion", "value": v, "epe_2d_px": value}
                               for v in (1.0, 0.0)],
                "plausibility": [{"method": name, "violation": value}]}

    order = ["a", "b", "mean training pose"]
    record = {"units": {}, "sources": {}}
    tables.update(record, "b", parts("b", 2.0), order, {"sha256": "b1"})
    tables.update(record, "floors", parts("mean training pose", 9.0), order, {})
    tables.update(record, "a", parts("a", 1.0), order, {"sha256": "a1"})
    tables.update(record, "b", parts("b", 3.0), order, {"sha256": "b2"})        # b retrained
    assert [row["method"] for row in record["synthetic"]] == order
    assert [row["epe_3d_mm"] for row in record["synthetic"]] == [1.0, 3.0, 9.0]
    assert [(row["dataset"], row["method"]) for row in record["real"][:3]] == [("RHD", "a"), ("RHD", "b"),
                                                                                ("RHD", "mean training pose")]
    assert [row["value"] for row in record["conditions"]] == [0.0] * 3 + [1.0] * 3
    assert record["units"]["b"] == {"sha256": "b2"} and len(record["plausibility"]) == 3
