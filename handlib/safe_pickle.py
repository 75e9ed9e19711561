"""Reading pickle files without letting them run code.

A pickle is a small program: unpickling calls whatever functions the file names (``os.system``
included). ``pickle.load`` on a downloaded file is therefore as unsafe as running a downloaded
script. ``restricted_load`` runs the same unpickler but looks every global name up in an allow
list first, and refuses anything else with an error that names it.

RHD's annotations (``anno_*.pickle``) and MANO's model files (``MANO_RIGHT.pkl``) are Python-2
pickles of dicts of numpy arrays, so the allow list they need is the handful of numpy names that
rebuild an array (``NUMPY_ARRAY_GLOBALS``). A reader may also name stand-ins: classes returned
in place of a named class (the MANO loader rebuilds chumpy's arrays that way, without chumpy). ``encoding="latin1"`` turns Python 2 byte strings
into ``str`` byte for byte, which is what numpy expects for the raw array data.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

# The globals a pickled numpy array, dtype or numpy scalar refers to. numpy 1.x writes
# ``numpy.core.*``; numpy 2.x writes ``numpy._core.*``; both name the same functions.
NUMPY_ARRAY_GLOBALS: dict[str, frozenset[str]] = {
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
    # pickle protocol 5 (Python >= 3.8 with numpy) rebuilds arrays with _frombuffer
    "numpy.core.numeric": frozenset({"_frombuffer"}),
    "numpy._core.numeric": frozenset({"_frombuffer"}),
    # Python 3 pickles of bytes at protocol <= 2 call _codecs.encode(text, "latin1")
    "_codecs": frozenset({"encode"}),
}
# The installed numpy's spelling: a pickle written under the other one is read under this one.
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """Raised when a pickle asks for a global that is not on the allow list (also a ValueError)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: dict, source: str, stand_ins: dict, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = allowed
        self._source = source
        self._stand_ins = stand_ins

    def find_class(self, module: str, name: str):
        if (module, name) in self._stand_ins:
            return self._stand_ins[(module, name)]
        if name not in self._allowed.get(module, ()):
            raise UnsafePickleError(
                f"{self._source}: refusing to load the global '{module}.{name}'; this file may only "
                f"contain {', '.join(sorted(self._allowed))} objects. It is either corrupt or not the "
                "file you meant; a pickle can run any code, so it is never loaded unrestricted.")
        for spelling in ("numpy.core", "numpy._core"):
            # numpy 2 renamed numpy.core to numpy._core (the old name warns); numpy 1 has only the old one.
            if module.startswith(spelling + "."):
                module = _NUMPY_CORE + module[len(spelling):]
                break
        return super().find_class(module, name)


def restricted_load(file, allowed: dict | None = None, *, stand_ins: dict | None = None, encoding: str = "latin1"):
    """Unpickle ``file``, admitting only the global names in ``allowed``.

    Args:
        file: a path, or a binary file object opened for reading.
        allowed: ``{module: set of names}`` that the pickle may refer to; default
            ``NUMPY_ARRAY_GLOBALS`` (numpy arrays, dtypes and scalars inside plain dicts, lists,
            tuples, numbers and strings).
        stand_ins: ``{(module, name): class}`` returned instead of the named class; a stand-in
            should only store the state it is given, for the caller to rebuild plain data from.
        encoding: how Python 2 byte strings are decoded; "latin1" keeps them byte for byte,
            which numpy needs to rebuild array data written by Python 2.

    Returns:
        The unpickled object.

    Raises:
        FileNotFoundError: ``file`` is a path that does not exist.
        UnsafePickleError: the pickle refers to a global outside ``allowed`` (e.g. ``os.system``).
        pickle.UnpicklingError, EOFError, ...: the file is not a complete pickle.

    Example:
        >>> import io
        >>> import numpy as np
        >>> blob = pickle.dumps({"xyz": np.zeros((42, 3), np.float32)}, protocol=2)
        >>> restricted_load(io.BytesIO(blob))["xyz"].shape
        (42, 3)
    """
    allowed = NUMPY_ARRAY_GLOBALS if allowed is None else allowed
    stand_ins = stand_ins or {}
    if isinstance(file, (str, Path)):
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, allowed, str(path), stand_ins, encoding=encoding).load()
    source = getattr(file, "name", "pickle")
    return _RestrictedUnpickler(file, allowed, str(source), stand_ins, encoding=encoding).load()
