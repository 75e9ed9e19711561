"""The training loop, the checkpoints and the command line, on a tiny method built here.

The tiny method's images are plain random colours and its hand a fixed linear function of the mean
colour (metres, in front of the camera), so a one-convolution model learns it in a few steps. It
is passed to ``train`` as a ``Method`` object: nothing is registered, except in the tests of
lookups by name, which patch ``handlib.registry.METHODS`` for their duration.
"""
import dataclasses
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from handlib import checkpoints, registry
from handlib import train as training
from handlib.data.sample import make_sample
from handlib.evaluate import evaluate, evaluate_model
from handlib.files import load_torch
from handlib.geometry import project_points
from handlib.methods import Method, Prediction, Schedule, Stage, Variant
from handlib.runtime import torch_threads

K = torch.tensor([[60.0, 0.0, 16.0], [0.0, 60.0, 16.0], [0.0, 0.0, 1.0]])
MIXING = torch.randn(63, 3, generator=torch.Generator().manual_seed(123)) * 0.1
TEST_SEED = 999


class ColourHands(Dataset):
    """``num_samples`` square images of one random colour (plus a little noise); keypoints_3d =
    MIXING @ mean colour + 0.5 m in z (metres), keypoints_2d its projection by ``K``."""

    def __init__(self, num_samples: int, seed: int, image_size: int):
        generator = torch.Generator().manual_seed(seed)
        self.samples = []
        for _ in range(num_samples):
            image = torch.rand(3, 1, 1, generator=generator) * torch.ones(3, image_size, image_size)
            image = (image + 0.05 * torch.rand(3, image_size, image_size, generator=generator)).clamp(0, 1)
            keypoints_3d = (MIXING @ image.mean((1, 2))).reshape(21, 3) + torch.tensor([0.0, 0.0, 0.5])
            self.samples.append(make_sample(image, project_points(keypoints_3d, K), K, keypoints_3d=keypoints_3d))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


@dataclass(frozen=True)
class TinyConfig:
    image_size: int = 32
    train_samples: int = 16
    test_samples: int = 8
    pretrain_steps: int = 0           # > 0: a first stage that trains the linear layer alone
    steps: int = 20
    batch_size: int = 4
    lr: float = 0.1
    milestones: tuple = (15,)
    checkpoint_every: int = 5


