"""One training loop for every method of the course: stages, steps, time limit, resume.

    result = train("zimmermann2017")                      # the profile from $HANDLIB_PROFILE
    result = train("zimmermann2017:direct", minutes=30)   # a variant; stops with a checkpoint

A method (``handlib.methods.Method``) trains in stages, one after the other; each stage draws its
batches from its own data, minimises its own loss with Adam on its schedule::

    for stage in method.stages(config):
        for step in range(stage.schedule.steps):
            batch = the samples batch_indices(step, ...) of stage.data(seed), stage.augment-ed
            total, terms = stage.loss(model, batch, LossContext(step, generator, stage.name))
            total.backward(); optimizer.step(); scheduler.step()

Everything random in a step (its batch, dropout, the loss's noise) depends on (seed, stage, step)
alone, and the global random state is restored after each step, so a run that is interrupted and
resumed ends with the same numbers as one that was not. Checkpoints: ``handlib.checkpoints``;
the final evaluation: ``handlib.evaluate``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from handlib import checkpoints
from handlib.evaluate import evaluate_model
from handlib.methods import LossContext, Method, Stage, full_name
from handlib.registry import get_method
from handlib.runtime import get_device, get_profile, to_device


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides a run's numbers; a checkpoint resumes only under the same one.

    Attributes:
        method, variant: what is trained (variant None: the method as published).
        profile: "quick" or "full".
        seed: seeds the initialisation, the batches and every random draw of the losses.
        config: the method's config for this profile and variant.
    """
    method: str
    variant: str | None
    profile: str
    seed: int
    config: Any

    @property
    def name(self) -> str:
        return full_name(self.method, self.variant)

    def as_dict(self) -> dict:
        return {"name": self.name, "method": self.method, "variant": self.variant, "profile": self.profile,
                "seed": self.seed, "config": dataclasses.asdict(self.config)}


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        name, profile: what was trained.
        checkpoint: path of the run's checkpoint.
        finished: every stage ran to its end (and ``metrics`` holds the fixed test set's numbers).
        position: {"stage", "index", "step"} where the run stands.
        metrics: ``handlib.evaluate.evaluate_model``'s dict, None until finished.
        history: {stage: {loss term: list of floats, one per step}}.
        wall_time_s: training time in seconds, summed over resumed runs.
    """
    name: str
    profile: str
    checkpoint: Path
    finished: bool
    position: dict
    metrics: dict | None
    history: dict = field(repr=False, default_factory=dict)
    wall_time_s: float = 0.0


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> list[int]:
    """Sample indices of the batch at ``step``: epochs of seeded permutations, read in order.

    Returns:
        list of ``batch_size`` ints in [0, num_samples).
    """
    if num_samples <= 0 or batch_size <= 0:
        raise ValueError(f"num_samples, batch_size: expected positive ints, got {num_samples}, {batch_size}")
    indices, position = [], step * batch_size
    while len(indices) < batch_size:
        epoch, offset = divmod(position, num_samples)
        order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = order[offset:offset + batch_size - len(indices)].tolist()
        indices += take
        position += len(take)
    return indices


def step_seed(seed: int, stage_index: int, step: int) -> int:
    """The seed of every random draw of one step."""
    return (seed * 1_000_003 + stage_index) * 10_000_019 + step


@contextlib.contextmanager
def _seeded_step(seed: int, device: torch.device):
    """Seed torch's global generators for one step (dropout), and restore them afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield torch.Generator(device).manual_seed(seed)


@contextlib.contextmanager
def _cudnn_autotune(device: torch.device):
    """On a GPU, let cuDNN time its kernels for the fixed input size; restore the setting afterwards.
    (A GPU run, like any cuDNN run, repeats its numbers only up to the kernels' rounding.)"""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda" or previous
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class _Run:
    """One run's mutable state: the model, where it stands, its history, and how to save it."""

    def __init__(self, method: Method, run: RunConfig, device: torch.device, path: Path, resume: bool):
        self.method, self.run, self.device, self.path = method, run, device, path
        torch.manual_seed(run.seed)       # the initialisation, inside train's fork_rng
        self.model = method.build_model(run.config).to(device)
        self.position, self.history, self.metrics, self.finished = {"stage": None, "index": 0, "step": 0}, {}, None, False
        self.optimizer_state, self.past_time, self.started = None, 0.0, time.perf_counter()
        if resume and path.is_file():
            state = checkpoints.read_checkpoint(path, "cpu")
            if state["run"] != run.as_dict():
                raise ValueError(f"{path}: this checkpoint was trained as {state['run']}, not as {run.as_dict()}; "
                                 "pass resume=False (--restart) to start over, or another run_dir")
            self.model.load_state_dict(state["model"])
            self.position, self.history, self.metrics = state["position"], state["history"], state["metrics"]
            self.finished, self.optimizer_state = state["finished"], state["optimizer"]
            self.past_time = state["provenance"]["wall_time_s"]
        elif method.initialize is not None:
            method.initialize(self.model, run.config)

    def wall_time(self) -> float:
        return self.past_time + time.perf_counter() - self.started

    def save(self, optimizer=None, scheduler=None) -> None:
        checkpoints.save_checkpoint(self.path, {
            "run": self.run.as_dict(), "position": self.position, "finished": self.finished,
            "model": self.model.state_dict(),
            "optimizer": None if optimizer is None else {"optimizer": optimizer.state_dict(),
                                                         "scheduler": scheduler.state_dict()},
            "history": self.history, "metrics": self.metrics,
            "provenance": checkpoints.provenance(self.run.as_dict(), self.device, self.wall_time())})


def _train_stage(state: _Run, stage: Stage, index: int, stop_at: int | None, deadline: float | None,
                 progress: bool) -> tuple[bool, bool]:
    """Train one stage from where ``state`` stands: (the stage reached its last step, the time ran out)."""
    schedule, seed = stage.schedule, state.run.seed
    parameters = list(stage.parameters(state.model) if stage.parameters else state.model.parameters())
    optimizer = torch.optim.Adam(parameters, lr=schedule.lr, weight_decay=schedule.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.learning_rate_factor)
    start = state.position["step"] if state.position["index"] == index else 0
    if start and state.optimizer_state is not None:
        optimizer.load_state_dict(state.optimizer_state["optimizer"])
        scheduler.load_state_dict(state.optimizer_state["scheduler"])
    state.position = {"stage": stage.name, "index": index, "step": start}
    stop = schedule.steps if stop_at is None else min(stop_at, schedule.steps)
    dataset = stage.data(seed) if start < stop else None
    history = state.history.setdefault(stage.name, {})
    bar = tqdm(total=schedule.steps, initial=start, desc=f"{state.run.name} ({state.run.profile}): {stage.name}",
               disable=not progress, dynamic_ncols=True)
    state.model.train()
    out_of_time = False
    try:
        for step in range(start, stop):
            indices = batch_indices(step, schedule.batch_size, len(dataset), seed * 131 + index)
            batch = to_device(default_collate([dataset[i] for i in indices]), state.device)
            with _seeded_step(step_seed(seed, index, step), state.device) as generator:
                if stage.augment is not None:
                    batch = stage.augment(batch, generator)
                total, terms = stage.loss(state.model, batch, LossContext(step, generator, stage.name))
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
            scheduler.step()
            state.position["step"] = step + 1
            for name, value in {"total": total, **terms}.items():
                history.setdefault(name, []).append(float(value.detach() if torch.is_tensor(value) else value))
            bar.update(1)
            bar.set_postfix({name: f"{values[-1]:.4g}" for name, values in history.items()}, refresh=False)
            out_of_time = deadline is not None and time.perf_counter() >= deadline
            if (step + 1) % schedule.checkpoint_every == 0 or step + 1 == stop or out_of_time:
                state.save(optimizer, scheduler)
            if out_of_time:
                break
    except KeyboardInterrupt:
        state.save(optimizer, scheduler)
        print(f"interrupted at step {state.position['step']} of stage {stage.name}; checkpoint {state.path} "
              "written, run again to resume", file=sys.stderr)
        raise
    finally:
        bar.close()
    state.optimizer_state = None
    return state.position["step"] >= schedule.steps, out_of_time


def train(method, variant: str | None = None, profile: str | None = None, seed: int = 0, device=None,
          run_dir=checkpoints.RUN_DIR, resume: bool = True, minutes: float | None = None, stop_at: int | None = None,
          progress: bool = True, overrides: dict | None = None) -> TrainResult:
    """Train a method (all its stages), resuming its run if there is one; evaluate it at the end.

    Args:
        method: a name ("zimmermann2017", "zimmermann2017:direct") or a ``Method``.
        variant: a variant of ``method`` (or give it in the name).
        profile: "quick" or "full"; None = ``runtime.get_profile()`` ($HANDLIB_PROFILE, or by device).
        seed: seeds the initialisation, the batches and every random draw of the losses.
        device: "cpu", "cuda", ...; None = CUDA when available.
        run_dir: folder of the run's checkpoint ``<name>-<profile>.pt`` and its record (default
            ``data/runs``; never the shipped checkpoints).
        resume: continue an existing run of the same ``RunConfig``; False starts over.
        minutes: stop after the first step that ends this long after the call began (a checkpoint
            is written; call again to resume).
        stop_at: stop every stage after this many steps, as if interrupted (tests).
        progress: show a progress bar per stage.
        overrides: config fields to change, e.g. ``{"train_samples": 512}`` (recorded in the run).

    Returns:
        ``TrainResult``.
    """
    method, variant = get_method(method, variant)
    profile = get_profile(profile)
    run = RunConfig(method.name, variant, profile, seed, method.config(profile, variant, **(overrides or {})))
    device = get_device(device)
    path = checkpoints.run_path(run.name, profile, run_dir)
    deadline = None if minutes is None else time.perf_counter() + 60.0 * minutes
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), \
            _cudnn_autotune(device):
        state = _Run(method, run, device, path, resume)
        stages = method.stages(run.config)
        for index, stage in enumerate(stages):
            if state.finished or index < state.position["index"]:
                continue
            complete, out_of_time = _train_stage(state, stage, index, stop_at, deadline, progress)
            if not complete or (out_of_time and index + 1 < len(stages)):   # the next stage waits for a resume
                break
        else:
            if not state.finished:
                state.finished = True
                state.metrics = evaluate_model(method, state.model, run.config, device=device)
                state.save()
    if not state.finished:
        print(f"stopped in stage {state.position['stage']} at step {state.position['step']}; checkpoint {path} "
              "written, run again to resume", file=sys.stderr)
    checkpoints.write_record(path, run.as_dict(), checkpoints.provenance(run.as_dict(), device, state.wall_time()),
                             state.position, state.history, state.metrics)
    return TrainResult(run.name, profile, path, state.finished, dict(state.position), state.metrics,
                       state.history, state.wall_time())
