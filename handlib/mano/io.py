"""Reading and writing hand models in MANO's file format, safely and without chumpy.

A MANO file is a pickled dict (``MANO_RIGHT.pkl``) or an ``.npz`` with these arrays
(V vertices, F faces, J = 16 joints, K shape directions):

================== =========== ===================================================
key                shape       meaning
================== =========== ===================================================
v_template         (V, 3)      the rest (flat) hand, metres
f                  (F, 3)      triangles, vertex indices
weights            (V, J)      skinning weights, rows sum to 1
J_regressor        (J, V)      joints as weighted sums of vertices (dense or sparse)
kintree_table      (2, J)      row 0: parent of each joint (root: -1 or 2**32 - 1)
shapedirs          (V, 3, K)   shape blend shapes (K = 10 for MANO)
posedirs           (V, 3, 135) pose-corrective blend shapes, 15 joints x 9
hands_components   (C, 45)     PCA basis of finger poses, one component per row
hands_mean         (45,)       mean finger pose, axis-angle
================== =========== ===================================================

plus, in files written by handlib, ``fingertip_vertex_ids`` (5,): the vertices taken as the
thumb, index, middle, ring and pinky tips (the official MANO files have none; smplx's ids are
used for them).

The official files are Python-2 pickles whose arrays are ``chumpy`` objects and whose joint
regressor is a ``scipy.sparse`` matrix. Unpickling can run arbitrary code, so ``load_mano``
uses a restricted unpickler: it admits numpy's array reconstruction, scipy's sparse matrices
and the two chumpy classes MANO uses, rebuilds each of them as a plain numpy array, and refuses
every other class with an error. No chumpy install is needed.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

from handlib.files import atomic_path, load_npz, save_npz
from handlib.safe_pickle import NUMPY_ARRAY_GLOBALS, UnsafePickleError, restricted_load
from handlib.skeleton import MANO_FINGERTIP_VERTEX_IDS, NUM_MANO_JOINTS

REQUIRED_KEYS = ("v_template", "f", "weights", "J_regressor", "kintree_table", "shapedirs",
                 "posedirs", "hands_components", "hands_mean")
MANO_DOWNLOAD = "https://mano.is.tue.mpg.de (free registration; licence: non-commercial research)"


class _Stub:
    """Stands in for a chumpy or scipy.sparse object while unpickling; holds only its state."""

    kind = ""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        # chumpy objects pickle their __dict__; scipy's sparse matrices too.
        self.state = state if isinstance(state, dict) else {"state": state}


def _stub_class(kind: str):
    return type(f"_{kind}Stub", (_Stub,), {"kind": kind})


# What a MANO pickle may name: numpy's array globals, copyreg's object builder (Python-2 pickles
# build objects with it), and, replaced by stubs, the chumpy and scipy.sparse classes.
_MANO_GLOBALS = {**NUMPY_ARRAY_GLOBALS, "copyreg": frozenset({"_reconstructor"}), "builtins": frozenset({"object"})}
_MANO_STAND_INS = {
    ("chumpy.ch", "Ch"): _stub_class("Ch"),
    ("chumpy.reordering", "Select"): _stub_class("Select"),
    **{(f"scipy.sparse.{module}", f"{fmt}_matrix"): _stub_class(fmt)
       for fmt in ("csc", "csr") for module in (fmt, f"_{fmt}")},
}


def _to_array(value):
    """Rebuild stubs (chumpy, sparse) and nested containers as plain numpy arrays."""
    if isinstance(value, _Stub):
        state = value.state
        if value.kind == "Ch":
            return np.asarray(_to_array(state["x"]))
        if value.kind == "Select":
            source = np.asarray(_to_array(state["a"]))
            picked = source.ravel()[np.asarray(_to_array(state["idxs"])).ravel()]
            return picked.reshape(state.get("preferred_shape", picked.shape))
        shape = state.get("_shape", state.get("shape"))
        matrix_class = scipy.sparse.csc_matrix if value.kind == "csc" else scipy.sparse.csr_matrix
        return matrix_class((state["data"], state["indices"], state["indptr"]), shape=shape).toarray()
    if isinstance(value, dict):
        return {key: _to_array(item) for key, item in value.items()}
    return value


def restricted_pickle_load(file) -> object:
    """Unpickle ``file`` (a path or binary file object) admitting only numpy, scipy.sparse and
    chumpy arrays, each rebuilt as a plain numpy array.

    Raises:
        UnsafePickleError: the pickle references any other class or function.
    """
    return _to_array(restricted_load(file, _MANO_GLOBALS, stand_ins=_MANO_STAND_INS))


@dataclass(frozen=True)
class ManoModel:
    """The arrays of a MANO-format hand model, validated, as float32/int64 numpy arrays.

    Attributes:
        v_template: (V, 3) rest vertices, metres.
        faces: (F, 3) int64 triangles.
        weights: (V, 16) skinning weights.
        J_regressor: (16, V) dense joint regressor.
        parents: (16,) int64 parent joint of each joint, -1 for the root.
        shapedirs: (V, 3, K) shape blend shapes.
        posedirs: (V, 3, 135) pose blend shapes.
        hands_components: (C, 45) finger-pose PCA basis (rows).
        hands_mean: (45,) mean finger pose.
        fingertip_vertex_ids: (5,) thumb, index, middle, ring, pinky tip vertices.
        path: the file it was read from, if any.
    """

    v_template: np.ndarray
    faces: np.ndarray
    weights: np.ndarray
    J_regressor: np.ndarray
    parents: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    fingertip_vertex_ids: np.ndarray
    path: Path | None = None

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self.shapedirs.shape[2]

    @property
    def is_right(self) -> bool:
        """True unless the file name says LEFT (MANO's own convention)."""
        return self.path is None or "LEFT" not in self.path.name.upper()

    def to_dict(self) -> dict:
        """The arrays under MANO's key names (what ``save_mano`` writes)."""
        return {
            "v_template": self.v_template, "f": self.faces, "weights": self.weights,
            "J_regressor": self.J_regressor,
            "kintree_table": np.stack([self.parents, np.arange(len(self.parents))]).astype(np.int64),
            "shapedirs": self.shapedirs, "posedirs": self.posedirs,
            "hands_components": self.hands_components, "hands_mean": self.hands_mean,
            "fingertip_vertex_ids": self.fingertip_vertex_ids,
        }


def model_from_arrays(arrays: dict, source: str = "model") -> ManoModel:
    """Validate a dict of MANO arrays and build a ``ManoModel``.

    Args:
        arrays: MANO keys (see the module docstring) -> arrays (dense or scipy.sparse).
        source: what to name in error messages (usually the file).

    Raises:
        ValueError: a key is missing or an array has the wrong shape; the message names both.
    """
    missing = [key for key in REQUIRED_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{source}: missing key(s) {', '.join(missing)}; a MANO model file needs "
                         f"{', '.join(REQUIRED_KEYS)}")

    def dense(key, dtype=np.float32):
        value = arrays[key]
        if scipy.sparse.issparse(value):
            value = value.toarray()
        try:
            return np.ascontiguousarray(np.asarray(value, dtype=dtype))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: key {key!r} is not a numeric array ({error})") from error

    def check(key, value, expected):
        if value.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, value.shape)):
            shape = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
            raise ValueError(f"{source}: key {key!r} has shape {value.shape}, expected {shape}")
        return value

    v_template = check("v_template", dense("v_template"), (None, 3))
    V, J = v_template.shape[0], NUM_MANO_JOINTS
    faces = check("f", dense("f", np.int64), (None, 3))
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise ValueError(f"{source}: key 'f' indexes vertices outside 0..{V - 1}")
    kintree = check("kintree_table", dense("kintree_table", np.int64), (2, J))
    parents = kintree[0].copy()
    parents[0] = -1  # the root: -1, or 2**32 - 1 in the official uint32 files
    if any(not 0 <= parents[j] < j for j in range(1, J)):
        raise ValueError(f"{source}: kintree_table row 0 must list each joint's parent before the joint")
    tips = arrays.get("fingertip_vertex_ids")
    if tips is None:
        if V <= max(MANO_FINGERTIP_VERTEX_IDS):
            raise ValueError(f"{source}: no 'fingertip_vertex_ids' and only {V} vertices, so MANO's tip ids "
                             f"{MANO_FINGERTIP_VERTEX_IDS} do not apply; add the key")
        tips = MANO_FINGERTIP_VERTEX_IDS
    tips = check("fingertip_vertex_ids", np.asarray(tips, dtype=np.int64).ravel(), (5,))
    return ManoModel(
        v_template=v_template,
        faces=faces,
        weights=check("weights", dense("weights"), (V, J)),
        J_regressor=check("J_regressor", dense("J_regressor"), (J, V)),
        parents=parents,
        shapedirs=check("shapedirs", dense("shapedirs"), (V, 3, None)),
        posedirs=check("posedirs", dense("posedirs"), (V, 3, 9 * (J - 1))),
        hands_components=check("hands_components", dense("hands_components"), (None, 45)),
        hands_mean=check("hands_mean", dense("hands_mean").ravel(), (45,)),
        fingertip_vertex_ids=tips,
        path=Path(source) if source != "model" else None,
    )


