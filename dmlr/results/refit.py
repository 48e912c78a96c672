"""What a result keeps so that a refit after rows were appended to its store reads only the new rows first.

The statistics of a pass are sums over rows. A fit of a store at version ``v`` (rows ``[0, n_v)``) keeps the first
pass's record (at ``W = 0``: Gram matrix, column moments, class weights) and the record at its optimum ``W_v``
(log-likelihood, score, information). After an append, the same records of the new rows (two passes over them
only) added to these are exactly the records of all rows, at ``W = 0`` and at ``W_v``: the refit's checks and its
first Newton step need no pass over the old rows (:mod:`dmlr.fitting.refit`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmlr.errors import StoreError
from dmlr.oracle.statistics import Statistics

__all__ = ["RefitRecord"]


@dataclass(frozen=True)
class RefitRecord:
    """A store fit's records for an incremental refit.

    Attributes
    ----------
    first : Statistics
        The first pass (``W = 0``) over the fitted rows, the whole design's.
    final : Statistics
        At the optimum: log-likelihood, score ``(d, m)`` and exact information ``(m d, m d)``.
    n_rows : int
        The rows fitted: the store's rows ``[0, n_rows)``.
    store_checksum : str
        The store's checksum at the version fitted.
    store_version : int
    """

    first: Statistics
    final: Statistics
    n_rows: int
    store_checksum: str
    store_version: int

    def to_files(self) -> tuple[bytes, dict[str, Any]]:
        """``refit.npz`` (read back with ``allow_pickle=False``) and the JSON part kept in ``result.json``."""
        arrays, scalars = self.first.to_arrays("first")
        more, values = self.final.to_arrays("final")
        buf = io.BytesIO()
        np.savez(buf, allow_pickle=False, **arrays, **more)
        doc = {"scalars": scalars | values, "n_rows": self.n_rows, "store_checksum": self.store_checksum}
        return buf.getvalue(), doc | {"store_version": self.store_version}

    @classmethod
    def from_files(cls, data: bytes, doc: dict[str, Any], where: str) -> RefitRecord:
        """The record :meth:`to_files` wrote.

        Raises
        ------
        StoreError
            ``refit.npz`` holds anything but numeric arrays (named by ``where``).
        """
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except ValueError as exc:
            raise StoreError(f"{where}: refit.npz is not plain numeric arrays ({exc})") from None
        if any(a.dtype.kind not in "biuf" for a in arrays.values()):
            raise StoreError(f"{where}: refit.npz holds arrays that are not numbers")
        scalars = dict(doc["scalars"])
        return cls(
            Statistics.from_arrays("first", arrays, scalars),
            Statistics.from_arrays("final", arrays, scalars),
            int(doc["n_rows"]),
            str(doc["store_checksum"]),
            int(doc["store_version"]),
        )
