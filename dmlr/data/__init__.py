"""Data layer: user inputs and Zarr stores to aligned row-chunked dask arrays (:mod:`dmlr.data.design`,
:mod:`dmlr.data.store`).

``Design``, ``RowData``, ``build_design`` and ``LabelCoding`` are imported on first use: worker processes import the
light modules (``chunks``, ``blocks``, ``labels``, ``rows``) that task graphs refer to, and must not pull pandas
through this file.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmlr.data.design import Design, RowData, build_design
    from dmlr.data.labels import LabelCoding

__all__ = ["Design", "LabelCoding", "RowData", "build_design"]


def __getattr__(name: str) -> object:
    """The data layer's public names, imported on first use."""
    if name in ("Design", "RowData", "build_design"):
        from dmlr.data import design

        return getattr(design, name)
    if name == "LabelCoding":
        from dmlr.data.labels import LabelCoding

        return LabelCoding
    raise AttributeError(f"module 'dmlr.data' has no attribute {name!r}")