def load_mano(path) -> ManoModel:
    """Load a MANO-format model: the open hand, a converted ``.npz``, or an official ``MANO_*.pkl``.

    Args:
        path: a ``.pkl`` (pickled dict, chumpy allowed, loaded safely) or ``.npz`` of plain arrays.

    Returns:
        ManoModel.

    Raises:
        FileNotFoundError: no such file (with where the official files come from).
        UnsafePickleError: the pickle holds a class other than numpy/scipy.sparse/chumpy arrays.
        ValueError: the file is corrupt, or a key is missing or has the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such MANO model file. handlib ships its own open hand model "
            f"(handlib.mano.default_model_path()); the official MANO files come from {MANO_DOWNLOAD}")
    if path.suffix == ".npz":
        arrays = load_npz(path)
    else:
        try:
            arrays = restricted_pickle_load(path)
        except UnsafePickleError:
            raise
        except Exception as error:
            raise ValueError(f"{path}: not a readable MANO pickle ({type(error).__name__}: {error})") from error
        if not isinstance(arrays, dict):
            raise ValueError(f"{path}: expected a pickled dict of arrays, got {type(arrays).__name__}")
    return model_from_arrays(arrays, source=str(path))


def save_mano(model: ManoModel | dict, path) -> Path:
    """Write a model as MANO's format, atomically: ``.pkl`` (a pickled dict of plain numpy arrays,
    what smplx reads) or ``.npz``.

    Args:
        model: a ManoModel, or a dict of MANO arrays (validated first).
        path: destination; smplx wants the name ``MANO_RIGHT.pkl`` (or ``MANO_LEFT.pkl``).
    """
    path = Path(path)
    if isinstance(model, dict):
        model = model_from_arrays(model, source=str(path))
    arrays = model.to_dict()
    if path.suffix == ".npz":
        return save_npz(path, compressed=False, **arrays)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            pickle.dump(arrays, f, protocol=4)
    return path


def convert_mano(source, destination) -> Path:
    """Convert an official (chumpy) MANO pickle into a plain ``.npz`` or ``.pkl`` that needs no chumpy.

    Example (shell):
        python -m handlib convert-mano ~/Downloads/mano_v1_2/models/MANO_RIGHT.pkl MANO_RIGHT.npz
    """
    return save_mano(load_mano(source), destination)
