"""Saving and loading fitted models as self-describing directories.

Layout of a result directory (local path or fsspec URL)::

    result.json      every scalar and label of the fit, feature encoding, input store reference and checksum,
                     dmlr and format versions
    coef.npy         (d, m) coefficients
    covariance.npy   (m d, m d) covariance, absent when the fit ran with inference=False
    history.jsonl    one JSON record per iteration
    refit.npz        for store fits with the exact information: the first pass's and the optimum's statistics, so
                     that a refit after an append reads only the new rows first (:mod:`dmlr.results.refit`)
    formula.json     for formula fits: the formula's encoding as data (its text, the categorical levels, the state
                     of its stateful transforms), from which formulaic's model spec is rebuilt
    summary.txt      the summary table
    manifest.json    the SHA-256 digest of every file above, written after them: :func:`dmlr.load` checks each file it
                     reads against it, so an edited, truncated or added file is refused by name
    COMPLETE         written last: a directory without it is refused

Floats are written with Python's shortest round-tripping repr and arrays as ``.npy``, so :func:`dmlr.load` gives back
exactly the numbers the fit produced. Nothing is pickled: every file is JSON, text or ``.npy`` read with
``allow_pickle=False``, so loading a result from anyone runs no code. Results of format 1 that hold a pickled
``formula.pkl`` are refused unless ``allow_legacy_pickle=True`` (for results whose origin you trust; save them
again to convert them).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import fsspec
import numpy as np

from dmlr.errors import StoreError
from dmlr.results.results import MNLogitResults

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_VERSION = 2
"""2: formula fits' encoding as ``formula.json`` (1: a pickled ``formula.pkl``, refused by default)."""

LEGACY_PICKLE = "formula.pkl"

MANIFEST = "manifest.json"
"""The file of a result directory that holds the SHA-256 digest of every other file (written after them)."""

