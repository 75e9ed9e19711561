"""Atomic writes: a file appears whole or not at all, with the permissions of any new file."""
import os
import stat

import numpy as np
import pytest

from handlib.files import atomic_path, load_npz, save_npz


def test_atomic_write_keeps_the_old_file_on_failure_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "deep" / "set.npz"
    save_npz(target, x=np.arange(3))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("interrupted")
    assert load_npz(target)["x"].tolist() == [0, 1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["set.npz"]


def test_new_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        path = save_npz(tmp_path / "a.npz", x=np.zeros(1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
