"""The training loop on a tiny method: the loss drops, checkpoints resume exactly, evaluation works.

The tiny method's images are random colours and its keypoints a fixed linear function of the mean
colour, so a linear model on the average-pooled image can learn them exactly.
"""
import json

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from handlib import train as training
from handlib.data.sample import make_sample
from handlib.files import load_torch
from handlib.geometry import project_points

K = torch.tensor([[40.0, 0.0, 8.0], [0.0, 40.0, 8.0], [0.0, 0.0, 1.0]])
MIXING = torch.randn(63, 3, generator=torch.Generator().manual_seed(123)) * 0.1


class ColourHands(Dataset):
    """``num_samples`` 16 x 16 images of random colour; keypoints_3d = MIXING @ mean colour + 0.5 m in z (metres)."""

    def __init__(self, num_samples: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.samples = []
        for _ in range(num_samples):
            image = torch.rand(3, 1, 1, generator=generator) * torch.ones(3, 16, 16)
            image = (image + 0.05 * torch.rand(3, 16, 16, generator=generator)).clamp(0, 1)
            keypoints_3d = (MIXING @ image.mean((1, 2))).reshape(21, 3) + torch.tensor([0.0, 0.0, 0.5])
            self.samples.append(make_sample(image, project_points(keypoints_3d, K), K, keypoints_3d=keypoints_3d))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


class TinyModel(nn.Module):
    """Average pool -> dropout -> linear (in decimetres): image (B, 3, H, W) -> keypoints (B, 21, 3) metres."""

    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.02)        # random numbers in the loss, so resuming must restore RNG state
        self.linear = nn.Linear(3, 63)

    def forward(self, image):
        decimetres = self.linear(self.dropout(image.mean((2, 3)) - 0.5)).reshape(-1, 21, 3)
        return 0.1 * decimetres + torch.tensor([0.0, 0.0, 0.5])


def tiny_loss(model, batch):
    error = ((model(batch["image"]) - batch["keypoints_3d"]) * 100.0) ** 2     # centimetres squared
    return error.mean(), {"keypoints_cm2": error.mean()}


def tiny_predict(model, batch):
    keypoints_3d = model(batch["image"])
    return {"keypoints_3d": keypoints_3d, "keypoints_2d": project_points(keypoints_3d, batch["K"])}


PROFILE = training.TrainingProfile(steps=60, batch_size=8, lr=0.1, milestones=(45,), train_samples=50,
                                   test_samples=16, image_size=16, checkpoint_every=5)
training.register_method(training.MethodSpec(
    name="tiny_test_method", build_model=lambda profile: TinyModel(), loss=tiny_loss, predict=tiny_predict,
    profiles={"quick": PROFILE, "full": PROFILE}, alignment="none",
    make_dataset=lambda split, num_samples, seed, image_size: ColourHands(num_samples, seed)))


def run(tmp_path, **kwargs):
    return training.train("tiny_test_method", profile="quick", device="cpu", seed=3, checkpoint_dir=tmp_path,
                          progress=False, **kwargs)


def test_loss_drops_and_the_run_is_recorded(tmp_path):
    result = run(tmp_path)
    assert result.finished and result.step == PROFILE.steps
    losses = result.history["total"]
    assert len(losses) == PROFILE.steps
    assert sum(losses[-5:]) < 0.2 * sum(losses[:5])
    assert result.metrics["epe_3d_mm"] < 20.0 and result.metrics["num_samples"] == PROFILE.test_samples
    # The checkpoint is a weights_only file with everything needed to resume, and a record beside it.
    state = load_torch(result.checkpoint)
    assert state["step"] == PROFILE.steps and state["config"]["seed"] == 3
    assert {"model", "optimizer", "scheduler", "rng", "history", "metrics"} <= set(state)
    assert {"command", "profile", "device", "device_name", "wall_time_s", "seed", "torch"} <= set(state["provenance"])
    assert "CPU" in state["provenance"]["device_name"]
    record = json.loads(result.checkpoint.with_suffix(".json").read_text())
    assert record["metrics"]["epe_3d_mm"] == pytest.approx(result.metrics["epe_3d_mm"])
    assert "epe_3d_mm" in result.checkpoint.with_suffix(".md").read_text()
    # The learning-rate schedule: gamma after the milestone.
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * 0.1)


