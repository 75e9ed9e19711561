"""The method interface: what every paper of the course plugs into.

A *method* (one paper's network) is a ``Method``: its name, a config per profile, how to build its
model from a config, the *stages* it trains in, how it turns images into a ``Prediction``, and
its *variants* (the paper's ablations, as named config changes). The training loop
(``handlib.train``), the checkpoints (``handlib.checkpoints``) and the evaluation
(``handlib.evaluate``) know nothing else about a method, so a paper file never imports them::

    method = Method(name="zimmermann2017", configs={"quick": ..., "full": ...},
                    build_model=Zimmermann2017, stages=stages, predict=predict,
                    variants={"direct": Variant("direct lifting", {"lifting": "direct"})})
    train("zimmermann2017:direct")         # the variant: the config with lifting="direct"

A stage is what one training phase needs: its training data, its loss and its schedule (Zhou's
IKNet trains on pose data, Boukhayma pre-trains on parameters and then trains on images). A loss
gets the batch and a ``LossContext`` (the step and a seeded ``torch.Generator``), so every random
draw of a step depends on (seed, stage, step) alone and nothing global is touched.

This module is a leaf: it imports no model and no training code. The registry of the course's
methods is ``handlib.registry``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from handlib.data import synth
from handlib.files import DATA_DIR
from handlib.metrics import ALIGNMENTS
from handlib.runtime import PROFILES
from handlib.skeleton import NUM_KEYPOINTS

# Frames of ``Prediction.keypoints_3d``: "camera" (metres, OpenCV camera frame), "root_relative"
# (metres, wrist at the origin, camera axes), "normalized" (root-relative, in units of the middle
# finger's MCP-PIP bone, ``skeleton.SCALE_BONE``: Zimmermann & Brox's output, metric only with the
# true bone length).
FRAMES = ("camera", "root_relative", "normalized")
CACHE_DIR = DATA_DIR / "cache"


def check_shape(name: str, value, shape: tuple, unit: str = "") -> None:
    """Raise a ValueError that names the argument, the expected and the received shape, unless
    ``value`` is a tensor of ``shape`` (None: any size there; the first None reads "B", the batch).

    Example:
        >>> check_shape("keypoints", torch.zeros(2, 21, 3), (None, 21, 3), " in metres")
    """
    ok = (isinstance(value, torch.Tensor) and value.ndim == len(shape)
          and all(want is None or got == want for got, want in zip(value.shape, shape)))
    if not ok:
        want = ", ".join("B" if i == 0 and size is None else ("N" if size is None else str(size))
                         for i, size in enumerate(shape))
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected a tensor of shape ({want}){unit}, got {got}")


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """What a method says about a batch of hand crops.

    Attributes:
        keypoints_2d: (B, 21, 2) pixels of the input image, course order.
        keypoints_3d: (B, 21, 3) in ``frame`` (metres, or bone units for "normalized"), or None for
            a 2D-only method (the backbone).
        frame: one of ``FRAMES``.
        vertices: (B, V, 3) the hand mesh in the same frame as ``keypoints_3d``, for mesh methods.
        mano_pose: (B, 48) MANO axis-angle (global + 45 finger values), when the method has it.
        mano_betas: (B, 10) MANO shape.
        camera: (B, C) the method's camera parameters (e.g. Boukhayma's weak perspective s, tx, ty).
        extras: anything else a chapter wants to draw (masks, score maps); never scored.

    No answer. A system that can find no hand in an image (a detector such as MediaPipe Hands,
    ``handlib.peers``) gives NaN for every keypoint of that image, 2D and 3D: ``answered()`` is
    False there, and ``handlib.evaluate.score`` scores the answered images only and says how many.
    A sample is answered whole or not at all: NaN in some of its keypoints only is an error.
    """
    keypoints_2d: torch.Tensor
    keypoints_3d: torch.Tensor | None = None
    frame: str = "root_relative"
    vertices: torch.Tensor | None = None
    mano_pose: torch.Tensor | None = None
    mano_betas: torch.Tensor | None = None
    camera: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        batch = self.keypoints_2d.shape[0] if self.keypoints_2d.ndim == 3 else None
        expected = {"keypoints_2d": (NUM_KEYPOINTS, 2), "keypoints_3d": (NUM_KEYPOINTS, 3),
                    "vertices": (None, 3), "mano_pose": (48,), "mano_betas": (10,), "camera": (None,)}
        for name, tail in expected.items():
            value = getattr(self, name)
            if value is None:
                continue
            shape = tuple(value.shape)
            ok = (len(shape) == len(tail) + 1 and shape[0] == batch
                  and all(want is None or got == want for got, want in zip(shape[1:], tail)))
            if not ok:
                want = ", ".join(["B"] + ["N" if size is None else str(size) for size in tail])
                raise ValueError(f"Prediction.{name}: expected shape ({want}) with the batch of keypoints_2d, "
                                 f"got {shape}")
        if self.frame not in FRAMES:
            raise ValueError(f"Prediction.frame: expected one of {FRAMES}, got {self.frame!r}")
        if batch is not None and not self.keypoints_2d.is_meta:         # meta tensors hold no values to check
            self._check_unanswered()

    def _check_unanswered(self) -> None:
        """NaN keypoints mark a sample without an answer: all of its 2D and 3D keypoints, or none."""
        missing = [torch.isnan(value).flatten(1) for value in (self.keypoints_2d, self.keypoints_3d)
                   if value is not None]                                                  # (B, 42), (B, 63)
        if not any(m.any() for m in missing):
            return
        unanswered = missing[0].all(1)                                                    # (B,)
        partial = torch.zeros_like(unanswered)
        for m in missing:
            partial |= torch.where(unanswered, ~m.all(1), m.any(1))
        if partial.any():
            index = int(partial.nonzero()[0])
            raise ValueError(f"Prediction: sample {index} has NaN in some of its keypoints only; NaN marks a sample "
                             "without an answer and must fill all of its keypoints_2d and keypoints_3d (a model that "
                             "outputs NaN has diverged: check its training)")

    def __len__(self) -> int:
        return self.keypoints_2d.shape[0]

    def answered(self) -> torch.Tensor:
        """(B,) bool: the samples the prediction has keypoints for (not NaN; see "No answer")."""
        return ~torch.isnan(self.keypoints_2d).flatten(1).all(1)

    def select(self, index) -> "Prediction":
        """The prediction of some samples: ``index`` a (B,) bool mask or integer indices. Tensors in
        ``extras`` with the batch as first axis are selected too; other extras are kept as they are."""
        batch = len(self)
        extras = {key: value[index] if torch.is_tensor(value) and value.ndim and value.shape[0] == batch else value
                  for key, value in self.extras.items()}
        return dataclasses.replace(self, **{name: value[index] for name, value in self.tensors().items()},
                                   extras=extras)

    def tensors(self) -> dict:
        """The fields that are present, as {name: tensor} (``extras`` left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("frame", "extras") and getattr(self, f.name) is not None}

    def detach(self, device="cpu") -> "Prediction":
        """A copy with every tensor detached and moved to ``device`` (extras too, where tensors)."""
        extras = {key: value.detach().to(device) if torch.is_tensor(value) else value
                  for key, value in self.extras.items()}
        return dataclasses.replace(self, **{name: value.detach().to(device) for name, value in self.tensors().items()},
                                   extras=extras)

    @staticmethod
    def concatenate(predictions: list["Prediction"]) -> "Prediction":
        """One ``Prediction`` of the batches of ``predictions`` in order (``extras`` left out)."""
        if not predictions:
            raise ValueError("predictions: expected at least one Prediction")
        frames = {p.frame for p in predictions}
        if len(frames) != 1:
            raise ValueError(f"predictions: expected one frame, got {sorted(frames)}")
        names = predictions[0].tensors().keys()
        return Prediction(frame=frames.pop(), **{name: torch.cat([p.tensors()[name] for p in predictions])
                                                  for name in names})


