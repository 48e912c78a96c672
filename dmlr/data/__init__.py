"""Data layer: user inputs to aligned row-chunked dask arrays (and, later, Zarr stores)."""

from dmlr.data.design import Design, build_design
from dmlr.data.labels import LabelCoding

__all__ = ["Design", "LabelCoding", "build_design"]
