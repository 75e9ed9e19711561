"""The method interface (handlib.methods, handlib.registry) and the scoring of predictions (handlib.evaluate).

Everything here is checked on hand-made objects: a ``Method`` of a do-nothing model, predictions
whose errors are known by hand. The training loop runs in tests/test_train.py.
"""
import dataclasses
import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from handlib import evaluate, registry
from handlib.data.sample import make_sample
from handlib.methods import Method, Prediction, Schedule, Variant, full_name, split_name


@dataclass(frozen=True)
class PlainConfig:
    image_size: int = 32
    test_samples: int = 4
    width: int = 8
    milestones: tuple = (10, 20)


def plain_method(**changes) -> Method:
    """A Method that is valid as it stands; ``changes`` replace its fields (to break it)."""
    fields = dict(name="plain", description="a method for interface tests",
                  configs={"quick": PlainConfig(), "full": PlainConfig(width=16)},
                  build_model=lambda config: nn.Identity(), stages=lambda config: [],
                  predict=lambda model, batch, config: None, test_data=lambda config, num_samples: [],
                  variants={"wide": Variant("twice the width", {"width": 32})})
    return Method(**{**fields, **changes})


def keypoints(batch=2, dims=2, value=0.0):
    return torch.full((batch, 21, dims), value)


# ---------------------------------------------------------------- Prediction

def test_a_prediction_holds_the_fields_that_are_present():
    prediction = Prediction(keypoints_2d=keypoints(3), keypoints_3d=keypoints(3, 3), frame="camera",
                            mano_betas=torch.zeros(3, 10), extras={"mask": torch.zeros(3, 8, 8)})
    assert len(prediction) == 3
    assert set(prediction.tensors()) == {"keypoints_2d", "keypoints_3d", "mano_betas"}   # no None, no extras


@pytest.mark.parametrize("field, value, message", [
    ("keypoints_2d", torch.zeros(2, 20, 2), r"keypoints_2d: expected shape \(B, 21, 2\)"),
    ("keypoints_3d", torch.zeros(2, 21, 2), r"keypoints_3d: expected shape \(B, 21, 3\)"),
    ("keypoints_3d", torch.zeros(3, 21, 3), "with the batch of keypoints_2d"),         # another batch size
    ("vertices", torch.zeros(2, 778), r"vertices: expected shape \(B, N, 3\)"),
    ("mano_pose", torch.zeros(2, 45), r"mano_pose: expected shape \(B, 48\)"),
    ("frame", "world", "frame: expected one of"),
])
def test_a_prediction_of_the_wrong_shape_or_frame_is_refused(field, value, message):
    fields = {"keypoints_2d": keypoints(), field: value}
    with pytest.raises(ValueError, match=message):
        Prediction(**fields)


