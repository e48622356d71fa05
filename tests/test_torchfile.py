"""utils/torchfile.py: PyTorch state dict files read without PyTorch, in both of
torch.save's formats, and nothing but tensors unpickled."""

import collections
import importlib.util
import os
import pickle
import struct
import sys
import types
import zipfile
from unittest import mock

import numpy as np
import pytest

from utils import torchfile

NAMES = {np.dtype(v): k for k, v in torchfile.DTYPES.items()}


def _fake_torch():
    """Stand-ins for the globals torch.save pickles (torch.FloatStorage, ...,
    torch._utils._rebuild_tensor_v2), so a test writes the real byte layout without torch."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in torchfile.DTYPES:
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled here")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    return torch, utils


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _Tensor:
    """Pickles as torch does a tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, rebuild, storage, offset, size, stride):
        self.args = (rebuild, (storage, offset, size, stride, False, collections.OrderedDict()))

    def __reduce_ex__(self, protocol):
        return self.args


def write_state_dict(path, arrays, fmt="legacy", views=None, extra=None):
    """A torch.save file of `arrays` ({name: numpy array}) in `fmt` ("legacy" or "zip"),
    laid out as torch writes it. views: {name: (storage name, offset, size, stride)}
    tensors that view another entry's storage (e.g. a transpose); extra: {name: object}
    pickled as it is (what a reader must refuse)."""
    torch, utils = _fake_torch()
    with mock.patch.dict(sys.modules, {"torch": torch, "torch._utils": utils}):
        storages = {name: _Storage(str(i), np.array(a, order="C"))
                    for i, (name, a) in enumerate(arrays.items())}
        state = collections.OrderedDict(
            (name, _Tensor(utils._rebuild_tensor_v2, s, 0, s.array.shape,
                           tuple(st // s.array.itemsize for st in s.array.strides)))
            for name, s in storages.items())
        for name, (base, offset, size, stride) in (views or {}).items():
            state[name] = _Tensor(utils._rebuild_tensor_v2, storages[base], offset, size, stride)
        state.update(extra or {})

        def persistent_id(obj):
            if not isinstance(obj, _Storage):
                return None
            kind = getattr(torch, NAMES[obj.array.dtype])
            pid = ("storage", kind, obj.key, "cpu", obj.array.size)
            return pid + (None,) if fmt == "legacy" else pid

        if fmt == "legacy":
            with open(path, "wb") as f:
                for header in (torchfile.LEGACY_MAGIC, 1001,
                               {"protocol_version": 1001, "little_endian": True}):
                    pickle.dump(header, f, protocol=2)
                p = pickle.Pickler(f, protocol=2)
                p.persistent_id = persistent_id
                p.dump(state)
                keys = sorted(s.key for s in storages.values())
                pickle.dump(keys, f, protocol=2)
                by_key = {s.key: s.array for s in storages.values()}
                for key in keys:
                    f.write(struct.pack("<q", by_key[key].size))
                    f.write(by_key[key].astype(by_key[key].dtype.newbyteorder("<")).tobytes())
        else:
            import io
            buffer = io.BytesIO()
            p = pickle.Pickler(buffer, protocol=2)
            p.persistent_id = persistent_id
            p.dump(state)
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("model/data.pkl", buffer.getvalue())
                z.writestr("model/version", "3\n")
                for s in storages.values():
                    z.writestr(f"model/data/{s.key}", s.array.tobytes())
    return path


def sample_arrays():
    rng = np.random.default_rng(0)
    return {"conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
            "bn.running_var": rng.uniform(0.5, 2, 4).astype(np.float32),
            "bn.num_batches_tracked": np.array(7, np.int64),
            "head.weight": np.arange(6, dtype=np.float64).reshape(2, 3)}


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_both_formats_read_back_every_tensor_exactly(tmp_path, fmt):
    arrays = sample_arrays()
    # head.T views head.weight's storage transposed: strides, not a copy.
    path = write_state_dict(tmp_path / "m.pth", arrays, fmt,
                            views={"head.T": ("head.weight", 0, (3, 2), (1, 3)),
                                   "head.row1": ("head.weight", 3, (3,), (1,))})
    read = torchfile.read(str(path))
    assert list(read) == [*arrays, "head.T", "head.row1"]
    for name, array in arrays.items():
        assert read[name].dtype == array.dtype and read[name].shape == array.shape
        np.testing.assert_array_equal(read[name], array)
    np.testing.assert_array_equal(read["head.T"], arrays["head.weight"].T)
    np.testing.assert_array_equal(read["head.row1"], [3.0, 4.0, 5.0])


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_a_file_naming_any_other_global_is_refused_and_never_run(tmp_path, fmt):
    marker = tmp_path / "ran"
    evil = type("Evil", (), {"__reduce__": lambda self: (os.mkdir, (str(marker),))})()
    path = write_state_dict(tmp_path / "m.pth", sample_arrays(), fmt, extra={"x": evil})
    with pytest.raises(ValueError, match=r"names posix\.mkdir, which a state dict"):
        torchfile.read(str(path))
    assert not marker.exists()


def test_a_legacy_header_naming_a_global_is_refused_and_never_run(tmp_path):
    """The five pickles' headers hold plain data; code there must not run either."""
    marker = tmp_path / "ran"
    evil = type("Evil", (), {"__reduce__": lambda self: (os.mkdir, (str(marker),))})()
    good = write_state_dict(tmp_path / "m.pth", sample_arrays()).read_bytes()
    magic = pickle.dumps(torchfile.LEGACY_MAGIC, protocol=2)
    for name, data in (("first.pth", pickle.dumps(evil, protocol=2) + good),
                       ("info.pth", magic + pickle.dumps(1001, protocol=2)
                        + pickle.dumps(evil, protocol=2))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError):
            torchfile.read(str(tmp_path / name))
        assert not marker.exists()


def test_files_that_are_not_torch_saves_are_a_value_error(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "no pickle here")
    (tmp_path / "list.pth").write_bytes(pickle.dumps(torchfile.LEGACY_MAGIC, protocol=2)
                                        + pickle.dumps(1001) + pickle.dumps({}) +
                                        pickle.dumps([1, 2]) + pickle.dumps([]))
    truncated = write_state_dict(tmp_path / "cut.pth", sample_arrays())
    truncated.write_bytes(truncated.read_bytes()[:-20])
    cases = {"text.pth": "neither a zip nor a legacy torch.save file",
             "other.zip": "a zip file without data.pkl",
             "list.pth": "holds a list, not a state dict",
             "cut.pth": "it is cut short: storage 3 has"}
    for name, words in cases.items():
        with pytest.raises(ValueError, match=words):
            torchfile.read(str(tmp_path / name))
    with pytest.raises(FileNotFoundError):
        torchfile.read(str(tmp_path / "nowhere.pth"))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch is not installed (an optional benchmark dependency)")
@pytest.mark.parametrize("zip_format", [False, True])
def test_real_torch_save_files_read_the_same(tmp_path, zip_format):
    import torch

    state = collections.OrderedDict(
        w=torch.arange(24, dtype=torch.float32).reshape(2, 3, 4),
        t=torch.arange(6, dtype=torch.float64).reshape(2, 3).t(), n=torch.tensor(5))
    torch.save(state, tmp_path / "m.pth", _use_new_zipfile_serialization=zip_format)
    read = torchfile.read(str(tmp_path / "m.pth"))
    for name, tensor in state.items():
        np.testing.assert_array_equal(read[name], tensor.numpy())