# --------------------------------------------------------------------------------------------
# Stages, variants, methods
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """How long and how fast a stage trains (Adam with a step learning-rate schedule).

    Attributes:
        steps: optimiser steps.
        batch_size: samples per step.
        lr: initial learning rate.
        milestones: steps at which the learning rate is multiplied by ``gamma``.
        gamma: the factor applied at each milestone.
        weight_decay: Adam's L2 weight decay.
        checkpoint_every: a checkpoint is written every this many steps (and at the stage's end).
    """
    steps: int
    batch_size: int
    lr: float
    milestones: tuple = ()
    gamma: float = 0.1
    weight_decay: float = 0.0
    checkpoint_every: int = 250

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.checkpoint_every < 1:
            raise ValueError(f"Schedule: expected steps >= 0, batch_size >= 1, lr > 0, checkpoint_every >= 1, "
                             f"got {self}")

    def learning_rate_factor(self, step: int) -> float:
        """lr(step) / lr: ``gamma`` to the number of milestones passed."""
        return self.gamma ** sum(step >= milestone for milestone in self.milestones)


@dataclass(frozen=True)
class LossContext:
    """What a loss may know besides the batch.

    Attributes:
        step: the step within the stage (0-based).
        generator: a ``torch.Generator`` on the batch's device, seeded from (run seed, stage, step):
            draw every random number of the loss from it.
        stage: the stage's name.
    """
    step: int
    generator: torch.Generator
    stage: str