def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path):
    straight = run(tmp_path / "straight")
    first = run(tmp_path / "resumed", stop_at=13)     # not on a checkpoint_every boundary
    assert not first.finished and first.step == 13 and first.metrics is None
    resumed = run(tmp_path / "resumed")
    assert resumed.finished and resumed.history == straight.history
    assert resumed.metrics == straight.metrics
    a, b = load_torch(straight.checkpoint)["model"], load_torch(resumed.checkpoint)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_a_time_limit_stops_with_a_checkpoint_and_the_run_resumes(tmp_path, capsys):
    first = run(tmp_path, time_limit_s=0.0)           # out of time after the first step
    assert first.step == 1 and not first.finished
    assert load_torch(first.checkpoint)["step"] == 1
    assert "run again to resume" in capsys.readouterr().err
    resumed = run(tmp_path)
    assert resumed.finished and resumed.history == run(tmp_path / "straight").history


def test_keyboard_interrupt_writes_a_checkpoint_that_resumes_exactly(tmp_path):
    spec = training.get_method("tiny_test_method")
    calls = {"count": 0, "interrupt_at": 8}

    def interrupting_loss(model, batch):
        calls["count"] += 1
        result = tiny_loss(model, batch)            # the dropout has drawn random numbers by now
        if calls["count"] == calls["interrupt_at"]:
            raise KeyboardInterrupt                 # like Ctrl-C in the middle of step 8
        return result

    training.register_method(training.MethodSpec(
        name="tiny_interrupted", build_model=spec.build_model, loss=interrupting_loss, predict=spec.predict,
        profiles=spec.profiles, alignment="none", make_dataset=spec.make_dataset))
    interrupted = dict(method_name="tiny_interrupted", profile="quick", device="cpu", seed=3,
                       checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(KeyboardInterrupt):
        training.train(**interrupted)
    assert load_torch(training.checkpoint_path("tiny_interrupted", "quick", tmp_path))["step"] == 7
    calls["interrupt_at"] = None
    resumed = training.train(**interrupted)
    assert resumed.history == run(tmp_path / "straight").history


def test_resuming_under_another_config_is_refused(tmp_path):
    run(tmp_path, stop_at=5)
    with pytest.raises(ValueError, match="resume=False"):
        training.train("tiny_test_method", profile="quick", device="cpu", seed=4, checkpoint_dir=tmp_path,
                       progress=False)
    assert run(tmp_path, resume=False, stop_at=2).step == 2      # starting over is allowed


def test_evaluate_loads_the_checkpoint_and_repeats_the_numbers(tmp_path):
    result = run(tmp_path)
    metrics = training.evaluate("tiny_test_method", profile="quick", device="cpu", checkpoint_dir=tmp_path)
    assert metrics == result.metrics
    model = training.load_model("tiny_test_method", result.checkpoint, device="cpu")
    assert not model.training


def test_batches_depend_only_on_seed_and_step():
    first = [training.batch_indices(step, 8, 20, seed=1) for step in range(5)]
    assert first == [training.batch_indices(step, 8, 20, seed=1) for step in range(5)]
    assert first != [training.batch_indices(step, 8, 20, seed=2) for step in range(5)]
    # Steps 0-1 and half of step 2 are one epoch: a permutation of the 20 samples.
    epoch = first[0] + first[1] + first[2][:4]
    assert sorted(epoch) == list(range(20))


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown method"):
        training.get_method("no_such_method")
    with pytest.raises(ValueError, match="profiles"):
        training.MethodSpec(name="broken", build_model=TinyModel, loss=tiny_loss, predict=tiny_predict,
                            profiles={"quick": PROFILE})
    assert "zimmermann2017" in training.available_methods()


def test_benchmark_lists_the_trained_methods(tmp_path, capsys):
    result = run(tmp_path)
    training.register_method(training.MethodSpec(
        name="tiny_never_trained", build_model=lambda profile: TinyModel(), loss=tiny_loss, predict=tiny_predict,
        profiles={"quick": PROFILE, "full": PROFILE}, alignment="none"))
    rows = training.benchmark("quick", "cpu", tmp_path, methods=["tiny_test_method", "tiny_never_trained"],
                              verbose=True)
    assert [row["method"] for row in rows] == ["tiny_test_method"]
    assert rows[0]["epe_3d_mm"] == result.metrics["epe_3d_mm"]
    printed = capsys.readouterr().out
    assert "| tiny_test_method | quick |" in printed and "not trained (quick): tiny_never_trained" in printed


def test_shipped_checkpoints_are_found_when_you_have_none(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "COMMITTED_CHECKPOINT_DIR", tmp_path / "shipped")
    mine, empty = tmp_path / "mine", tmp_path / "empty"
    result = run(mine)
    with pytest.raises(FileNotFoundError, match="python -m handlib train tiny_test_method"):
        training.find_checkpoint("tiny_test_method", "quick", empty)
    # A slim copy ships: weights, config, history, provenance and metrics, no optimiser state.
    shipped = training.export_checkpoint(result.checkpoint, tmp_path / "shipped" / result.checkpoint.name,
                                         note="A test run.")
    state = load_torch(shipped)
    assert "optimizer" not in state and "rng" not in state and state["history"] == result.history
    assert "A test run." in shipped.with_suffix(".md").read_text()
    # One lookup: yours first, else the shipped one; evaluate and load_model use it.
    assert training.find_checkpoint("tiny_test_method", "quick", mine) == result.checkpoint
    assert training.find_checkpoint("tiny_test_method", "quick", empty) == shipped
    assert training.evaluate("tiny_test_method", profile="quick", device="cpu", checkpoint_dir=empty) == result.metrics
    assert not training.load_model("tiny_test_method", profile="quick", device="cpu", checkpoint_dir=empty).training
    # A run stopped early ships only with metrics measured for it; its own checkpoint stays resumable.
    early = run(tmp_path / "early", stop_at=10)
    with pytest.raises(ValueError, match="has not finished"):
        training.export_checkpoint(early.checkpoint, tmp_path / "early-shipped.pt")
    row = training.evaluate("tiny_test_method", early.checkpoint, device="cpu")
    shipped_early = training.export_checkpoint(early.checkpoint, tmp_path / "early-shipped.pt", metrics=row)
    assert load_torch(shipped_early)["metrics"] == row and load_torch(early.checkpoint)["metrics"] is None


def test_overrides_make_a_longer_run_of_the_same_profile(tmp_path):
    result = run(tmp_path, overrides={"steps": 70, "milestones": (60,)})
    assert result.step == 70 and len(result.history["total"]) == 70
    assert load_torch(result.checkpoint)["config"]["steps"] == 70          # recorded, so resume checks it
    with pytest.raises(ValueError, match="unknown TrainingProfile fields"):
        run(tmp_path / "other", overrides={"stpes": 70})


def test_the_training_set_is_rendered_once_and_read_from_the_cache(tmp_path, monkeypatch):
    from handlib.data import synth

    cached = synth.cached_set("train", 3, seed=5, image_size=32, cache_dir=tmp_path, progress=False, chunk_size=4)
    rendered = synth.render_batch([0, 1, 2], 5, "train", synth.make_config(image_size=32))
    assert len(cached) == 3 and "synth_train_seed5_32px" in cached.directory.name
    assert torch.allclose(torch.stack([cached[i]["image"] for i in range(3)]), rendered["image"], atol=1 / 255)
    assert torch.allclose(torch.stack([cached[i]["keypoints_2d"] for i in range(3)]), rendered["keypoints_2d"])

    def no_rendering(*args, **kwargs):
        raise AssertionError("the cached set was rendered again")

    monkeypatch.setattr(synth, "render_batch", no_rendering)
    again = synth.cached_set("train", 3, seed=5, image_size=32, cache_dir=tmp_path, progress=False, chunk_size=4)
    assert torch.equal(again[2]["image"], cached[2]["image"])
    with pytest.raises(ValueError, match="split"):
        synth.cached_set("validation", 3, seed=5, image_size=32, cache_dir=tmp_path)


def test_command_line_trains_with_a_time_limit_resumes_evaluates_and_exports(tmp_path, capsys, monkeypatch):
    from handlib.__main__ import main

    monkeypatch.setattr(training, "COMMITTED_CHECKPOINT_DIR", tmp_path / "shipped")
    where = ["tiny_test_method", "--profile", "quick", "--checkpoint-dir", str(tmp_path)]
    assert main(["train", *where, "--device", "cpu", "--seed", "3", "--minutes", "0"]) == 0
    assert "step 1," in capsys.readouterr().out
    assert main(["export", *where]) == 2                                   # unfinished: nothing shipped
    assert "has not finished" in capsys.readouterr().err and not (tmp_path / "shipped").exists()
    assert main(["train", *where, "--device", "cpu", "--seed", "3"]) == 0
    trained = capsys.readouterr().out
    assert f"step {PROFILE.steps}," in trained and "| tiny_test_method | quick |" in trained
    assert main(["evaluate", *where, "--device", "cpu"]) == 0
    assert "| tiny_test_method | quick |" in capsys.readouterr().out
    assert main(["export", *where, "--note", "Made by a test."]) == 0
    shipped = tmp_path / "shipped" / "tiny_test_method-quick.pt"
    assert "optimizer" not in load_torch(shipped) and "Made by a test." in shipped.with_suffix(".md").read_text()
    assert main(["generate", "tiny_test_method", "--profile", "quick"]) == 0
    assert main(["evaluate", "no_such_method"]) == 2                       # a clear error, no traceback
    assert "unknown method" in capsys.readouterr().err
