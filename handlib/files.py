"""Writing files safely: every generated file is written to a temporary name, then renamed.

A reader never sees half a file, and an interrupted run leaves the previous file intact.
Checkpoints are read with ``torch.load(..., weights_only=True)``, so a file cannot run code.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

import numpy as np
import torch

# The repository's data folder: real samples (tracked), and the generated cache/ and runs/ (ignored).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def sha256_of(path) -> str:
    """The sha256 of a file, as 64 hex digits (read in blocks of 1 MiB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success, rename it onto ``path``.

    Example:
        >>> with atomic_path("out.npz") as tmp:       # doctest: +SKIP
        ...     np.savez(tmp, x=np.zeros(3))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}"
    # Created here, exclusively, with mode 0666 less the umask: the permissions of any new file
    # (tempfile.mkstemp would give 0600, and reading the umask means setting it, racing other threads).
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: a reader sees the old file or the new one."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def save_npz(path, compressed: bool = True, **arrays) -> Path:
    """Write numpy arrays to ``path`` (.npz) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return Path(path)


def load_npz(path) -> dict:
    """Read an .npz of plain arrays (no pickled objects) into a dict; a clear error if it is broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except Exception as error:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise ValueError(f"{path}: not a readable .npz file ({error}); delete it and generate it again") from error


def save_torch(obj, path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_torch(path, map_location="cpu"):
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings, lists and dicts only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a readable checkpoint ({error}); delete it and train again") from error