@dataclass(frozen=True)
class Stage:
    """One training phase of a method.

    Attributes:
        name: e.g. "images", "pretrain", "pose_data".
        schedule: its ``Schedule``.
        data: ``(seed) -> Dataset`` of sample dicts to draw the batches from.
        loss: ``(model, batch, context) -> (total, terms)``: a scalar tensor to minimise and a dict of
            named floats (or 0-d tensors) for the progress bar and the history.
        parameters: ``model -> iterable of parameters`` this stage trains; None = all of them.
        augment: ``(batch, generator) -> batch``, applied to every batch before the loss with the
            step's seeded generator (e.g. camera effects drawn anew over cached renders); None = none.
    """
    name: str
    schedule: Schedule
    data: Callable[[int], Dataset]
    loss: Callable[[nn.Module, dict, LossContext], tuple]
    parameters: Callable[[nn.Module], Any] | None = None
    augment: Callable[[dict, torch.Generator], dict] | None = None


@dataclass(frozen=True)
class Variant:
    """A named change of a method's config (an ablation): ``changes`` replace config fields.

    ``ships``: its ``full`` checkpoint ships with handlib (a chapter reads it), and
    ``make full-checkpoints`` trains it; False for the arms of an experiment that a benchmark script
    trains and reports (e.g. Cai et al.'s label fractions).
    """
    description: str
    changes: dict
    ships: bool = True


