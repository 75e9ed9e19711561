"""Checkpoints and their records: where runs are written, what ships, and how a model is loaded.

Two places, never mixed up:

* **your runs**: ``data/runs/<name>-<profile>.pt`` (``RUN_DIR``), written by ``handlib.train`` every
  few steps (atomically) with the optimiser state, so an interrupted run resumes;
* **shipped checkpoints**: ``handlib/assets/checkpoints/<name>-<profile>.pt`` (``SHIPPED_DIR``),
  slim copies (weights, config, history, provenance, metrics) made by ``export`` from a finished run.

``find_checkpoint`` returns the shipped one unless you name a run folder: a live run never
overwrites or shadows what ships. Names are ``method`` or ``method:variant``; the file of a variant
is ``method-variant-profile.pt``. Every checkpoint is read with ``torch.load(weights_only=True)``
(``handlib.files.load_torch``), and each has a record beside it (``.json`` and ``.md``): the
command, profile, seed, device, wall time and torch version that made it, and its metrics.
"""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from handlib.files import DATA_DIR, atomic_path, load_torch, save_torch
from handlib.runtime import available_cpus, get_device

RUN_DIR = DATA_DIR / "runs"
SHIPPED_DIR = Path(__file__).resolve().parent / "assets" / "checkpoints"
CHECKPOINT_FORMAT = 2


def file_stem(name: str, profile: str) -> str:
    """"zimmermann2017:direct", "full" -> "zimmermann2017-direct-full"."""
    return f"{name.replace(':', '-')}-{profile}"


def run_path(name: str, profile: str, run_dir=RUN_DIR) -> Path:
    """Where ``train`` writes the run of ``name`` (method or method:variant) and ``profile``."""
    return Path(run_dir) / f"{file_stem(name, profile)}.pt"


def shipped_path(name: str, profile: str) -> Path:
    """Where the shipped checkpoint of ``name`` and ``profile`` lives (``SHIPPED_DIR``)."""
    return SHIPPED_DIR / f"{file_stem(name, profile)}.pt"


def find_checkpoint(name: str, profile: str = "full", run_dir=None) -> Path:
    """THE lookup of a trained checkpoint.

    Args:
        name: "method" or "method:variant".
        profile: "quick" or "full" (shipped checkpoints are "full").
        run_dir: None = the shipped checkpoint; a folder = your run in that folder (e.g. ``RUN_DIR``).

    Raises:
        FileNotFoundError: saying how to train (or export) it.
    """
    path = shipped_path(name, profile) if run_dir is None else run_path(name, profile, run_dir)
    if not path.is_file():
        where = "shipped with handlib" if run_dir is None else f"in {run_dir}"
        raise FileNotFoundError(f"no checkpoint {path.name} {where} ({path}); train it with "
                                f"`python -m handlib train {name} --profile {profile}`"
                                + (f" and ship it with `python -m handlib export {name} --profile {profile}`"
                                   if run_dir is None else ""))
    return path


def read_checkpoint(path, device=None) -> dict:
    """A checkpoint's contents (``weights_only=True``), with its format checked."""
    state = load_torch(path, map_location=get_device(device))
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: a checkpoint of format {found!r}, this handlib reads format {CHECKPOINT_FORMAT}; "
                         "train it again with this version")
    return state


def load_model(name: str, profile: str | None = "full", checkpoint=None, device=None, run_dir=None):
    """A method's trained model, in eval mode, and the config it was trained with.

    Args:
        name: "method" or "method:variant" (``handlib.registry``).
        profile: whose checkpoint to find when ``checkpoint`` is None ("full": the shipped one).
        checkpoint: a ``.pt`` path; None = ``find_checkpoint(name, profile, run_dir)``.
        device: None = CUDA when available.
        run_dir: see ``find_checkpoint``.

    Returns:
        (method, model, config): the ``Method``, the ``nn.Module`` and the run's config.
    """
    from handlib.registry import config_from_dict, get_method

    method, variant = get_method(name)
    path = checkpoint or find_checkpoint(name, profile or "full", run_dir)
    state = read_checkpoint(path, device)
    run = state["run"]
    if (run["method"], run["variant"]) != (method.name, variant):
        raise ValueError(f"{path}: a checkpoint of {run['name']!r}, not of {name!r}")
    config = config_from_dict(method, run["profile"], run["config"])
    model = method.build_model(config).to(get_device(device))
    model.load_state_dict(state["model"])
    return method, model.eval(), config