def test_predictions_concatenate_in_order():
    first = Prediction(keypoints_2d=keypoints(2, value=1.0), keypoints_3d=keypoints(2, 3), frame="camera",
                       extras={"mask": torch.zeros(2, 4, 4)})
    second = Prediction(keypoints_2d=keypoints(3, value=2.0), keypoints_3d=keypoints(3, 3), frame="camera")
    both = Prediction.concatenate([first, second])
    assert len(both) == 5 and both.frame == "camera" and both.extras == {}
    assert both.keypoints_2d[:, 0, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
    assert both.keypoints_3d.shape == (5, 21, 3) and both.vertices is None
    with pytest.raises(ValueError, match="one frame"):
        Prediction.concatenate([first, Prediction(keypoints_2d=keypoints(), keypoints_3d=keypoints(2, 3))])
    with pytest.raises(ValueError, match="at least one"):
        Prediction.concatenate([])


def test_detach_cuts_the_graph_of_every_tensor_extras_included():
    weight = torch.ones((), requires_grad=True)
    prediction = Prediction(keypoints_2d=weight * keypoints(), keypoints_3d=weight * keypoints(2, 3),
                            extras={"mask": weight * torch.ones(2, 4, 4), "note": "kept"})
    detached = prediction.detach()
    assert prediction.keypoints_2d.requires_grad                    # the original is unchanged
    assert not any(value.requires_grad for value in detached.tensors().values())
    assert not detached.extras["mask"].requires_grad and detached.extras["note"] == "kept"
    assert detached.frame == prediction.frame


def test_nan_keypoints_mark_a_sample_without_an_answer_and_select_keeps_the_others():
    nan = float("nan")
    keypoints_2d, keypoints_3d = keypoints(3, value=1.0), keypoints(3, 3)
    keypoints_2d[1], keypoints_3d[1] = nan, nan                     # no hand found in image 1
    prediction = Prediction(keypoints_2d=keypoints_2d, keypoints_3d=keypoints_3d,
                            extras={"detected": torch.tensor([True, False, True]), "note": "kept"})
    assert prediction.answered().tolist() == [True, False, True]
    answered = prediction.select(prediction.answered())
    assert len(answered) == 2 and not answered.keypoints_2d.isnan().any()
    assert answered.extras["detected"].tolist() == [True, True] and answered.extras["note"] == "kept"


@pytest.mark.parametrize("sample", ["2d", "3d", "3d_of_unanswered"])
def test_nan_in_some_keypoints_of_a_sample_only_is_refused(sample):
    keypoints_2d, keypoints_3d = keypoints(2), keypoints(2, 3)
    if sample == "2d":
        keypoints_2d[1, 5] = float("nan")                           # one keypoint lost: a bug, not "no answer"
    elif sample == "3d":
        keypoints_3d[1, :, 2] = float("nan")
    else:
        keypoints_2d[1] = float("nan")                              # no 2D answer, yet a 3D one
    with pytest.raises(ValueError, match="sample 1 has NaN in some of its keypoints only"):
        Prediction(keypoints_2d=keypoints_2d, keypoints_3d=keypoints_3d)


# ---------------------------------------------------------------- Schedule

def test_the_learning_rate_falls_by_gamma_at_each_milestone():
    schedule = Schedule(steps=30, batch_size=4, lr=1e-3, milestones=(10, 20), gamma=0.5)
    assert [schedule.learning_rate_factor(step) for step in (0, 9, 10, 19, 20, 29)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="batch_size >= 1"):
        Schedule(steps=10, batch_size=0, lr=1e-3)


# ---------------------------------------------------------------- Method

def test_method_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match=r"missing \['full'\]"):
        plain_method(configs={"quick": PlainConfig()})
    with pytest.raises(ValueError, match="image_size"):
        plain_method(configs={"quick": {"image_size": 32}, "full": PlainConfig()})       # a dict, not a dataclass
    with pytest.raises(ValueError, match="alignment must be one of"):
        plain_method(alignment="centroid")
    with pytest.raises(ValueError, match="':' separates"):
        plain_method(name="plain:v2")


def test_a_config_is_the_profile_changed_by_the_variant_then_by_the_overrides():
    method = plain_method()
    assert method.config("quick") == PlainConfig()
    assert method.config("full").width == 16
    assert method.config("quick", "wide").width == 32
    assert method.config("quick", "wide", width=64, test_samples=2) == PlainConfig(width=64, test_samples=2)
    with pytest.raises(ValueError, match=r"no variant 'narrow'; expected one of \['wide'\]"):
        method.config("quick", "narrow")
    with pytest.raises(ValueError, match=r"PlainConfig has no fields \['widht'\]"):
        method.config("quick", widht=3)
    with pytest.raises(ValueError, match="profile: expected one of"):
        method.config("medium")


def test_names_split_into_method_and_variant_and_back():
    assert split_name("zimmermann2017:direct") == ("zimmermann2017", "direct")
    assert split_name("zimmermann2017") == ("zimmermann2017", None)
    for name in ("zimmermann2017", "zimmermann2017:direct"):
        assert full_name(*split_name(name)) == name
    for bad in ("", "a:b:c", None):
        with pytest.raises(ValueError, match="NAME:VARIANT"):
            split_name(bad)


# ---------------------------------------------------------------- registry

def test_the_registry_finds_methods_and_variants_by_name():
    method, variant = registry.get_method("zimmermann2017:direct")
    assert method.name == "zimmermann2017" and variant == "direct"
    assert registry.get_method("zimmermann2017") == (method, None)
    assert registry.get_method("zimmermann2017", "direct") == (method, "direct")
    plain = plain_method()                                   # a Method object need not be registered
    assert registry.get_method(plain, "wide") == (plain, "wide")
    names = registry.available_names()
    assert "zimmermann2017:direct" in names and names.index("zimmermann2017") < names.index("zimmermann2017:direct")
    assert "backbone" in names and not any(":" in name for name in registry.available_names(variants=False))
    shipped = registry.shipped_names()                       # what make full-checkpoints trains
    assert "zimmermann2017:direct" in shipped and "cai2018" in shipped and "cai2018:labels5" in names
    assert not any(name.startswith("cai2018:") for name in shipped), "the label-fraction arms do not ship"


