"""Data layer: user inputs and Zarr stores to aligned row-chunked dask arrays (:mod:`dmlr.data.design`,
:mod:`dmlr.data.store`). Nothing is imported here: worker processes import the light modules (``chunks``,
``blocks``, ``labels``) that task graphs refer to without pulling pandas."""
