"""Where and how big things run: the training profile, the device, and seeding.

The profile comes from the environment variable ``HANDLIB_PROFILE``:

* ``quick``: sized for a laptop CPU (minutes); what CI and nbval run.
* ``full``: sized for a GPU (the committed checkpoints were trained with it).

Without the variable, the profile is ``full`` when CUDA is available and ``quick`` otherwise.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

PROFILES = ("quick", "full")


def get_profile(profile: str | None = None) -> str:
    """The profile to use: ``profile`` if given, else ``$HANDLIB_PROFILE``, else by device."""
    chosen = profile or os.environ.get("HANDLIB_PROFILE") or ("full" if torch.cuda.is_available() else "quick")
    if chosen not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES} (argument or $HANDLIB_PROFILE), got {chosen!r}")
    return chosen


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a batch dict to ``device`` (other values stay as they are)."""
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value
            for key, value in batch.items()}


def available_cpus() -> int:
    """Number of CPU cores this process may run on (the default count of rendering workers)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(count: int):
    """Run torch on ``count`` CPU threads inside the block, then restore the previous setting.

    Small problems (one hand, a short fit) run fastest on one thread, and stay fast when other
    programs keep the cores busy: two threads that wait for each other were measured 20 times slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU ``torch.Generator`` seeded the same way."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
