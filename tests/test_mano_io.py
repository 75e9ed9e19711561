"""Loading MANO files safely: plain files, official-style chumpy pickles, refused pickles, bad files."""
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import torch

from conftest import make_random_mano_arrays
from handlib.mano import ManoLayer, UnsafePickleError, convert_mano, load_mano, save_mano


@pytest.fixture
def fake_chumpy(monkeypatch):
    """Stand-in ``chumpy.ch.Ch`` and ``chumpy.reordering.Select`` classes, pickled the way chumpy
    pickles (their __dict__), so the test writes a file shaped like the official MANO_RIGHT.pkl."""
    ch_module, reordering = types.ModuleType("chumpy.ch"), types.ModuleType("chumpy.reordering")
    package = types.ModuleType("chumpy")

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)

    class Select:
        def __init__(self, a, idxs, preferred_shape):
            self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    ch_module.Ch, reordering.Select = Ch, Select
    for name, module in [("chumpy", package), ("chumpy.ch", ch_module), ("chumpy.reordering", reordering)]:
        monkeypatch.setitem(sys.modules, name, module)
    return Ch, Select


def write_official_style(arrays, path, Ch, Select):
    """Wrap arrays as the official file does: chumpy arrays, a Select for shapedirs, sparse J_regressor."""
    official = dict(arrays)
    official.pop("fingertip_vertex_ids")
    for key in ("v_template", "weights", "posedirs", "hands_components", "hands_mean"):
        official[key] = Ch(arrays[key])
    shapedirs = arrays["shapedirs"]
    official["shapedirs"] = Select(Ch(shapedirs.ravel()), np.arange(shapedirs.size), shapedirs.shape)
    official["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
    official["bs_style"], official["bs_type"] = "lbs", "lrotmin"
    with open(path, "wb") as f:
        pickle.dump(official, f, protocol=2)


def test_official_chumpy_pickle_loads_without_chumpy(fake_chumpy, tmp_path, monkeypatch):
    arrays = make_random_mano_arrays(num_vertices=800)
    write_official_style(arrays, tmp_path / "MANO_RIGHT.pkl", *fake_chumpy)
    for name in ("chumpy", "chumpy.ch", "chumpy.reordering"):  # chumpy is not installed for the loader
        monkeypatch.delitem(sys.modules, name)
    model = load_mano(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_allclose(model.shapedirs, arrays["shapedirs"], rtol=1e-6)
    np.testing.assert_allclose(model.J_regressor, arrays["J_regressor"], rtol=1e-6)
    assert model.fingertip_vertex_ids.tolist() == [744, 320, 443, 554, 671]  # smplx's, as the file has none
    assert model.parents.tolist()[:4] == [-1, 0, 1, 2]

    converted = convert_mano(tmp_path / "MANO_RIGHT.pkl", tmp_path / "MANO_RIGHT.npz")
    with np.load(converted, allow_pickle=False) as data:  # plain arrays only: no pickle needed
        assert set(data.files) >= {"v_template", "shapedirs", "J_regressor"}
    pose = 0.3 * torch.randn(2, 45)
    assert torch.allclose(ManoLayer(model)(hand_pose=pose).vertices,
                          ManoLayer(converted)(hand_pose=pose).vertices)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload", [_Exploit(), {"v_template": _Exploit()}, {"f": types.SimpleNamespace()}])
def test_pickles_with_other_classes_are_refused(tmp_path, payload):
    """A call to os.system, and even a harmless class that is not an array, are refused by name."""
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        load_mano(path)


def test_missing_file_names_it_and_says_where_to_get_mano(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.pkl.*mano\.is\.tue\.mpg\.de"):
        load_mano(tmp_path / "nothere.pkl")


def test_corrupt_files(tmp_path):
    (tmp_path / "broken.pkl").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(ValueError, match="broken.pkl"):
        load_mano(tmp_path / "broken.pkl")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="broken.npz"):
        load_mano(tmp_path / "broken.npz")


@pytest.mark.parametrize("key,value,message", [
    ("posedirs", None, "missing key.*posedirs"),
    ("weights", np.ones((60, 15)), r"'weights' has shape \(60, 15\), expected \(60, 16\)"),
    ("f", np.array([[0, 1, 999]]), "outside"),
    ("kintree_table", np.zeros((2, 16)) + 3, "parent"),
])
def test_malformed_models_name_the_key(tmp_path, key, value, message):
    arrays = make_random_mano_arrays()
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    path = tmp_path / "MANO_RIGHT.pkl"
    with open(path, "wb") as f:
        pickle.dump(arrays, f)
    with pytest.raises(ValueError, match=message):
        load_mano(path)


def test_save_round_trip_pkl_and_npz(tmp_path):
    arrays = make_random_mano_arrays()
    for name in ("MANO_RIGHT.pkl", "MANO_RIGHT.npz"):
        model = load_mano(save_mano(arrays, tmp_path / name))
        np.testing.assert_allclose(model.posedirs, arrays["posedirs"], rtol=1e-6)
        assert model.is_right
    assert not load_mano(save_mano(arrays, tmp_path / "MANO_LEFT.npz")).is_right
    assert not list(tmp_path.glob(".*tmp*")), "atomic writes leave no temporary files"