def test_registry_errors_name_the_known_methods_and_variants():
    with pytest.raises(ValueError, match="unknown method 'no_such_method'; expected one of .*zimmermann2017"):
        registry.get_method("no_such_method")
    with pytest.raises(ValueError, match=r"no variant 'indirect'; expected one of \['direct'\]"):
        registry.get_method("zimmermann2017:indirect")
    with pytest.raises(ValueError, match="no variant 'wide'; expected one of none"):
        registry.get_method("backbone:wide")


def test_a_config_survives_the_round_trip_through_a_checkpoint():
    method = plain_method()
    config = method.config("quick", "wide", milestones=(5,))
    stored = json.loads(json.dumps(dataclasses.asdict(config)))     # tuples come back as lists
    assert stored["milestones"] == [5]
    restored = registry.config_from_dict(method, "quick", stored)
    assert restored == config and isinstance(restored.milestones, tuple)
    with pytest.raises(ValueError, match="another version of the method"):
        registry.config_from_dict(method, "quick", {**stored, "depth": 3})


def test_synthetic_knobs_of_a_config_survive_the_checkpoint_and_reach_the_engine():
    from handlib.models.backbone import METHOD as BACKBONE

    config = BACKBONE.config("quick", synth_knobs=(("occlusion", 0.0), ("distance", (0.4, 0.5))))
    restored = registry.config_from_dict(BACKBONE, "quick", json.loads(json.dumps(dataclasses.asdict(config))))
    assert restored == config
    engine = restored.synth_config()
    assert engine.occlusion == 0.0 and engine.distance == (0.4, 0.5) and engine.image_size == config.image_size
    with pytest.raises(ValueError, match="unknown synthetic-data knob"):
        BACKBONE.config("quick", synth_knobs=(("fog", 1.0),)).synth_config()


# ---------------------------------------------------------------- scoring

def targets_of(samples):
    batch = torch.utils.data.default_collate(samples)
    return {key: batch[key] for key in evaluate.TARGET_KEYS}


def hand_samples(count=2, mano=False):
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(count):
        keypoints_3d = 0.03 * torch.randn(21, 3, generator=generator) + torch.tensor([0.0, 0.0, 0.5])
        extra = {}
        if mano:
            extra = {"pose": 0.3 * torch.randn(48, generator=generator), "betas": torch.randn(10, generator=generator)}
        samples.append(make_sample(torch.zeros(3, 32, 32), 16 + 20 * torch.rand(21, 2, generator=generator) - 10,
                                   keypoints_3d=keypoints_3d, **extra))
    return samples


def test_the_2d_error_is_the_mean_over_keypoints_of_their_mean_over_visible_samples():
    samples = hand_samples(2)
    samples[1]["visibility"][4] = 0.0
    targets = targets_of(samples)
    predicted = targets["keypoints_2d"].clone()
    predicted[0] += torch.tensor([3.0, 4.0])            # sample 0: every keypoint 5 px off
    predicted[1, 4] += 1000.0                           # sample 1: right, except an invisible keypoint
    row = evaluate.score(Prediction(keypoints_2d=predicted), targets)
    # Keypoint 4 counts only in sample 0 (5 px); the other 20 average (5 + 0) / 2.
    assert row["epe_2d_px"] == pytest.approx((20 * 2.5 + 5.0) / 21)
    assert row["num_samples"] == 2 and "epe_3d_mm" not in row and "mesh_error_mm" not in row


def test_a_perfect_3d_prediction_scores_zero_millimetres():
    targets = targets_of(hand_samples(3))
    shifted = targets["keypoints_3d"] + torch.tensor([0.01, -0.02, 0.1])       # only the root is wrong
    prediction = Prediction(keypoints_2d=targets["keypoints_2d"], keypoints_3d=shifted, frame="camera")
    row = evaluate.score(prediction, targets, alignment="root")
    assert row["epe_3d_mm"] == pytest.approx(0.0, abs=1e-3) and row["median_3d_mm"] == pytest.approx(0.0, abs=1e-3)
    assert row["auc_20_50"] == pytest.approx(1.0) and row["epe_procrustes_mm"] == pytest.approx(0.0, abs=1e-3)
    assert row["alignment"] == "root" and row["epe_2d_px"] == 0.0
    # Without alignment the 10 cm root error is all there is.
    unaligned = evaluate.score(prediction, targets, alignment="none")["epe_3d_mm"]
    assert unaligned == pytest.approx(1000 * math.sqrt(0.01**2 + 0.02**2 + 0.1**2), rel=1e-4)