_SCALARS = (
    "llf",
    "llnull",
    "nobs",
    "n_rows",
    "has_constant",
    "intercept",
    "converged",
    "n_iter",
    "method",
    "l2",
    "dep_name",
    "message",
    "n_missing",
    "fitted_at",
    "cov_type",
    "weights_type",
    "n_clusters",
    "cluster_correction",
)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def save(
    res: MNLogitResults, path: str, *, overwrite: bool = False, storage_options: dict[str, Any] | None = None
) -> None:
    """Write ``res`` to the directory ``path`` (created).

    Parameters
    ----------
    res : MNLogitResults
    path : str
        Local directory or fsspec URL.
    overwrite : bool
        Replace what is at ``path`` (a result, or anything else); without it an existing ``path`` is refused.
    storage_options : dict, optional
        fsspec options.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is false.
    """
    from dmlr import __version__
    from dmlr.options import check_output

    check_output(path, overwrite, storage_options, "result")
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    root = root.rstrip("/")
    if fs.exists(f"{root}/COMPLETE"):
        fs.rm(f"{root}/COMPLETE")
    fs.makedirs(root, exist_ok=True)
    doc: dict[str, Any] = {name: _plain(getattr(res, name)) for name in _SCALARS}
    doc.update(
        format_version=FORMAT_VERSION,
        dmlr_version=__version__,
        feature_names=list(res.feature_names),
        classes=np.asarray(res.classes).tolist(),
        base=_plain(res.base),
        has_covariance=res.covariance is not None,
        data_info=res.data_info,
        dropped_features=list(res.dropped_features),
        input_features=list(res.input_features),
        run=uuid.uuid4().hex,
    )
    files = {"coef.npy": _npy(res.coef)}
    if res.covariance is not None:
        files["covariance.npy"] = _npy(res.covariance)
    elif fs.exists(f"{root}/covariance.npy"):
        fs.rm(f"{root}/covariance.npy")
    if res.formula is not None:
        files["formula.json"] = json.dumps(res.formula.to_json(), indent=2).encode()
    for stale in ("formula.json", LEGACY_PICKLE):  # an earlier result's, overwritten
        if stale not in files and fs.exists(f"{root}/{stale}"):
            fs.rm(f"{root}/{stale}")
    if res.refit is not None:
        files["refit.npz"], doc["refit"] = res.refit.to_files()
    elif fs.exists(f"{root}/refit.npz"):
        fs.rm(f"{root}/refit.npz")
    files["history.jsonl"] = "".join(json.dumps(r) + "\n" for r in res.history).encode()
    files["summary.txt"] = (str(res.summary()) + "\n").encode()
    files["result.json"] = json.dumps(doc, indent=2).encode()
    for name, data in files.items():
        _write(fs, f"{root}/{name}", data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    _write(fs, f"{root}/{MANIFEST}", json.dumps({"sha256": digests}, indent=2, sort_keys=True).encode())
    _write(fs, f"{root}/COMPLETE", doc["run"].encode())


def load(
    path: str, *, storage_options: dict[str, Any] | None = None, allow_legacy_pickle: bool = False
) -> MNLogitResults:
    """Read a result directory written by :func:`save` (or ``dmlr fit --out``).

    Parameters
    ----------
    path : str
        Local directory or fsspec URL.
    storage_options : dict, optional
        fsspec options.
    allow_legacy_pickle : bool
        Read a formula fit saved by dmlr before result format 2, whose encoding is a pickle (``formula.pkl``),
        which runs code when loaded: only for results whose origin you trust. Saving the loaded result again
        converts it to the data-only format.

    Raises
    ------
    StoreError
        No complete result at ``path``; a file that is missing, not in the result's manifest, or does not match
        its SHA-256 digest there (named; checked before anything in it is used); a legacy pickled formula without
        ``allow_legacy_pickle``.
    """
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    root = root.rstrip("/")
    if not fs.exists(f"{root}/COMPLETE"):
        if fs.exists(f"{root}/zarr.json"):
            raise StoreError(
                f"{path} is a Zarr store, not a fitted result: `dmlr info {path}` describes it, "
                f"`dmlr fit {path} --out RESULT` fits it"
            )
        raise StoreError(f"no complete dmlr result at {path} (missing, or its writing did not finish)")
    read = _Reader(fs, root, path)
    doc = json.loads(read("result.json"))
    if doc.get("format_version") not in (1, FORMAT_VERSION):
        raise StoreError(f"{path} has result format {doc.get('format_version')}, this dmlr reads {FORMAT_VERSION}")
    coef = _array(read, "coef.npy")
    cov = _array(read, "covariance.npy") if doc["has_covariance"] else None
    formula = None
    if fs.exists(f"{root}/{LEGACY_PICKLE}"):
        if doc["format_version"] != 1:
            raise StoreError(f"{path}: {LEGACY_PICKLE} is no file of a format-{FORMAT_VERSION} result; refusing it")
        formula = _legacy_formula(read, path, allow_legacy_pickle)
    elif fs.exists(f"{root}/formula.json"):
        from dmlr.formula import FormulaEncoding

        try:
            formula = FormulaEncoding.from_json(json.loads(read("formula.json")))
        except StoreError as exc:
            raise StoreError(f"{path}: {exc}") from None
        except Exception as exc:  # any malformed content, formulaic's parse errors included, is named
            raise StoreError(f"{path}: formula.json is not a formula encoding ({type(exc).__name__}: {exc})") from None
    history = [json.loads(line) for line in read("history.jsonl").decode().splitlines() if line]
    refit = None
    if doc.get("refit") is not None:
        from dmlr.results.refit import RefitRecord

        refit = RefitRecord.from_files(read("refit.npz"), doc["refit"], path)
    return MNLogitResults(
        coef=coef,
        covariance=cov,
        feature_names=tuple(doc["feature_names"]),
        classes=np.asarray(doc["classes"]),
        base=doc["base"],
        history=history,
        data_info=doc["data_info"],
        dropped_features=tuple(doc.get("dropped_features", [])),
        input_features=tuple(doc.get("input_features", [])),
        formula=formula,
        refit=refit,
        **{name: doc[name] for name in _SCALARS if name in doc},
    )


def _array(read: _Reader, name: str) -> np.ndarray[Any, Any]:
    """One ``.npy`` file of the result, read without unpickling (an object array is refused, named)."""
    try:
        array: np.ndarray[Any, Any] = np.load(io.BytesIO(read(name)), allow_pickle=False)
    except ValueError as exc:
        raise StoreError(f"{read.path}: {name} is not a plain numeric array ({exc}); refusing to load it") from None
    if array.dtype.kind not in "biuf":
        raise StoreError(f"{read.path}: {name} holds {array.dtype} values, not numbers; refusing to load it")
    return array


def _legacy_formula(read: _Reader, path: str, allowed: bool) -> Any:
    """A format-1 result's pickled formula encoding, converted to data (only when ``allowed``)."""
    if not allowed:
        raise StoreError(
            f"{path} was saved by an earlier dmlr with its formula pickled ({LEGACY_PICKLE}), which can run code "
            "when loaded, so it is refused. Refit the formula, or, if you trust where the result came from, load it "
            "with dmlr.load(path, allow_legacy_pickle=True) and dmlr.save it again to convert it to data"
        )
    import pickle

    from dmlr.formula import FormulaEncoding

    old = pickle.loads(read(LEGACY_PICKLE))  # checked against the manifest first, when the result has one
    fields = vars(old)
    return FormulaEncoding.from_spec(fields["formula"], fields["spec"], fields["variables"], fields["levels"])


class _Reader:
    """Reads a result's files, each checked against the manifest's SHA-256 digest when the result has one
    (results written before the manifest have none and are read as they are)."""

    def __init__(self, fs: Any, root: str, path: str) -> None:
        self.fs, self.root, self.path = fs, root, path
        manifest = f"{root}/{MANIFEST}"
        self.digests: dict[str, str] | None = None
        if fs.exists(manifest):
            self.digests = dict(json.loads(fs.cat_file(manifest))["sha256"])
            for name in sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)):
                if name not in self.digests and name not in (MANIFEST, "COMPLETE"):
                    raise StoreError(f"{path}: {name} is not in the result's manifest (added after it was written)")

    def __call__(self, name: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(f"{self.root}/{name}")
        except FileNotFoundError:
            raise StoreError(f"{self.path}: {name} is missing (the result was changed after it was written)") from None
        if self.digests is not None:
            expected = self.digests.get(name)
            if expected is None:
                raise StoreError(f"{self.path}: {name} is not in the result's manifest (added after it was written)")
            if hashlib.sha256(data).hexdigest() != expected:
                raise StoreError(
                    f"{self.path}: {name} does not match the SHA-256 digest in the result's manifest (edited or "
                    "truncated after it was written); refusing to load it"
                )
        return data


def _npy(array: np.ndarray[Any, Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _write(fs: Any, path: str, data: bytes) -> None:
    with fs.open(path, "wb") as fh:
        fh.write(data)