class TinyModel(nn.Module):
    """One convolution, average pooling, dropout, a linear layer (decimetres):
    image (B, 3, S, S) -> keypoints (B, 21, 3) metres."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.dropout = nn.Dropout(0.02)        # global random numbers: the loop must seed them per step
        self.linear = nn.Linear(4, 63)

    def forward(self, image):
        decimetres = self.linear(self.dropout(self.conv(image - 0.5).mean((2, 3)))).reshape(-1, 21, 3)
        return 0.1 * decimetres + torch.tensor([0.0, 0.0, 0.5])


def tiny_loss(model, batch, context):
    """Squared error in cm^2 against targets jittered by 1 mm (noise from the step's generator)."""
    noise = 0.001 * torch.randn(batch["keypoints_3d"].shape, generator=context.generator)
    error = ((model(batch["image"]) - batch["keypoints_3d"] - noise) * 100.0) ** 2
    return error.mean(), {"keypoints_cm2": error.mean()}


def tiny_stages(config, loss=tiny_loss):
    data = lambda seed: ColourHands(config.train_samples, seed, config.image_size)        # noqa: E731
    stages = [Stage("images", Schedule(config.steps, config.batch_size, config.lr, config.milestones,
                                       checkpoint_every=config.checkpoint_every), data, loss)]
    if config.pretrain_steps:
        pretrain = Schedule(config.pretrain_steps, config.batch_size, config.lr,
                            checkpoint_every=config.checkpoint_every)
        stages.insert(0, Stage("pretrain", pretrain, data, loss, parameters=lambda model: model.linear.parameters()))
    return stages


@torch.no_grad()
def tiny_predict(model, batch, config):
    keypoints_3d = model(batch["image"])
    return Prediction(keypoints_2d=project_points(keypoints_3d, batch["K"]), keypoints_3d=keypoints_3d,
                      frame="camera")


TINY = Method(name="tiny", description="a linear function of the mean colour",
              configs={"quick": TinyConfig(), "full": TinyConfig(steps=30)},
              build_model=lambda config: TinyModel(), stages=tiny_stages, predict=tiny_predict,
              test_data=lambda config, num_samples: ColourHands(num_samples, TEST_SEED, config.image_size),
              alignment="none",
              variants={"two_stage": Variant("pre-train the linear layer first", {"pretrain_steps": 6})})


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, the more so when other programs keep the cores busy."""
    with torch_threads(1):
        yield


def run(run_dir, method=TINY, **kwargs):
    return training.train(method, **{"profile": "quick", "device": "cpu", "seed": 3, "run_dir": run_dir,
                                     "progress": False, **kwargs})


def weights(result):
    return load_torch(result.checkpoint)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


# ---------------------------------------------------------------- training

def test_the_loss_drops_and_the_run_is_recorded(tmp_path):
    config = TINY.configs["quick"]
    result = run(tmp_path)
    assert result.finished and result.name == "tiny" and result.position == {"stage": "images", "index": 0,
                                                                              "step": config.steps}
    losses = result.history["images"]["total"]
    assert len(losses) == config.steps and result.history["images"]["keypoints_cm2"] == losses
    assert sum(losses[-3:]) < 0.2 * sum(losses[:3])
    # On the fixed test set, far better than the same model untrained.
    with torch.random.fork_rng():
        torch.manual_seed(3)
        untrained = evaluate_model(TINY, TinyModel(), config, device="cpu")
    assert result.metrics["num_samples"] == config.test_samples
    assert result.metrics["epe_3d_mm"] < 0.4 * untrained["epe_3d_mm"]
    assert result.checkpoint == tmp_path / "tiny-quick.pt"
    state = load_torch(result.checkpoint)
    assert state["finished"] and state["run"]["seed"] == 3 and state["run"]["config"]["steps"] == config.steps
    # A record beside it: how it was made, and its numbers once finished.
    record = json.loads(result.checkpoint.with_suffix(".json").read_text())
    assert {"command", "device", "device_name", "wall_time_s", "seed", "torch"} <= set(record["provenance"])
    assert record["provenance"]["seed"] == 3 and record["provenance"]["device"] == "cpu"
    assert 0 < record["provenance"]["wall_time_s"] == pytest.approx(result.wall_time_s, abs=1.0)
    assert record["metrics"]["epe_3d_mm"] == pytest.approx(result.metrics["epe_3d_mm"])
    assert record["final_losses"]["images"]["total"] == pytest.approx(sum(losses) / len(losses))
    markdown = result.checkpoint.with_suffix(".md").read_text()
    assert markdown.startswith("# tiny (quick profile)") and "epe_3d_mm" in markdown


def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path):
    straight = run(tmp_path / "straight")
    first = run(tmp_path / "resumed", stop_at=7)          # not on a checkpoint_every boundary
    assert not first.finished and first.position["step"] == 7 and first.metrics is None
    # The checkpoint holds where the run stands and the optimiser's state, learning rate included ...
    state = load_torch(first.checkpoint)
    assert state["position"]["step"] == 7 and state["optimizer"]["optimizer"]["param_groups"][0]["lr"] == 0.1
    second = run(tmp_path / "resumed", stop_at=16)
    # ... which fell by gamma = 0.1 at the milestone, step 15.
    lr = load_torch(second.checkpoint)["optimizer"]["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.1 * 0.1)
    resumed = run(tmp_path / "resumed")
    assert resumed.finished and resumed.history == straight.history and resumed.metrics == straight.metrics
    assert_same_weights(weights(resumed), weights(straight))


def test_a_two_stage_run_resumes_in_either_stage(tmp_path):
    straight = run(tmp_path / "straight", variant="two_stage")
    assert straight.name == "tiny:two_stage" and straight.checkpoint.name == "tiny-two_stage-quick.pt"
    assert [len(terms["total"]) for terms in straight.history.values()] == [6, 20]
    first = run(tmp_path / "resumed", variant="two_stage", stop_at=3)          # in the pretraining
    assert first.position == {"stage": "pretrain", "index": 0, "step": 3}
    # A stage trains only its parameters: the pretraining leaves the convolution as initialised.
    with torch.random.fork_rng():
        torch.manual_seed(3)
        initial = TinyModel().state_dict()
    assert torch.equal(weights(first)["conv.weight"], initial["conv.weight"])
    assert not torch.equal(weights(first)["linear.weight"], initial["linear.weight"])
    second = run(tmp_path / "resumed", variant="two_stage", stop_at=8)         # ends stage 1, stops in stage 2
    assert second.position == {"stage": "images", "index": 1, "step": 8} and not second.finished
    resumed = run(tmp_path / "resumed", variant="two_stage")
    assert resumed.finished and resumed.history == straight.history and resumed.metrics == straight.metrics
    assert_same_weights(weights(resumed), weights(straight))


def test_a_time_limit_stops_after_one_step_with_a_checkpoint_and_the_run_resumes(tmp_path, capsys):
    first = run(tmp_path, minutes=0)                      # out of time after the first step
    assert first.position["step"] == 1 and not first.finished
    assert load_torch(first.checkpoint)["position"]["step"] == 1
    assert "run again to resume" in capsys.readouterr().err
    resumed = run(tmp_path)
    assert resumed.finished and resumed.history == run(tmp_path / "straight").history


def test_a_time_limit_at_the_end_of_a_stage_does_not_start_the_next(tmp_path):
    # The next stage may begin by rendering its data set: out of time, it waits for the resume.
    shorter = {"overrides": {"pretrain_steps": 1}, "variant": "two_stage"}
    first = run(tmp_path, minutes=0, **shorter)
    assert first.position == {"stage": "pretrain", "index": 0, "step": 1} and list(first.history) == ["pretrain"]
    second = run(tmp_path, minutes=0, **shorter)            # each call makes progress: one step of stage 2
    assert second.position == {"stage": "images", "index": 1, "step": 1}
    resumed = run(tmp_path, **shorter)
    assert resumed.finished and resumed.history == run(tmp_path / "straight", **shorter).history


def test_keyboard_interrupt_writes_a_checkpoint_that_resumes_exactly(tmp_path, capsys):
    calls = {"count": 0, "interrupt_at": 8}

    def interrupting_loss(model, batch, context):
        calls["count"] += 1
        result = tiny_loss(model, batch, context)      # dropout and the generator have drawn by now
        if calls["count"] == calls["interrupt_at"]:
            raise KeyboardInterrupt                    # like Ctrl-C in the middle of the 8th step
        return result

    interruptible = dataclasses.replace(TINY, stages=lambda config: tiny_stages(config, interrupting_loss))
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, method=interruptible)
    assert load_torch(checkpoints.run_path("tiny", "quick", tmp_path))["position"]["step"] == 7
    assert "interrupted at step 7" in capsys.readouterr().err
    calls["interrupt_at"] = None
    resumed = run(tmp_path, method=interruptible)
    straight = run(tmp_path / "straight")
    assert resumed.history == straight.history and resumed.metrics == straight.metrics
    assert_same_weights(weights(resumed), weights(straight))


def test_resuming_under_another_config_is_refused(tmp_path):
    run(tmp_path, stop_at=5)
    with pytest.raises(ValueError, match="resume=False"):
        run(tmp_path, seed=4)
    with pytest.raises(ValueError, match="resume=False"):
        run(tmp_path, overrides={"lr": 0.01})
    restarted = run(tmp_path, seed=4, resume=False, stop_at=2)        # starting over is allowed
    assert restarted.position["step"] == 2 and load_torch(restarted.checkpoint)["run"]["seed"] == 4


def test_overrides_change_the_run_and_are_recorded(tmp_path):
    result = run(tmp_path, overrides={"steps": 7, "milestones": ()})
    assert result.finished and len(result.history["images"]["total"]) == 7
    assert load_torch(result.checkpoint)["run"]["config"]["steps"] == 7       # recorded, so resume checks it
    with pytest.raises(ValueError, match=r"no fields \['stpes'\]"):
        run(tmp_path / "other", overrides={"stpes": 7})


def test_every_random_draw_depends_on_seed_stage_and_step_and_nothing_global_changes(tmp_path):
    draws = []

    def recording_loss(model, batch, context):
        draws.append((context.stage, context.step, torch.rand(2, generator=context.generator).tolist(),
                      torch.rand(2).tolist()))     # the global generator: what dropout draws from
        return tiny_loss(model, batch, context)

    recording = dataclasses.replace(TINY, stages=lambda config: tiny_stages(config, recording_loss))
    torch.manual_seed(1234)
    global_state = torch.get_rng_state()
    for autotune in (False, True):
        torch.backends.cudnn.benchmark = autotune
        run(tmp_path / str(autotune), method=recording, variant="two_stage", overrides={"steps": 3})
        assert torch.backends.cudnn.benchmark is autotune
    torch.backends.cudnn.benchmark = False
    assert torch.equal(torch.get_rng_state(), global_state)
    # Two runs of the same seed draw the same numbers at every (stage, step) ...
    assert len(draws) == 2 * (6 + 3) and draws[:9] == draws[9:]
    # ... and those of the step's generator are the draws of step_seed(seed, stage index, step).
    for stage, step, drawn, _ in draws[:9]:
        expected = torch.Generator().manual_seed(training.step_seed(3, {"pretrain": 0, "images": 1}[stage], step))
        assert drawn == torch.rand(2, generator=expected).tolist()
    assert len({tuple(drawn) for _, _, drawn, _ in draws[:9]}) == 9            # every step draws anew
    assert len({tuple(global_draw) for *_, global_draw in draws[:9]}) == 9


def test_a_stage_augments_each_batch_with_the_steps_generator_before_the_loss(tmp_path):
    seen = []

    def darker(batch, generator):
        seen.append(torch.rand(1, generator=generator).item())
        return {**batch, "image": batch["image"] * 0.0}

    def checking_loss(model, batch, context):
        assert batch["image"].abs().max() == 0                                 # the loss gets the augmented batch
        return tiny_loss(model, batch, context)

    augmented = dataclasses.replace(TINY, stages=lambda config: [
        dataclasses.replace(stage, augment=darker) for stage in tiny_stages(config, checking_loss)])
    run(tmp_path, method=augmented, overrides={"steps": 3})
    assert seen == [torch.rand(1, generator=torch.Generator().manual_seed(training.step_seed(3, 0, step))).item()
                    for step in range(3)]


def test_batches_depend_only_on_their_arguments_and_read_each_epoch_once():
    first = [training.batch_indices(step, 8, 20, seed=1) for step in range(5)]
    assert first == [training.batch_indices(step, 8, 20, seed=1) for step in range(5)]
    assert first != [training.batch_indices(step, 8, 20, seed=2) for step in range(5)]
    # Steps 0-1 and half of step 2 are one epoch: a permutation of the 20 samples; then the next.
    stream = sum(first, [])
    assert sorted(stream[:20]) == list(range(20)) and sorted(stream[20:40]) == list(range(20))
    assert stream[:20] != stream[20:40]
    assert training.batch_indices(3, 4, 10, seed=0) == stream_of(4, 10, 0)[12:16]
    with pytest.raises(ValueError, match="positive"):
        training.batch_indices(0, 4, 0, seed=0)


def stream_of(batch_size, num_samples, seed, steps=5):
    return sum((training.batch_indices(step, batch_size, num_samples, seed) for step in range(steps)), [])


# ---------------------------------------------------------------- checkpoints

@pytest.fixture
def registered(monkeypatch, tmp_path):
    """The tiny method in the registry, and an empty folder of shipped checkpoints, for this test only."""
    monkeypatch.setattr(registry, "METHODS", {**registry.METHODS, TINY.name: TINY})
    monkeypatch.setattr(checkpoints, "SHIPPED_DIR", tmp_path / "shipped")
    return tmp_path / "shipped"


def test_runs_and_shipped_checkpoints_are_never_mixed_up(tmp_path, registered):
    runs = tmp_path / "runs"
    early = run(runs, stop_at=4)
    # Nothing ships yet: the error says how to train and ship it, though a run exists.
    with pytest.raises(FileNotFoundError, match="python -m handlib train tiny --profile quick.*export tiny"):
        checkpoints.find_checkpoint("tiny", "quick")
    assert checkpoints.find_checkpoint("tiny", "quick", runs) == early.checkpoint
    with pytest.raises(FileNotFoundError, match=f"in {tmp_path / 'elsewhere'}"):
        checkpoints.find_checkpoint("tiny", "quick", tmp_path / "elsewhere")
    # An unfinished run does not ship.
    with pytest.raises(ValueError, match="has not finished"):
        checkpoints.export_checkpoint(early.checkpoint, checkpoints.shipped_path("tiny", "quick"))
    assert not registered.exists()
    finished = run(runs)
    shipped = checkpoints.export_checkpoint(finished.checkpoint, checkpoints.shipped_path("tiny", "quick"),
                                            note="Made by a test.")
    assert shipped == registered / "tiny-quick.pt"
    # A slim copy: weights, run, history and metrics, no optimiser state; its records beside it.
    state = load_torch(shipped)
    assert "optimizer" not in state and state["history"] == finished.history and state["metrics"] == finished.metrics
    assert "Made by a test." in shipped.with_suffix(".md").read_text()
    assert json.loads(shipped.with_suffix(".json").read_text())["provenance"]["note"] == "Made by a test."
    assert checkpoints.find_checkpoint("tiny", "quick") == shipped
    # A new run in the run folder changes nothing of what ships.
    run(runs, seed=5, resume=False, stop_at=2)
    assert checkpoints.find_checkpoint("tiny", "quick") == shipped
    method, model, config = checkpoints.load_model("tiny", "quick", device="cpu")
    assert method is TINY and config == TINY.configs["quick"] and not model.training
    assert_same_weights(model.state_dict(), state["model"])
    assert evaluate("tiny", "quick", device="cpu") == finished.metrics                    # the shipped one
    assert evaluate("tiny", "quick", run_dir=runs, device="cpu")["num_samples"] == 8       # the new run's
    # A checkpoint of one method does not load as another.
    with pytest.raises(ValueError, match="a checkpoint of 'tiny', not of 'zimmermann2017'"):
        checkpoints.load_model("zimmermann2017", checkpoint=shipped, device="cpu")
    with pytest.raises(ValueError, match="not of 'tiny:two_stage'"):
        checkpoints.load_model("tiny:two_stage", checkpoint=shipped, device="cpu")


def test_copy_weights_starts_part_of_a_model_from_a_shipped_one(tmp_path, registered):
    finished = run(tmp_path / "runs")
    checkpoints.export_checkpoint(finished.checkpoint, checkpoints.shipped_path("tiny", "quick"))
    model = TinyModel()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert checkpoints.copy_weights(model, "tiny", ("conv.",), profile="quick") == ["conv.weight", "conv.bias"]
    shipped = load_torch(checkpoints.shipped_path("tiny", "quick"))["model"]
    assert torch.equal(model.conv.weight, shipped["conv.weight"])                   # copied
    assert torch.equal(model.linear.weight, before["linear.weight"])                # left as it was
    with pytest.raises(ValueError, match="no weight of 'tiny' starts with"):
        checkpoints.copy_weights(model, "tiny", ("encoder.",), profile="quick")
    model.linear = nn.Linear(4, 5)
    with pytest.raises(ValueError, match="does not fit"):
        checkpoints.copy_weights(model, "tiny", ("linear.",), profile="quick")


def test_unreadable_checkpoints_are_refused_with_a_clear_error(tmp_path):
    other_format = tmp_path / "old.pt"
    torch.save({"step": 3, "model": {}}, other_format)                  # e.g. a checkpoint of an older handlib
    with pytest.raises(ValueError, match=f"format None, this handlib reads format {checkpoints.CHECKPOINT_FORMAT}"):
        checkpoints.read_checkpoint(other_format, "cpu")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_torch(garbage)
    with pytest.raises(FileNotFoundError):
        checkpoints.read_checkpoint(tmp_path / "missing.pt", "cpu")
    with pytest.raises(FileNotFoundError, match="train it first"):
        checkpoints.export_checkpoint(tmp_path / "missing.pt", tmp_path / "out.pt")


# ---------------------------------------------------------------- the command line

def test_the_command_line_trains_resumes_evaluates_exports_and_benchmarks(tmp_path, capsys, registered):
    from handlib.__main__ import main

    runs = str(tmp_path / "runs")
    train = ["train", "tiny", "--profile", "quick", "--device", "cpu", "--seed", "3", "--run-dir", runs]
    assert main([*train, "--minutes", "0"]) == 0
    assert "not finished: run the same command again" in capsys.readouterr().out
    assert main(["export", "tiny", "--profile", "quick", "--run-dir", runs]) == 2      # unfinished: nothing ships
    assert "error:" in capsys.readouterr().err and not registered.exists()
    assert main(train) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "| tiny | quick |" in out
    assert main(["evaluate", "tiny", "--checkpoint", f"{runs}/tiny-quick.pt", "--device", "cpu"]) == 0
    assert "| tiny |" in capsys.readouterr().out
    assert main(["export", "tiny", "--profile", "quick", "--run-dir", runs, "--note", "Made by a test."]) == 0
    capsys.readouterr()
    shipped = registered / "tiny-quick.pt"
    assert "optimizer" not in load_torch(shipped) and "Made by a test." in shipped.with_suffix(".md").read_text()
    assert main(["benchmark", "--profile", "quick", "--run-dir", runs, "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "| tiny | quick |" in table and "no quick checkpoint: backbone, zimmermann2017" in table
    assert main(["train", "no_such_method", "--run-dir", runs]) == 2                   # a clear error, no traceback
    assert capsys.readouterr().err.startswith("error: method: unknown method 'no_such_method'")


# ---------------------------------------------------------------- the synthetic training set's cache

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