def test_samples_without_3d_are_not_scored_in_3d():
    samples = hand_samples(2)
    samples[1] = make_sample(samples[1]["image"], samples[1]["keypoints_2d"])     # a 2D-only sample
    targets = targets_of(samples)
    prediction = Prediction(keypoints_2d=targets["keypoints_2d"], keypoints_3d=torch.zeros(2, 21, 3))
    assert evaluate.score(prediction, targets)["num_samples"] == 2
    only_2d = targets_of([samples[1]])
    assert "epe_3d_mm" not in evaluate.score(Prediction(keypoints_2d=only_2d["keypoints_2d"],
                                                        keypoints_3d=torch.zeros(1, 21, 3)), only_2d)


def test_samples_without_an_answer_are_left_out_of_every_number_and_counted():
    targets = targets_of(hand_samples(3))
    predicted_2d = targets["keypoints_2d"] + torch.tensor([3.0, 4.0])              # 5 px off
    predicted_3d = targets["keypoints_3d"] - targets["keypoints_3d"][:, :1]
    predicted_2d[1], predicted_3d[1] = float("nan"), float("nan")                   # a detector found no hand
    row = evaluate.score(Prediction(keypoints_2d=predicted_2d, keypoints_3d=predicted_3d), targets)
    assert row["num_samples"] == 3 and row["num_answered"] == 2
    assert row["epe_2d_px"] == pytest.approx(5.0) and row["epe_procrustes_mm"] == pytest.approx(0.0, abs=1e-3)
    kept = torch.tensor([True, False, True])
    alone = evaluate.score(Prediction(keypoints_2d=predicted_2d[kept], keypoints_3d=predicted_3d[kept]),
                           {key: value[kept] for key, value in targets.items()})
    assert row == {**alone, "num_samples": 3}
    # No answer at all: NaN errors, no exception.
    nothing = Prediction(keypoints_2d=torch.full((3, 21, 2), float("nan")),
                         keypoints_3d=torch.full((3, 21, 3), float("nan")))
    empty = evaluate.score(nothing, targets)
    assert empty["num_answered"] == 0 and math.isnan(empty["epe_2d_px"])


def test_the_mesh_error_is_zero_for_the_true_mesh_and_grows_when_it_is_wrong():
    targets = targets_of(hand_samples(2, mano=True))
    true_mesh = evaluate.mesh_targets(targets["pose"], targets["betas"])          # (2, 778, 3) metres
    assert true_mesh.shape == (2, 778, 3)

    def mesh_error(vertices):
        prediction = Prediction(keypoints_2d=targets["keypoints_2d"], keypoints_3d=targets["keypoints_3d"],
                                vertices=vertices)
        return evaluate.score(prediction, targets)["mesh_error_mm"]

    # Procrustes alignment first: a moved, turned and scaled copy of the true mesh is still perfect.
    turned = true_mesh @ torch.linalg.matrix_exp(torch.tensor([[0.0, -0.3, 0], [0.3, 0, 0], [0, 0, 0]])).T
    assert mesh_error(1.3 * turned + 0.2) == pytest.approx(0.0, abs=1e-3)
    noise = 0.005 * torch.randn(true_mesh.shape, generator=torch.Generator().manual_seed(1))
    assert 1.0 < mesh_error(true_mesh + noise) < 10.0                            # a few mm of 5 mm noise


def test_the_table_puts_a_dash_where_a_row_has_no_value():
    rows = [{"method": "a", "epe_2d_px": 3.14159, "epe_3d_mm": 12.345, "auc_20_50": 0.87654},
            {"method": "b", "epe_2d_px": 2.0, "epe_3d_mm": float("nan")}]
    lines = evaluate.format_table(rows).splitlines()
    assert lines[0] == "| method | 3D EPE (mm) | AUC 20-50 mm | 2D EPE (px) |"      # columns no row has are left out
    assert lines[2] == "| a | 12.35 | 0.877 | 3.14 |"
    assert lines[3] == "| b | - | - | 2.00 |"
