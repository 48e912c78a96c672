"""Values as plain JSON data and back: what a result stores of a formula's encoding state (levels, knots, means).

A value is written as JSON's own types where it is one (str, bool, int, float, None, a list, a dict with text
keys) and otherwise as a tagged object: ``{"__tuple__": [...]}``, ``{"__items__": [[key, value], ...]}`` (a dict
whose keys are not all text), ``{"__array__": [...], "dtype": "<f8"}`` (a numeric or boolean ndarray). numpy
scalars are written as the Python number they equal. Anything else is refused with :class:`InputError` naming
where it was found: nothing a result holds is ever code, and nothing read back ever runs any.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmlr.errors import InputError, StoreError

__all__ = ["from_plain", "to_plain"]

_TAGS = ("__tuple__", "__items__", "__array__")


def to_plain(value: Any, where: str) -> Any:
    """``value`` as JSON data (see the module docstring).

    Parameters
    ----------
    value : Any
    where : str
        Names the value in the error message.

    Raises
    ------
    InputError
        ``value`` holds something that is not data (an object, a function, an object array).
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return {"__array__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [to_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and k not in _TAGS and k != "dtype" for k in value):
            return {k: to_plain(v, f"{where}[{k!r}]") for k, v in value.items()}
        return {"__items__": [[to_plain(k, where), to_plain(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise InputError(f"{where} is a {type(value).__name__}, which dmlr cannot save as data in a result")


def from_plain(value: Any, where: str) -> Any:
    """The value :func:`to_plain` wrote.

    Raises
    ------
    StoreError
        A tagged object that is malformed (named by ``where``).
    """
    if isinstance(value, list):
        return [from_plain(v, where) for v in value]
    if not isinstance(value, dict):
        return value
    try:
        if "__tuple__" in value:
            return tuple(from_plain(v, where) for v in value["__tuple__"])
        if "__items__" in value:
            return {_hashable(from_plain(k, where)): from_plain(v, where) for k, v in value["__items__"]}
        if "__array__" in value:
            dtype = np.dtype(value["dtype"])
            if dtype.kind not in "biuf":
                raise ValueError(f"dtype {dtype} is not numeric")
            return np.asarray(value["__array__"], dtype=dtype)
    except (TypeError, ValueError, KeyError) as exc:
        raise StoreError(f"{where} holds a malformed value: {exc}") from None
    return {k: from_plain(v, where) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key