@dataclass(frozen=True)
class Method:
    """One paper's method, as the training loop, the checkpoints and the evaluation see it.

    Attributes:
        name: registry key, e.g. "zimmermann2017".
        description: one line for listings.
        configs: {profile: config}, a frozen dataclass per profile ("quick" and "full") holding every
            number of a run (model sizes, data sizes, schedules). It must have ``image_size`` (side of
            the square input crops, pixels) and ``test_samples`` (size of the fixed test set).
        build_model: ``config -> nn.Module``.
        stages: ``config -> list of Stage``, trained in order.
        predict: ``(model, batch, config) -> Prediction``; ``batch`` holds at least "image"
            (B, 3, S, S) in [0, 1] with S = config.image_size, and "is_right" (B,).
        test_data: ``(config, num_samples) -> Dataset``: the fixed test set.
        alignment: how ``handlib.metrics`` aligns ``keypoints_3d`` before the headline 3D error.
        variants: {name: Variant}, trained and evaluated as "name:variant".
        initialize: ``(model, config) -> None``, run once on a fresh model before training (e.g. load
            the shared backbone); None = nothing.
    """
    name: str
    description: str
    configs: dict
    build_model: Callable[[Any], nn.Module]
    stages: Callable[[Any], list]
    predict: Callable[[nn.Module, dict, Any], Prediction]
    test_data: Callable[[Any, int], Dataset]
    alignment: str = "root"
    variants: dict = field(default_factory=dict)
    initialize: Callable[[nn.Module, Any], None] | None = None

    def __post_init__(self):
        missing = [profile for profile in PROFILES if profile not in self.configs]
        if missing:
            raise ValueError(f"Method {self.name!r}: configs is missing {missing}; give one for each of {PROFILES}")
        for profile, config in self.configs.items():
            if not dataclasses.is_dataclass(config) or not all(hasattr(config, f) for f in ("image_size",
                                                                                            "test_samples")):
                raise ValueError(f"Method {self.name!r}: configs[{profile!r}] must be a dataclass with image_size "
                                 f"and test_samples, got {config!r}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"Method {self.name!r}: alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if ":" in self.name:
            raise ValueError(f"Method name {self.name!r}: ':' separates a method from its variant")

    def config(self, profile: str, variant: str | None = None, **overrides):
        """The config of a run: the profile's, changed by ``variant`` and then by ``overrides``.

        Raises:
            ValueError: an unknown profile, variant or config field.
        """
        if profile not in self.configs:
            raise ValueError(f"profile: expected one of {tuple(self.configs)}, got {profile!r}")
        changes = {}
        if variant is not None:
            if variant not in self.variants:
                raise ValueError(f"variant: {self.name} has no variant {variant!r}; expected one of "
                                 f"{sorted(self.variants) or 'none'}")
            changes.update(self.variants[variant].changes)
        changes.update(overrides)
        config = self.configs[profile]
        unknown = set(changes) - {f.name for f in dataclasses.fields(config)}
        if unknown:
            raise ValueError(f"config changes: {type(config).__name__} has no fields {sorted(unknown)}")
        return dataclasses.replace(config, **changes)


def split_name(name: str) -> tuple[str, str | None]:
    """"zimmermann2017:direct" -> ("zimmermann2017", "direct"); "zimmermann2017" -> (..., None)."""
    if not isinstance(name, str) or not name or name.count(":") > 1:
        raise ValueError(f"method: expected 'NAME' or 'NAME:VARIANT', got {name!r}")
    method, _, variant = name.partition(":")
    return method, variant or None


def full_name(method: str, variant: str | None) -> str:
    """The inverse of ``split_name``."""
    return method if variant is None else f"{method}:{variant}"


# --------------------------------------------------------------------------------------------
# The course's synthetic data (what every image method trains and is tested on)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageTraining:
    """The fields every image method's config shares: its data and its schedule. A method's config
    inherits them and adds its own (model sizes, loss weights, ...).

    Attributes:
        image_size: side of the square input crops, pixels.
        train_samples: size of the cached synthetic training set (read epoch after epoch).
        test_samples: size of the fixed synthetic test set.
        steps, batch_size, lr, milestones, checkpoint_every: the image stage's ``Schedule``.
        camera_effects: draw camera effects (``handlib.data.augment``) over every training batch.
        synth_knobs: ((knob, value), ...) changes of the synthetic engine's defaults for the training
            set (``handlib.data.synth.SynthConfig``), e.g. (("forearm", 0.0),) to train without forearms.
    """
    image_size: int = 128
    train_samples: int = 2048
    test_samples: int = 256
    steps: int = 120        # quick: about 2-3 minutes a method live on a 2-core CPU (five chapters train live in CI)
    batch_size: int = 16
    lr: float = 1e-3
    milestones: tuple = ()
    checkpoint_every: int = 100
    camera_effects: bool = True
    synth_knobs: tuple = ()

    def schedule(self) -> Schedule:
        return Schedule(self.steps, self.batch_size, self.lr, self.milestones, checkpoint_every=self.checkpoint_every)

    def synth_config(self) -> synth.SynthConfig:
        """The synthetic engine's knobs for the training set: ``image_size`` and ``synth_knobs``."""
        return synth.make_config(image_size=self.image_size, **dict(self.synth_knobs))


def image_stage(config: ImageTraining, loss, name: str = "images") -> Stage:
    """A stage that trains on the course's synthetic images: ``config.train_samples`` crops of
    ``config.image_size`` px, on ``config.schedule()``, minimising ``loss``."""
    return Stage(name, config.schedule(),
                 lambda seed: synthetic_training_set(config.train_samples, seed, config.image_size,
                                                     config.synth_config()),
                 loss, augment=with_camera_effects if config.camera_effects else None)


def with_camera_effects(batch: dict, generator: torch.Generator) -> dict:
    """The batch with camera effects drawn over its images (``handlib.data.augment``)."""
    from handlib.data.augment import camera_effects

    return {**batch, "image": camera_effects(batch["image"], generator)}


def synthetic_training_set(num_samples: int, seed: int, image_size: int,
                           config: synth.SynthConfig | None = None) -> Dataset:
    """The course's synthetic training hands, rendered once on every CPU core and cached on disk
    under ``CACHE_DIR`` (``synth.cached_set``); sample i of (seed, "train") is always the same.

    Args:
        config: the engine's knobs (default: its defaults at ``image_size``).

    Returns:
        a Dataset of sample dicts (``handlib.data.sample.SAMPLE_KEYS``), (3, S, S) images.
    """
    return synth.cached_set("train", num_samples, seed=seed, image_size=image_size, cache_dir=CACHE_DIR,
                            config=config)


def synthetic_test_set(config, num_samples: int | None = None) -> Dataset:
    """THE fixed synthetic test set of a config: ``num_samples`` (default ``config.test_samples``)
    images of ``config.image_size`` px, seed ``synth.DEFAULT_TEST_SEED``, cached; never overlaps a training set."""
    return synth.cached_test_set(num_samples or config.test_samples, seed=synth.DEFAULT_TEST_SEED, image_size=config.image_size,
                                 cache_dir=CACHE_DIR)
