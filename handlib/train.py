"""One training loop for every method of the course, with profiles, checkpoints and resume.

A *method* (one paper's network) is described by a ``MethodSpec``: how to build its model, its
loss, how to turn its outputs into keypoints, and the hyper-parameters of each profile. The loop
below knows nothing else about it::

    spec = get_method("zimmermann2017")
    model = spec.build_model(profile)
    for step in range(start, steps):
        total, terms = spec.loss(model, batch)     # total: scalar tensor; terms: {name: float}
        total.backward(); optimizer.step(); scheduler.step()

Everything is seeded: the batch drawn at step ``i`` depends only on (seed, i), and a checkpoint
holds the model, optimiser, scheduler, step and random number generator states, so a run that is
interrupted and resumed ends with the same numbers as one that was not.

A checkpoint ``<checkpoint_dir>/<method>-<profile>.pt`` is written every
``TrainingProfile.checkpoint_every`` steps and at the end (atomically, ``handlib.files``), with a
short record ``.json`` and ``.md`` beside it. It is read with ``weights_only=True``.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from handlib import metrics
from handlib.data.synth import DEFAULT_TEST_SEED
from handlib.files import atomic_path, load_torch, save_torch
from handlib.runtime import PROFILES, available_cpus, get_device, get_profile, seed_everything

DEFAULT_CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "data" / "cache"
# Checkpoints that ship with handlib (small, with their records): used when DEFAULT_CHECKPOINT_DIR has none.
COMMITTED_CHECKPOINT_DIR = Path(__file__).resolve().parent / "assets" / "checkpoints"
# The fixed test set has its own seed, so it is the same whatever seed a run trains with; the "test"
# split never repeats a "train" sample.
TEST_SEED = DEFAULT_TEST_SEED
# Training sets up to this many samples are rendered once (by every CPU core in parallel), cached
# on disk and held in memory: rendering a sample costs more than a training step of the small
# networks here, on a CPU and on a GPU. The full profiles' 60 000 samples of 128 px take 5.9 GB.
# Larger sets are rendered on the fly by the DataLoader's workers.
TRAIN_CACHE_LIMIT = 100_000
CHECKPOINT_FORMAT = 1
# Modules that register methods when imported (each calls ``register_method``). Add new ones here.
METHOD_MODULES = ["handlib.models.zimmermann2017"]


# --------------------------------------------------------------------------------------------
# Method interface
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingProfile:
    """Hyper-parameters of one profile ("quick" or "full") of a method.

    Attributes:
        steps: optimiser steps in total.
        batch_size: samples per step.
        lr: initial learning rate (Adam).
        milestones: steps at which the learning rate is multiplied by ``gamma``.
        gamma: the factor applied at each milestone.
        weight_decay: Adam's L2 weight decay.
        train_samples: size of the training set (batches are drawn from it, epoch after epoch).
        test_samples: size of the fixed test set used by ``evaluate``.
        image_size: side of the square input images, pixels.
        checkpoint_every: a checkpoint is written every this many steps (and at the end).
        num_workers: DataLoader worker processes (0 = load in the training process).
    """
    steps: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    weight_decay: float = 0.0
    train_samples: int = 2000
    test_samples: int = 200
    image_size: int = 128
    checkpoint_every: int = 500
    num_workers: int = 0

    def learning_rate_factor(self, step: int) -> float:
        """lr(step) / lr: ``gamma`` to the number of milestones passed (a step schedule)."""
        return self.gamma ** sum(step >= milestone for milestone in self.milestones)


def synthetic_dataset(split: str, num_samples: int, seed: int, image_size: int = 128) -> Dataset:
    """THE place where training meets data: the course's synthetic hands (``handlib.data.synth``).

    Every method's default ``MethodSpec.make_dataset``. Sample i of (seed, split) is always the
    same. "test" is the fixed test set, rendered once and cached on disk under
    ``DEFAULT_CACHE_DIR`` (``cached_test_set``). "train" is cached the same way
    (``synth.cached_set``) when it has at most ``TRAIN_CACHE_LIMIT`` samples: rendering a sample
    costs more than a small network's training step on a CPU, so the loop reads the cached set
    epoch after epoch instead of rendering every batch anew. Larger training sets are rendered on
    the fly (``SyntheticHandDataset``, in the DataLoader's worker processes).

    Args:
        split: "train" or "test".
        num_samples: number of samples.
        seed: seed of the samples (``TEST_SEED`` for the benchmark's test set).
        image_size: side of the square images, pixels.

    Returns:
        A ``torch.utils.data.Dataset`` of sample dicts (``handlib.data.sample.SAMPLE_KEYS``).
    """
    from handlib.data import synth

    if split == "train" and num_samples > TRAIN_CACHE_LIMIT:
        return synth.SyntheticHandDataset(num_samples, seed=seed, split="train", image_size=image_size)
    if split == "train":
        return synth.cached_set("train", num_samples, seed=seed, image_size=image_size, cache_dir=DEFAULT_CACHE_DIR)
    if split == "test":
        return synth.cached_test_set(num_samples, seed=seed, image_size=image_size, cache_dir=DEFAULT_CACHE_DIR)
    raise ValueError(f"split: expected 'train' or 'test', got {split!r}")


@dataclass
class MethodSpec:
    """Everything the training loop needs to know about one method.

    Attributes:
        name: registry key, e.g. "zimmermann2017".
        build_model: ``profile -> nn.Module`` (the model of that profile's size).
        loss: ``(model, batch) -> (total, terms)``: total a scalar tensor to minimise, terms a dict
            of named floats (or 0-d tensors) for the progress bar and the history.
        predict: ``(model, batch) -> dict`` with ``keypoints_3d`` (B, 21, 3) (metres, camera frame,
            or as ``alignment`` says) and ``keypoints_2d`` (B, 21, 2) pixels (or absent).
        profiles: {"quick": TrainingProfile, "full": TrainingProfile}.
        alignment: how ``metrics`` aligns ``keypoints_3d`` to the ground truth before the 3D error
            (one of ``metrics.ALIGNMENTS``; "gt_root_scale" for root-relative, normalised output).
        make_dataset: ``(split, num_samples, seed, image_size) -> Dataset`` of sample dicts.
        description: one line for listings.
    """
    name: str
    build_model: Callable[[str], nn.Module]
    loss: Callable[[nn.Module, dict], tuple]
    predict: Callable[[nn.Module, dict], dict]
    profiles: dict
    alignment: str = "root"
    make_dataset: Callable[..., Dataset] = synthetic_dataset
    description: str = ""

    def __post_init__(self):
        missing = [p for p in PROFILES if p not in self.profiles]
        if missing:
            raise ValueError(f"MethodSpec {self.name!r}: profiles is missing {missing}; give a TrainingProfile "
                             f"for each of {PROFILES}")
        if self.alignment not in metrics.ALIGNMENTS:
            raise ValueError(f"MethodSpec {self.name!r}: alignment must be one of {metrics.ALIGNMENTS}, "
                             f"got {self.alignment!r}")


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry under ``spec.name`` (a later one with the same name replaces it)."""
    _METHODS[spec.name] = spec
    return spec


def _load_method_modules() -> None:
    for module in METHOD_MODULES:
        importlib.import_module(module)


def available_methods() -> list[str]:
    """Names of all registered methods."""
    _load_method_modules()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    """The ``MethodSpec`` registered as ``name``."""
    if name not in _METHODS:
        _load_method_modules()
    if name not in _METHODS:
        raise ValueError(f"method: unknown method {name!r}; expected one of {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


# --------------------------------------------------------------------------------------------
# Batches, optimiser, random states
# --------------------------------------------------------------------------------------------

def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> list[int]:
    """Sample indices of the batch at ``step``: epochs of seeded permutations, read in order.

    The batch depends only on its arguments, which is what makes resuming exact.

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


class _StepBatches(torch.utils.data.Sampler):
    """Batch sampler yielding ``batch_indices(step, ...)`` for step = start, start + 1, ..., stop - 1."""

    def __init__(self, start: int, stop: int, batch_size: int, num_samples: int, seed: int):
        self.start, self.stop = start, stop
        self.batch_size, self.num_samples, self.seed = batch_size, num_samples, seed

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield batch_indices(step, self.batch_size, self.num_samples, self.seed)

    def __len__(self):
        return max(0, self.stop - self.start)


def training_batches(dataset: Dataset, start: int, stop: int, batch_size: int, seed: int,
                     num_workers: int = 0) -> DataLoader:
    """A DataLoader over the batches of steps [start, stop) (see ``batch_indices``).

    The loader has its own generator, so creating it does not touch the global random state.
    """
    return DataLoader(dataset, batch_sampler=_StepBatches(start, stop, batch_size, len(dataset), seed),
                      num_workers=num_workers, collate_fn=default_collate,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=False)


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a batch dict to ``device``."""
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
            for key, value in batch.items()}


def make_optimizer(model: nn.Module, hyper: TrainingProfile):
    """Adam with the profile's learning rate and a step schedule (``LambdaLR``).

    Returns:
        (optimizer, scheduler).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=hyper.lr, weight_decay=hyper.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, hyper.learning_rate_factor)
    return optimizer, scheduler


def rng_state() -> dict:
    """The states of Python's, numpy's and torch's (CPU and CUDA) random generators, as tensors."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore the generators saved by ``rng_state``."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Checkpoints and records
# --------------------------------------------------------------------------------------------

def checkpoint_path(method_name: str, profile: str, checkpoint_dir=DEFAULT_CHECKPOINT_DIR) -> Path:
    """``<checkpoint_dir>/<method>-<profile>.pt`` (where ``train`` writes)."""
    return Path(checkpoint_dir) / f"{method_name}-{profile}.pt"


def find_checkpoint(method_name: str, profile: str, checkpoint_dir=DEFAULT_CHECKPOINT_DIR) -> Path:
    """THE lookup of a trained checkpoint: your own first, then the one that ships with handlib.

    Looks for ``<method>-<profile>.pt`` in ``checkpoint_dir`` (what ``train`` wrote), then in
    ``COMMITTED_CHECKPOINT_DIR`` (``handlib/assets/checkpoints``, trained by the authors; its
    ``.md`` record says how).

    Returns:
        the path of the first that exists.

    Raises:
        FileNotFoundError: naming both places, when neither holds one.
    """
    for folder in (Path(checkpoint_dir), COMMITTED_CHECKPOINT_DIR):
        path = checkpoint_path(method_name, profile, folder)
        if path.is_file():
            return path
    raise FileNotFoundError(f"no checkpoint {method_name}-{profile}.pt in {checkpoint_dir} nor in "
                            f"{COMMITTED_CHECKPOINT_DIR}; train one with `python -m handlib train {method_name} "
                            f"--profile {profile}`")


def export_checkpoint(source, destination, note: str = "", metrics: dict | None = None) -> Path:
    """Write a slim copy of a checkpoint, for shipping: the weights, config, history, provenance and
    metrics, without the optimiser, scheduler and random states (so it loads but does not resume).

    Args:
        source: a ``.pt`` written by ``train``.
        destination: the ``.pt`` to write; its ``.json`` / ``.md`` record is written beside it.
        note: a sentence for the record saying what the checkpoint is (e.g. how long it trained).
        metrics: ``evaluate``'s row to ship with it; None = the metrics ``train`` stored when the run
            finished (a run stopped early has none: evaluate it and pass them here).

    Returns:
        ``destination`` as a Path.

    Raises:
        FileNotFoundError: no ``source``. ValueError: no ``metrics`` and ``source`` has none (it has not
            finished).
    """
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise FileNotFoundError(f"source: checkpoint {source} does not exist; train it first")
    state = load_torch(source)
    metrics = state.get("metrics") if metrics is None else metrics
    if metrics is None:
        raise ValueError(f"{source} has not finished training (no metrics yet); run the same train command "
                         "again to finish it, then export")
    provenance = dict(state["provenance"], note=note) if note else state["provenance"]
    save_torch({"format": CHECKPOINT_FORMAT, "step": state["step"], "config": state["config"],
                "model": state["model"], "history": state["history"], "provenance": provenance,
                "metrics": metrics}, destination)
    write_record(destination, state["config"], provenance, state["step"], state["history"], metrics)
    return destination


def fixed_test_set(spec: MethodSpec, hyper: TrainingProfile, num_samples: int | None = None) -> Dataset:
    """THE test set a method is evaluated on: ``spec.make_dataset("test", n, TEST_SEED, image_size)``.

    Args:
        spec, hyper: the method and its profile (``test_samples``, ``image_size``).
        num_samples: None = the profile's ``test_samples``.
    """
    return spec.make_dataset("test", num_samples or hyper.test_samples, TEST_SEED, hyper.image_size)


def run_config(method_name: str, profile: str, hyper: TrainingProfile, seed: int) -> dict:
    """What decides a run's numbers; a checkpoint is only resumed under the same config."""
    return {"method": method_name, "profile": profile, "seed": seed, **dataclasses.asdict(hyper)}


@dataclass
class TrainResult:
    """What ``train`` returns.

    Attributes:
        method, profile: what was trained.
        checkpoint: path of the checkpoint.
        step: steps done; ``finished`` is True when it reached the profile's ``steps``.
        metrics: ``evaluate``'s dict on the fixed test set (None until finished).
        history: {loss term: list of floats, one per step}.
        wall_time_s: training time in seconds, summed over resumed runs.
    """
    method: str
    profile: str
    checkpoint: Path
    step: int
    finished: bool
    metrics: dict | None
    history: dict = field(repr=False, default_factory=dict)
    wall_time_s: float = 0.0


def device_name(device: torch.device) -> str:
    """What a device is, for records: the GPU's name, or the CPU's architecture and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"{platform.machine()} CPU, {available_cpus()} cores, {threads} torch thread{'s' * (threads != 1)}"
    return str(device)


def _provenance(profile: str, device: torch.device, seed: int, wall_time_s: float) -> dict:
    return {"command": " ".join(sys.argv), "profile": profile, "device": str(device),
            "device_name": device_name(device), "seed": seed,
            "wall_time_s": float(wall_time_s), "torch": str(torch.__version__),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, config: dict, history: dict,
                     provenance: dict, run_metrics: dict | None, rng: dict | None = None) -> None:
    save_torch({
        "format": CHECKPOINT_FORMAT, "step": step, "config": config,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": rng or rng_state(), "history": history, "provenance": provenance, "metrics": run_metrics,
    }, path)


def _clean(value):
    """Floats for JSON: NaN -> None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def write_record(path: Path, config: dict, provenance: dict, step: int, history: dict,
                 run_metrics: dict | None) -> None:
    """Write ``<checkpoint>.json`` and ``<checkpoint>.md``: config, provenance, final losses, metrics."""
    path = Path(path)
    final_losses = {name: float(np.mean(values[-100:])) for name, values in history.items() if values}
    record = {"checkpoint": path.name, "step": step, "config": config, "provenance": provenance,
              "final_losses": final_losses, "metrics": run_metrics}
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(_clean(record), indent=2, default=str) + "\n")
    lines = [f"# {config['method']} ({config['profile']} profile)", "",
             f"- checkpoint: `{path.name}`, step {step} of {config['steps']}",
             f"- seed {config['seed']}, device {provenance['device']} "
             f"({provenance.get('device_name', 'not recorded')}), torch {provenance['torch']}, "
             f"wall time {provenance['wall_time_s']:.0f} s",
             f"- command: `{provenance['command']}`"]
    if provenance.get("note"):
        lines += [f"- {provenance['note']}"]
    lines += ["",
             "| loss term (mean of last 100 steps) | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4g} |" for name, value in final_losses.items()]
    if run_metrics:
        lines += ["", "| metric on the fixed test set | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |"
                  for name, value in run_metrics.items()]
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------

def _float_terms(terms: dict) -> dict:
    return {name: float(value.detach()) if torch.is_tensor(value) else float(value) for name, value in terms.items()}


def train(method_name: str, profile: str | None = None, device=None, seed: int = 0,
          checkpoint_dir=DEFAULT_CHECKPOINT_DIR, resume: bool = True, stop_at: int | None = None,
          progress: bool = True, dataset: Dataset | None = None, test_dataset: Dataset | None = None,
          overrides: dict | None = None, time_limit_s: float | None = None) -> TrainResult:
    """Train a registered method, resuming from its checkpoint if there is one.

    Args:
        method_name: a name from ``available_methods()``.
        profile: "quick" or "full"; None = ``runtime.get_profile()`` ($HANDLIB_PROFILE or by device).
        device: e.g. "cuda", "cpu"; None = CUDA when available.
        seed: seeds the model initialisation, the batches and every random draw of the loss.
        checkpoint_dir: folder of ``<method>-<profile>.pt`` and its record.
        resume: continue from an existing checkpoint (of the same config); False starts over.
        stop_at: stop after this step (a checkpoint is written), as if interrupted; None = run to the end.
        time_limit_s: stop after the first step that ends this many seconds after this call began (a
            checkpoint is written; call again to resume), e.g. to fit a session with a time limit.
        progress: show a tqdm progress bar with the running losses.
        dataset: training Dataset of sample dicts; None = ``spec.make_dataset("train", ...)``.
        test_dataset: the fixed test set; None = ``fixed_test_set(spec, profile)``.
        overrides: fields of the profile's ``TrainingProfile`` to change, e.g. ``{"steps": 20000}``
            for a longer run of the same model (recorded in the checkpoint's config).

    Returns:
        ``TrainResult``; ``metrics`` holds ``evaluate``'s numbers once the run has finished.
    """
    call_start = time.perf_counter()
    spec = get_method(method_name)
    profile = get_profile(profile)
    hyper: TrainingProfile = spec.profiles[profile]
    if overrides:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainingProfile)}
        if unknown:
            raise ValueError(f"overrides: unknown TrainingProfile fields {sorted(unknown)}; expected some of "
                             f"{[f.name for f in dataclasses.fields(TrainingProfile)]}")
        hyper = dataclasses.replace(hyper, **overrides)
    device = get_device(device)
    if device.type == "cuda":
        # The input size never changes: let cuDNN time its kernels and keep the fastest. (A GPU run,
        # like any cuDNN run, repeats its numbers only up to the kernels' rounding.)
        torch.backends.cudnn.benchmark = True
    config = run_config(method_name, profile, hyper, seed)
    path = checkpoint_path(method_name, profile, checkpoint_dir)

    seed_everything(seed)
    model = spec.build_model(profile).to(device)
    optimizer, scheduler = make_optimizer(model, hyper)
    step, history, past_time, run_metrics = 0, {}, 0.0, None
    if resume and path.is_file():
        state = load_torch(path)               # on the CPU: the RNG states must stay there
        if state.get("config") != config:
            raise ValueError(f"{path}: this checkpoint was trained with config {state.get('config')}, not {config}; "
                             f"pass resume=False to start over or choose another checkpoint_dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history, run_metrics = state["step"], state["history"], state["metrics"]
        past_time = state["provenance"]["wall_time_s"]
        set_rng_state(state["rng"])
    stop = hyper.steps if stop_at is None else min(int(stop_at), hyper.steps)

    if step < stop:
        if dataset is None:
            dataset = spec.make_dataset("train", hyper.train_samples, seed, hyper.image_size)
        batches = training_batches(dataset, step, stop, hyper.batch_size, seed, hyper.num_workers)
        start_time = time.perf_counter()

        def save(step, rng=None):
            provenance = _provenance(profile, device, seed, past_time + time.perf_counter() - start_time)
            _save_checkpoint(path, model, optimizer, scheduler, step, config, history, provenance, None, rng)

        model.train()
        running: dict[str, float] = {}
        step_start_rng = None
        bar = tqdm(total=hyper.steps, initial=step, desc=f"{method_name} ({profile})", disable=not progress,
                   dynamic_ncols=True)
        try:
            for batch in batches:
                step_start_rng = rng_state()      # a step interrupted half-way is redone from here on resume
                total, terms = spec.loss(model, to_device(batch, device))
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                step += 1
                scheduler.step()
                step_start_rng = None             # the step is done: the current state is the one to keep
                terms = {"total": float(total.detach()), **_float_terms(terms)}
                for name, value in terms.items():
                    history.setdefault(name, []).append(value)
                    running[name] = value if name not in running else 0.9 * running[name] + 0.1 * value
                bar.update(1)
                bar.set_postfix({name: f"{value:.4g}" for name, value in running.items()}, refresh=False)
                out_of_time = time_limit_s is not None and time.perf_counter() - call_start >= time_limit_s
                if step % hyper.checkpoint_every == 0 or step == stop or out_of_time:
                    save(step)
                if out_of_time:
                    break
        except KeyboardInterrupt:
            save(step, step_start_rng)
            bar.close()
            print(f"interrupted at step {step}; checkpoint {path} written, run again to resume", file=sys.stderr)
            raise
        bar.close()
        past_time += time.perf_counter() - start_time
        if step < stop:
            print(f"stopped at step {step} of {hyper.steps} after {time_limit_s:g} s (time_limit_s); checkpoint "
                  f"{path} written, run again to resume", file=sys.stderr)

    finished = step >= hyper.steps
    provenance = _provenance(profile, device, seed, past_time)
    if finished and run_metrics is None:
        if test_dataset is None:
            test_dataset = fixed_test_set(spec, hyper)
        run_metrics = evaluate_model(spec, model, test_dataset, device, batch_size=hyper.batch_size)
        _save_checkpoint(path, model, optimizer, scheduler, step, config, history, provenance, run_metrics)
    write_record(path, config, provenance, step, history, run_metrics)
    return TrainResult(method_name, profile, path, step, finished, run_metrics, history, past_time)


@torch.no_grad()
def predict_dataset(spec: MethodSpec, model: nn.Module, dataset: Dataset, device=None, batch_size: int = 32,
                    predict: Callable | None = None) -> dict:
    """Run ``predict`` (default ``spec.predict``) over a dataset, in order, in eval mode.

    Returns:
        dict of numpy arrays: the prediction's ``keypoints_3d`` (N, 21, 3) and ``keypoints_2d``
        (N, 21, 2) (when predicted), and the ground truth ``target_3d``, ``target_2d``,
        ``visibility`` (N, 21) and ``has_3d`` (N,).
    """
    device = get_device(device)
    predict = predict or spec.predict
    model.eval()
    outputs: dict[str, list] = {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=default_collate)
    for batch in loader:
        prediction = predict(model, to_device(batch, device))
        values = {"target_3d": batch["keypoints_3d"], "target_2d": batch["keypoints_2d"],
                  "visibility": batch["visibility"], "has_3d": batch["has_3d"],
                  "keypoints_3d": prediction["keypoints_3d"]}
        if prediction.get("keypoints_2d") is not None:
            values["keypoints_2d"] = prediction["keypoints_2d"]
        for key, value in values.items():
            outputs.setdefault(key, []).append(value.detach().float().cpu().numpy())
    return {key: np.concatenate(value) for key, value in outputs.items()}


def evaluate_model(spec: MethodSpec, model: nn.Module, dataset: Dataset, device=None, batch_size: int = 32,
                   predict: Callable | None = None) -> dict:
    """The benchmark row (``metrics.benchmark_row``) of a model on a dataset.

    3D errors count every keypoint of samples with 3D ground truth (``has_3d``), aligned as
    ``spec.alignment`` says; 2D errors count visible keypoints only.

    Returns:
        dict: epe_3d_mm, median_3d_mm, auc_20_50, epe_2d_px, epe_procrustes_mm, alignment, num_samples.
    """
    out = predict_dataset(spec, model, dataset, device, batch_size, predict)
    has_3d = out["has_3d"].astype(bool)
    if not has_3d.any():
        raise ValueError("dataset: no sample has 3D ground truth (has_3d); the 3D metrics need some")
    return metrics.benchmark_row(
        out["keypoints_3d"][has_3d], out["target_3d"][has_3d],
        out.get("keypoints_2d"), out["target_2d"] if "keypoints_2d" in out else None,
        visibility_2d=out["visibility"], alignment=spec.alignment)


def load_model(method_name: str, checkpoint=None, profile: str | None = None, device=None,
               checkpoint_dir=DEFAULT_CHECKPOINT_DIR) -> nn.Module:
    """Build a method's model and load its trained weights (``weights_only=True``), in eval mode.

    Args:
        method_name: a registered method.
        checkpoint: path of a .pt file; None = ``find_checkpoint(method_name, profile, checkpoint_dir)``
            (yours, else the one shipped in ``handlib/assets/checkpoints``).
        profile: the profile whose model size to build; None = the checkpoint's (or ``get_profile()``).
        device: where to put the model; None = CUDA when available.

    Returns:
        the ``nn.Module``.
    """
    device = get_device(device)
    if checkpoint is None:
        checkpoint = find_checkpoint(method_name, get_profile(profile), checkpoint_dir)
    return _model_from_state(method_name, load_torch(checkpoint, map_location=device), checkpoint, profile, device)


def _model_from_state(method_name: str, state: dict, checkpoint, profile: str | None, device) -> nn.Module:
    """The model of a loaded checkpoint ``state`` (read from ``checkpoint``), in eval mode on ``device``."""
    if state.get("config", {}).get("method") != method_name:
        raise ValueError(f"{checkpoint}: a checkpoint of {state.get('config', {}).get('method')!r}, "
                         f"not of {method_name!r}")
    model = get_method(method_name).build_model(profile or state["config"]["profile"]).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def evaluate(method_name: str, checkpoint=None, profile: str | None = None, device=None,
             checkpoint_dir=DEFAULT_CHECKPOINT_DIR, dataset: Dataset | None = None,
             num_samples: int | None = None, batch_size: int = 32, verbose: bool = False) -> dict:
    """Evaluate a trained method on the fixed synthetic test set (or on ``dataset``).

    Args:
        method_name: a registered method.
        checkpoint: .pt path; None = ``find_checkpoint`` of the profile (yours, else the shipped one).
        profile: "quick" or "full"; None = the checkpoint's, or ``runtime.get_profile()``.
        device: None = CUDA when available.
        checkpoint_dir: where the default checkpoint lives.
        dataset: a Dataset of sample dicts; None = ``fixed_test_set`` of the profile.
        num_samples: size of the default test set; None = the profile's ``test_samples``.
        batch_size: evaluation batch size.
        verbose: print the numbers as a small table.

    Returns:
        ``metrics.benchmark_row`` dict (epe_3d_mm, median_3d_mm, auc_20_50, epe_2d_px,
        epe_procrustes_mm, alignment, num_samples).
    """
    spec, device = get_method(method_name), get_device(device)
    if checkpoint is None:
        checkpoint = find_checkpoint(method_name, get_profile(profile), checkpoint_dir)
    state = load_torch(checkpoint, map_location=device)
    profile = get_profile(profile or state["config"]["profile"])      # default: the one it was trained with
    hyper = spec.profiles[profile]
    model = _model_from_state(method_name, state, checkpoint, profile, device)
    if dataset is None:
        dataset = fixed_test_set(spec, hyper, num_samples)
    row = evaluate_model(spec, model, dataset, device, batch_size)
    if verbose:
        print(format_table([{"method": method_name, "profile": profile, **row}]))
    return row


TABLE_COLUMNS = {"method": "method", "profile": "profile", "epe_3d_mm": "3D EPE (mm)",
                 "auc_20_50": "AUC 20-50 mm", "epe_2d_px": "2D EPE (px)",
                 "epe_procrustes_mm": "Procrustes EPE (mm)", "alignment": "3D alignment"}


def format_table(rows: list[dict], columns: dict | None = None) -> str:
    """A markdown table of rows, numbers with 2 or 3 decimals.

    Args:
        rows: list of dicts.
        columns: {key: header}; None = ``TABLE_COLUMNS`` (the benchmark's).
    """
    columns = columns or TABLE_COLUMNS

    def cell(key, value):
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.3f}" if key == "auc_20_50" else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(key, row.get(key, "")) for key in columns) + " |" for row in rows]
    return "\n".join(lines)