def copy_weights(model: torch.nn.Module, name: str, prefixes: tuple = ("",), profile: str = "full") -> list[str]:
    """Start part of a model from a trained one: copy the weights (parameters and buffers) of
    ``name``'s checkpoint (``load_model``: the shipped one for "full") whose names start with one of
    ``prefixes`` into ``model``. An experiment's arms use it to share a trained part (a DetNet, a
    first stage) and train the rest.

    Returns:
        the names copied.

    Raises:
        ValueError: nothing matches ``prefixes``, or a copied tensor's shape differs (the checkpoint
        was made with other sizes).
    """
    _, trained, _ = load_model(name, profile, device="cpu")
    source = {key: value for key, value in trained.state_dict().items() if key.startswith(tuple(prefixes))}
    target = model.state_dict()
    if not source:
        raise ValueError(f"prefixes: no weight of {name!r} starts with {prefixes}")
    for key, value in source.items():
        if key not in target or target[key].shape != value.shape:
            raise ValueError(f"{name}: its {key} {tuple(value.shape)} does not fit this model's "
                             f"{tuple(target[key].shape) if key in target else 'missing'}; train {name!r} with the "
                             "same sizes first")
    model.load_state_dict(source, strict=False)
    return list(source)


def save_checkpoint(path, state: dict) -> Path:
    """Write a checkpoint atomically (``handlib.files.save_torch``), stamped with ``CHECKPOINT_FORMAT``."""
    return save_torch({"format": CHECKPOINT_FORMAT, **state}, path)


def export_checkpoint(source, destination, note: str = "", metrics: dict | None = None) -> Path:
    """Write a slim copy of a finished run for shipping: weights, run, history, provenance and
    metrics, without the optimiser state (it loads but does not resume), with its records.

    Args:
        source: a ``.pt`` written by ``train``.
        destination: the ``.pt`` to write (usually ``shipped_path``).
        note: a sentence for the record (how it was made, where).
        metrics: the metrics to ship; None = those ``train`` stored at the end of the run.

    Raises:
        FileNotFoundError: no ``source``. ValueError: the run has not finished.
    """
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise FileNotFoundError(f"source: checkpoint {source} does not exist; train it first")
    state = read_checkpoint(source, "cpu")
    metrics = state.get("metrics") if metrics is None else metrics
    if not state.get("finished") or metrics is None:
        raise ValueError(f"{source} has not finished training; run the same train command again to finish it, "
                         "then export")
    provenance = dict(state["provenance"], note=note) if note else state["provenance"]
    slim = {key: state[key] for key in ("format", "run", "model", "history", "position", "finished")}
    save_torch({**slim, "provenance": provenance, "metrics": metrics}, destination)
    write_record(destination, slim["run"], provenance, slim["position"], slim["history"], metrics)
    return destination


# --------------------------------------------------------------------------------------------
# Provenance and records
# --------------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    """What a device is, for records: the GPU's name, or the CPU's architecture and core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"{platform.machine()} CPU, {available_cpus()} cores, {threads} torch thread{'s' * (threads != 1)}"
    return str(device)


def command_line() -> str:
    """The command that is running, as a user would type it (``python -m handlib ...`` for the CLI)."""
    program = Path(sys.argv[0])
    first = "python -m handlib" if program.name == "__main__.py" and program.parent.name == "handlib" else sys.argv[0]
    return " ".join([first, *sys.argv[1:]])


def provenance(run: dict, device: torch.device, wall_time_s: float) -> dict:
    """How a checkpoint was made: command, profile, seed, device, wall time, torch version, date."""
    return {"command": command_line(), "profile": run["profile"], "seed": run["seed"], "device": str(device),
            "device_name": device_name(device), "wall_time_s": float(wall_time_s),
            "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _clean(value):
    """Floats for JSON: NaN -> None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def write_record(path, run: dict, provenance: dict, position: dict, history: dict, metrics: dict | None) -> None:
    """Write ``<checkpoint>.json`` and ``<checkpoint>.md``: run, provenance, final losses, metrics.

    Args:
        path: the checkpoint's path.
        run: the run (``handlib.train.RunConfig`` as a dict).
        provenance: ``provenance(...)``, with an optional "note".
        position: {"stage": name, "step": step within it} where the run stands.
        history: {stage: {loss term: list of floats}}.
        metrics: the metrics on the fixed test set, or None.
    """
    path = Path(path)
    final_losses = {stage: {term: float(np.mean(values[-100:])) for term, values in terms.items() if values}
                    for stage, terms in history.items()}
    record = {"checkpoint": path.name, "position": position, "run": run, "provenance": provenance,
              "final_losses": final_losses, "metrics": metrics}
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(_clean(record), indent=2, default=str) + "\n")
    lines = [f"# {run['name']} ({run['profile']} profile)", "",
             f"- checkpoint: `{path.name}`, stage `{position['stage']}` step {position['step']}",
             f"- seed {run['seed']}, device {provenance['device']} ({provenance['device_name']}), "
             f"torch {provenance['torch']}, wall time {provenance['wall_time_s']:.0f} s "
             f"({provenance['wall_time_s'] / 60:.1f} min)",
             f"- command: `{provenance['command']}`"]
    if provenance.get("note"):
        lines += [f"- {provenance['note']}"]
    for stage, losses in final_losses.items():
        lines += ["", f"| stage `{stage}`: loss term (mean of last 100 steps) | value |", "|---|---|"]
        lines += [f"| {term} | {value:.4g} |" for term, value in losses.items()]
    if metrics:
        lines += ["", "| metric on the fixed test set | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
                  for key, value in metrics.items()]
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
