"""Read a PyTorch state dict file (`torch.save(model.state_dict(), path)`) without PyTorch.

The pretrained EfficientNet-Lite0 encoder (core/pretrained.py) starts from an ImageNet
checkpoint that ships as a `.pth` file, and PyTorch is no dependency of this tool, so
this module reads both of the file's formats itself:

  legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row
    (magic number, protocol version, system info, the state dict, its storage keys), then
    each storage as an int64 element count followed by its raw little-endian bytes;
  zip (torch >= 1.6): `<archive>/data.pkl`, and one `<archive>/data/<key>` file a storage.

Like `torch.load(weights_only=True)`, it unpickles nothing but a dict of tensors: any
other global a file names (code a malicious file could run) is refused. `read` returns
{name: numpy array}; a file it cannot read raises ValueError saying why.
"""

import collections
import pickle
import struct
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py's MAGIC_NUMBER
DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
          "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
          "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _Storage:
    """A storage the pickle refers to by key; its bytes are read after the pickle."""

    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, *_):  # torch._utils._rebuild_tensor_v2
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _Plain(pickle.Unpickler):
    """The legacy format's headers and key list: plain numbers, strings and containers, so
    any global at all is refused (plain pickle.load would run whatever a file names)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it names {module}.{name} where plain data belongs")


class _Unpickler(pickle.Unpickler):
    _GLOBALS = {("collections", "OrderedDict"): collections.OrderedDict,
                ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                ("torch._utils", "_rebuild_tensor"): _rebuild_tensor}

    def find_class(self, module, name):
        if module == "torch" and name in DTYPES:
            return name
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a state dict of tensors "
                                     "never does")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and pid[1] in DTYPES):
            raise pickle.UnpicklingError(f"unknown storage {pid!r:.80}")
        return _Storage(DTYPES[pid[1]], str(pid[2]), int(pid[4]))


def _array(tensor, data):
    """The numpy array of a tensor, given its storage's raw bytes."""
    dtype = np.dtype(tensor.storage.dtype).newbyteorder("<")
    if len(data) != tensor.storage.numel * dtype.itemsize:
        raise ValueError(f"it is cut short: storage {tensor.storage.key} has {len(data)} "
                         f"bytes, not {tensor.storage.numel * dtype.itemsize}")
    flat = np.frombuffer(data, dtype, count=tensor.storage.numel)
    if not tensor.size:
        return flat[tensor.offset].copy()
    strides = tuple(s * dtype.itemsize for s in tensor.stride)
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], tensor.size, strides)
    return np.ascontiguousarray(view).astype(dtype.newbyteorder("="))


def _tensors(state, storage_bytes):
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, tensor in state.items():
        if not isinstance(tensor, _Tensor):
            raise ValueError(f"its entry {name!r} is not a tensor")
        out[str(name)] = _array(tensor, storage_bytes(tensor.storage))
    return out


def _read_zip(path):
    with zipfile.ZipFile(path) as z:
        pickles = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise ValueError("it is a zip file without data.pkl, not a torch.save file")
        root = pickles[0][:-len("data.pkl")]
        with z.open(pickles[0]) as f:
            state = _Unpickler(f).load()
        return _tensors(state, lambda s: z.read(f"{root}data/{s.key}"))


def _read_legacy(path):
    with open(path, "rb") as f:
        try:
            magic = _Plain(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError):
            magic = None  # not a pickle of plain data at all
        if magic != LEGACY_MAGIC:
            raise ValueError("it is neither a zip nor a legacy torch.save file")
        _Plain(f).load()  # protocol version
        info = _Plain(f).load()
        if isinstance(info, dict) and not info.get("little_endian", True):
            raise ValueError("it was written on a big-endian machine")
        state = _Unpickler(f).load()
        keys = _Plain(f).load()
        # The file stores element counts, not bytes: each storage's element size (a state
        # that is no dict is _tensors' error, below).
        tensors = state.values() if isinstance(state, dict) else ()
        itemsize = {t.storage.key: np.dtype(t.storage.dtype).itemsize
                    for t in tensors if isinstance(t, _Tensor)}
        raw = {}
        for key in map(str, keys):
            if key not in itemsize:
                raise ValueError(f"its storage {key} belongs to no tensor")
            (numel,) = struct.unpack("<q", f.read(8))
            raw[key] = f.read(numel * itemsize[key])
    return _tensors(state, lambda s: raw[s.key])


def read(path):
    """{name: numpy array} of the state dict that `path` holds.

    Raises OSError when the file cannot be opened, ValueError when it is not a
    state dict of tensors written by torch.save (the message says what it is instead).
    """
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        return _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, zipfile.BadZipFile,
            AttributeError, IndexError, TypeError) as e:
        raise ValueError(f"it is not a readable torch.save file ({e})") from None