def benchmark(profile: str | None = None, device=None, checkpoint_dir=DEFAULT_CHECKPOINT_DIR,
              methods: list[str] | None = None, verbose: bool = False) -> list[dict]:
    """Evaluate every method that has a checkpoint of ``profile`` on the fixed test set.

    Args:
        profile: "quick" or "full"; None = ``runtime.get_profile()``.
        device: None = CUDA when available.
        checkpoint_dir: where your checkpoints are (``find_checkpoint`` falls back to the shipped ones).
        methods: names to evaluate; None = all registered methods (those without a checkpoint are
            left out, and named when ``verbose``).
        verbose: print the table.

    Returns:
        list of dicts: {"method", "profile", "checkpoint" (the path ``find_checkpoint`` chose), and
        the keys of ``metrics.benchmark_row``}.
    """
    profile = get_profile(profile)
    rows, missing = [], []
    for name in methods or available_methods():
        try:
            path = find_checkpoint(name, profile, checkpoint_dir)
        except FileNotFoundError:
            missing.append(name)
            continue
        rows.append({"method": name, "profile": profile, "checkpoint": str(path),
                     **evaluate(name, path, profile, device, checkpoint_dir)})
    if verbose:
        print(format_table(rows) if rows else f"no trained {profile} checkpoints in {checkpoint_dir}")
        for row in rows:
            print(f"{row['method']}: {row['checkpoint']}")
        if missing:
            print(f"not trained ({profile}): {', '.join(missing)}; run `python -m handlib train METHOD`")
    return rows
