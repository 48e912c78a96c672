"""The store's metadata: one typed, versioned record, written by one writer (:func:`dmlr.data.writing.write_store`).

It is the group attribute ``dmlr`` of the Zarr store, JSON. Stores staged from tables and from arrays write the same
fields (those a source does not have are ``None`` or empty).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = ["SCHEMA_VERSION", "StoreMetadata"]

SCHEMA_VERSION = 1
"""The store layout this dmlr writes and reads."""


@dataclass(frozen=True)
class StoreMetadata:
    """What a store records about its data.

    Attributes
    ----------
    n_rows : int
    feature_names : list of str
        The ``p`` columns of ``X``.
    classes : list
        Class labels, sorted (``y`` holds positions in them).
    class_counts : list of int
        Rows per class.
    target : str
        The label column of the source (``"y"`` for arrays).
    weights : str, optional
        The weights column (``"weights"`` for arrays).
    offset : list of str, optional
        The offset columns.
    encoding : dict
        How source columns map to ``X`` (:class:`~dmlr.data.encoding.FeatureEncoding` as JSON).
    source : dict
        ``format`` (``"csv"``, ``"parquet"``, ``"arrays"``...), ``paths``, ``sorted_by`` (the groups column the
        rows were sorted by, or ``None``).
    chunk_rows : int
        Rows per chunk (one chunk = one partition of every pass).
    x_dtype : str
        Storage type of ``X``.
    groups : str, optional
        The cluster-id column kept as array ``groups``.
    n_groups : int, optional
        Distinct cluster ids.
    n_missing : int
        Source rows left out for a missing value.
    codecs : dict
        Per array, the codec chosen by measurement and the saving Blosc-LZ4 would have given.
    created : str
        When staging ended (ISO 8601, UTC).
    checksum : str
        :func:`~dmlr.store_checksum` at staging.
    versions : list of dict
        The store's versions, oldest first: ``id``, ``rows`` (``[start, stop)`` of the rows it added),
        ``class_counts`` (of those rows), ``sources`` (the files it read), ``checksum`` (the store's after it),
        ``created`` (ISO 8601, UTC). Staging writes the first; each append adds one (:mod:`dmlr.data.appending`).
        Empty for stores staged before versions existed.
    schema_version : int
    dmlr_version : str
    complete : bool
        Written last: ``False`` means the staging did not finish.
    """

    n_rows: int
    feature_names: list[str]
    classes: list[Any]
    class_counts: list[int]
    target: str
    weights: str | None
    offset: list[str] | None
    encoding: dict[str, Any]
    source: dict[str, Any]
    chunk_rows: int
    x_dtype: str = "float64"
    groups: str | None = None
    n_groups: int | None = None
    n_missing: int = 0
    codecs: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = ""
    checksum: str = ""
    versions: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    dmlr_version: str = ""
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        """The record as the store's ``dmlr`` attribute."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StoreMetadata:
        """The record of a store's attribute (fields a store staged by an earlier dmlr lacks take their defaults;
        unknown ones are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        source = dict(values.get("source") or {})
        source.setdefault("sorted_by", None)
        values["source"] = source
        values["codecs"] = dict(values.get("codecs") or {})
        values["versions"] = list(values.get("versions") or [])
        return cls(**values)

    @property
    def version(self) -> int:
        """The store's version number (1 for a store as staged; each append adds one; 1 for older stores)."""
        return max(len(self.versions), 1)

    def replace(self, **changes: Any) -> StoreMetadata:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def __getitem__(self, name: str) -> Any:
        """``metadata["classes"]``: the field, as the record's dict form was read before it was typed."""
        if name not in {f.name for f in fields(self)}:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        """The field ``name`` (``default`` for an unknown name), as a dict's ``get``."""
        try:
            return self[name]
        except KeyError:
            return default
