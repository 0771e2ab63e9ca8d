"""An unpickler for numpy-only data files (the CIFAR-10 python batches) that cannot run code.

A pickle is a program: every global it names is called. :class:`NumpyOnlyUnpickler` names no
real callable at all. It resolves the few globals that genuine numpy pickles use (protocols 0-5,
numpy 1.x and 2.x module names, Python 2 pickles read with ``encoding="bytes"``) to small checked
stand-ins that can only rebuild plain numeric arrays, dtypes and scalars:

* ``numpy.ndarray`` is a token, not the class: calling it fails, so ``ndarray((10**10,))`` cannot
  allocate memory;
* ``_reconstruct(ndarray, shape, dtype)`` accepts only empty shapes (genuine pickles pass ``(0,)``
  and fill the array from the file's own bytes in ``__setstate__``, which numpy checks against the
  shape), so memory is bounded by the file size;
* ``_frombuffer(buf, dtype, shape, order)`` (protocol 5) views bytes that are in the file and
  checks their length against the shape;
* ``dtype(...)`` and ``scalar(...)`` accept numeric and boolean types only (no object arrays);
* ``bytes()`` / ``_codecs.encode(text, "latin1")`` (how Python 3 writes ``bytes`` in protocols 0-2)
  accept only those exact forms.

Everything else raises :class:`pickle.UnpicklingError` naming the global.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
from typing import Any, BinaryIO

import numpy as np

__all__ = ["NumpyOnlyUnpickler", "load_numpy_pickle"]

_NUMERIC_KINDS = frozenset("biuf")  # bool, signed, unsigned, float


class _NdarrayToken:
    """Stands in for ``numpy.ndarray`` inside a pickle; it cannot be instantiated."""

    def __new__(cls, *args: Any, **kwargs: Any):
        raise pickle.UnpicklingError("refusing to call numpy.ndarray(...) from a data file")


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _NUMERIC_KINDS or dtype.fields or dtype.subdtype:
        raise pickle.UnpicklingError(f"refusing array dtype {dtype!r}: only plain numeric dtypes are allowed")
    return dtype


def _safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> np.dtype:
    if not isinstance(spec, str) or len(spec) > 4:
        raise pickle.UnpicklingError(f"refusing dtype({spec!r}): only numeric type codes are allowed")
    try:
        dtype = np.dtype(spec)
    except TypeError as exc:
        raise pickle.UnpicklingError(f"refusing dtype({spec!r}): {exc}") from None
    return _check_dtype(dtype)


def _check_shape(shape: Any) -> tuple[int, ...]:
    if (
        not isinstance(shape, tuple)
        or len(shape) > 8
        or not all(isinstance(s, int) and 0 <= s < 2**40 for s in shape)
    ):
        raise pickle.UnpicklingError(f"refusing array shape {shape!r}")
    return shape


def _safe_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not _NdarrayToken:
        raise pickle.UnpicklingError(f"refusing _reconstruct of {cls!r}: only numpy.ndarray is allowed")
    if math.prod(_check_shape(shape)) != 0:
        raise pickle.UnpicklingError(
            f"refusing _reconstruct with shape {shape!r}: arrays must be filled from the file's bytes"
        )
    return np.ndarray(shape, dtype=np.uint8)


def _safe_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if isinstance(buf, pickle.PickleBuffer):
        buf = buf.raw()
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise pickle.UnpicklingError(f"refusing _frombuffer over {type(buf).__name__}")
    dtype = _check_dtype(dtype)
    shape = _check_shape(shape)
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"refusing _frombuffer with order {order!r}")
    if math.prod(shape) * dtype.itemsize != len(buf):
        raise pickle.UnpicklingError(
            f"array of shape {shape} and dtype {dtype} needs {math.prod(shape) * dtype.itemsize} bytes, "
            f"the file holds {len(buf)}"
        )
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def _safe_scalar(dtype: Any, data: Any = None) -> np.generic:
    dtype = _check_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"refusing numpy scalar of dtype {dtype} from {data!r}")
    return np.frombuffer(data, dtype=dtype)[0]


def _safe_bytes(*args: Any) -> bytes:
    if args:
        raise pickle.UnpicklingError("refusing bytes(...) with arguments in a data file")
    return b""


def _safe_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than (str, 'latin1')")
    return codecs.encode(text, "latin1")


_ALLOWED: dict[tuple[str, str], Any] = {}
for _module in ("numpy", "numpy.core", "numpy._core"):
    _ALLOWED[(_module, "ndarray")] = _NdarrayToken
    _ALLOWED[(_module, "dtype")] = _safe_dtype
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _safe_reconstruct
    _ALLOWED[(_module, "scalar")] = _safe_scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _safe_frombuffer
for _module in ("builtins", "__builtin__"):
    _ALLOWED[(_module, "bytes")] = _safe_bytes
_ALLOWED[("_codecs", "encode")] = _safe_encode
_ALLOWED[("codecs", "encode")] = _safe_encode


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose globals are the checked stand-ins above; nothing else resolves."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file") from None


def _check_tree(value: Any, depth: int = 0) -> None:
    """Reject arrays whose ``__setstate__`` gave them a non-numeric dtype."""
    if depth > 20:
        raise pickle.UnpicklingError("data file nests containers too deeply")
    if isinstance(value, np.ndarray):
        _check_dtype(value.dtype)
    elif isinstance(value, dict):
        for v in value.values():
            _check_tree(v, depth + 1)
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple, dict, np.ndarray)):
        for v in value:
            _check_tree(v, depth + 1)


def load_numpy_pickle(stream: BinaryIO | bytes) -> Any:
    """Unpickle ``stream`` (a binary file or bytes) with :class:`NumpyOnlyUnpickler`.

    Strings of Python 2 pickles stay ``bytes`` (``encoding="bytes"``, as the CIFAR batches need).
    Raises :class:`pickle.UnpicklingError` for anything but numeric numpy data and plain containers.
    """
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    value = NumpyOnlyUnpickler(stream, encoding="bytes").load()
    _check_tree(value)
    return value
