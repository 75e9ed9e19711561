"""Shared fixtures: a small random model in MANO's file format, so the layer is tested without
depending on any particular vertex count or on the open hand asset."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from handlib.skeleton import MANO_PARENTS


@pytest.fixture(scope="session")
def benchmark_script():
    """Imports one of ``benchmarks/*.py`` as a module: ``benchmark_script("domain_gap")``."""
    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


def make_random_mano_arrays(num_vertices: int = 60, num_betas: int = 10, seed: int = 0) -> dict:
    """A valid but random MANO-format dict: joints along five 'fingers', weights falling off with
    distance to the joints, a regressor of each joint's nearest vertices, small random blend shapes."""
    rng = np.random.default_rng(seed)
    joints = np.zeros((16, 3))
    for finger in range(5):
        for segment in range(3):
            joints[1 + 3 * finger + segment] = [0.03 * finger - 0.06, 0.02 * segment, 0.03 + 0.025 * segment]
    v_template = joints[rng.integers(0, 16, num_vertices)] + 0.01 * rng.standard_normal((num_vertices, 3))
    distance = np.linalg.norm(v_template[:, None] - joints[None], axis=-1)  # (V, 16)
    weights = np.exp(-distance / 0.01)
    weights /= weights.sum(1, keepdims=True)
    J_regressor = np.zeros((16, num_vertices))
    for j in range(16):
        nearest = np.argsort(distance[:, j])[:4]
        J_regressor[j, nearest] = rng.random(4) + 0.1
    J_regressor /= J_regressor.sum(1, keepdims=True)
    components, _ = np.linalg.qr(rng.standard_normal((45, 45)))
    return {
        "v_template": v_template,
        "f": rng.integers(0, num_vertices, (2 * num_vertices, 3)).astype(np.uint32),
        "weights": weights,
        "J_regressor": J_regressor,
        "kintree_table": np.stack([np.array(MANO_PARENTS, dtype=np.int64) % 2**32, np.arange(16)]).astype(np.uint32),
        "shapedirs": 0.01 * rng.standard_normal((num_vertices, 3, num_betas)),
        "posedirs": 0.01 * rng.standard_normal((num_vertices, 3, 135)),
        "hands_components": components,
        "hands_mean": 0.2 * rng.standard_normal(45),
        "fingertip_vertex_ids": rng.choice(num_vertices, 5, replace=False),
    }


@pytest.fixture
def random_mano_file(tmp_path) -> Path:
    """``tmp_path/mano/MANO_RIGHT.pkl`` holding a random 60-vertex MANO-format model."""
    from handlib.mano.io import save_mano

    return save_mano(make_random_mano_arrays(), tmp_path / "mano" / "MANO_RIGHT.pkl")
