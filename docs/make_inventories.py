"""Write the intersphinx inventories of ``_intersphinx/`` (the site builds without the network).

Each inventory lists the objects of one library that dmlr's pages and docstrings refer to, with the address of its
page on that library's documentation site. Run ``python docs/make_inventories.py`` after referring to a new one.
"""

from __future__ import annotations

import zlib
from pathlib import Path

OBJECTS: dict[str, dict[str, tuple[str, str]]] = {
    "python": {
        "str": ("py:class", "library/stdtypes.html#str"),
        "dict": ("py:class", "library/stdtypes.html#dict"),
        "list": ("py:class", "library/stdtypes.html#list"),
        "tuple": ("py:class", "library/stdtypes.html#tuple"),
        "int": ("py:class", "library/functions.html#int"),
        "float": ("py:class", "library/functions.html#float"),
        "bool": ("py:class", "library/functions.html#bool"),
        "ValueError": ("py:exception", "library/exceptions.html#ValueError"),
        "RuntimeError": ("py:exception", "library/exceptions.html#RuntimeError"),
        "ArithmeticError": ("py:exception", "library/exceptions.html#ArithmeticError"),
        "Exception": ("py:exception", "library/exceptions.html#Exception"),
        "UserWarning": ("py:exception", "library/exceptions.html#UserWarning"),
        "pickle": ("py:module", "library/pickle.html#module-pickle"),
        "ast": ("py:module", "library/ast.html#module-ast"),
        "collections.abc.Callable": ("py:class", "library/collections.abc.html#collections.abc.Callable"),
    },
    "numpy": {
        "numpy.ndarray": ("py:class", "reference/generated/numpy.ndarray.html"),
        "numpy.dtype": ("py:class", "reference/generated/numpy.dtype.html"),
        "numpy.load": ("py:function", "reference/generated/numpy.load.html"),
    },
    "scipy": {
        "scipy.sparse.csr_matrix": ("py:class", "reference/generated/scipy.sparse.csr_matrix.html"),
        "scipy.linalg.cho_factor": ("py:function", "reference/generated/scipy.linalg.cho_factor.html"),
        "scipy.linalg.LinAlgWarning": ("py:exception", "reference/generated/scipy.linalg.LinAlgWarning.html"),
    },
    "pandas": {
        "pandas.DataFrame": ("py:class", "reference/api/pandas.DataFrame.html"),
        "pandas.Series": ("py:class", "reference/api/pandas.Series.html"),
        "pandas.Index": ("py:class", "reference/api/pandas.Index.html"),
        "pandas.MultiIndex": ("py:class", "reference/api/pandas.MultiIndex.html"),
        "pandas.Categorical": ("py:class", "reference/api/pandas.Categorical.html"),
    },
    "dask": {
        "dask.array.Array": ("py:class", "generated/dask.array.Array.html"),
        "dask.dataframe.DataFrame": ("py:class", "generated/dask.dataframe.DataFrame.html"),
        "dask.dataframe.Series": ("py:class", "generated/dask.dataframe.Series.html"),
        "dask.delayed.Delayed": ("py:class", "delayed-api.html#dask.delayed.Delayed"),
        "dask.dataframe.read_parquet": ("py:function", "generated/dask.dataframe.read_parquet.html"),
        "dask.base.tokenize": ("py:function", "generated/dask.base.tokenize.html"),
    },
    "distributed": {
        "distributed.Client": ("py:class", "api.html#distributed.Client"),
        "distributed.LocalCluster": ("py:class", "api.html#distributed.LocalCluster"),
        "distributed.security.Security": ("py:class", "api.html#distributed.security.Security"),
    },
    "zarr": {
        "zarr.Array": ("py:class", "api/zarr/index.html#zarr.Array"),
        "zarr.Group": ("py:class", "api/zarr/index.html#zarr.Group"),
    },
    "statsmodels": {
        "statsmodels.discrete.discrete_model.MNLogit": (
            "py:class", "generated/statsmodels.discrete.discrete_model.MNLogit.html"),
        "statsmodels.discrete.discrete_model.MultinomialResults": (
            "py:class", "generated/statsmodels.discrete.discrete_model.MultinomialResults.html"),
    },
}  # fmt: skip


def write(name: str, objects: dict[str, tuple[str, str]], out: Path) -> None:
    """One Sphinx inventory (format version 2) of ``objects``: name -> (domain:role, address)."""
    header = (
        f"# Sphinx inventory version 2\n# Project: {name}\n# Version: \n# The remainder is compressed using zlib.\n"
    )
    body = "".join(f"{obj} {role} 1 {uri} -\n" for obj, (role, uri) in sorted(objects.items()))
    out.write_bytes(header.encode() + zlib.compress(body.encode()))


if __name__ == "__main__":
    here = Path(__file__).resolve().parent / "_intersphinx"
    here.mkdir(exist_ok=True)
    for project, objects in OBJECTS.items():
        write(project, objects, here / f"{project}.inv")
