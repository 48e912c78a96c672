"""Synthetic multinomial-logit data with known coefficients (demo, tests, benchmarks).

Features are standard Gaussian; true coefficients are drawn ``N(0, 1/d)`` (``d`` counts the constant), base class
0; labels are drawn from the model's probabilities. The dask variant generates every partition independently from
its own seed, so data larger than memory never exists in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask.delayed import delayed
from numpy.typing import NDArray

from dmlr.oracle.probabilities import linear_predictor, log_probabilities

__all__ = ["SyntheticProblem", "draw_labels", "make_mnlogit"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class SyntheticProblem:
    """A generated data set and the coefficients it was drawn from.

    Attributes
    ----------
    X : ndarray or dask.array.Array, shape (n, p)
    y : ndarray or dask.array.Array of int64, shape (n,)
        Labels ``0..K-1``; 0 is the base.
    coef : ndarray, shape (p + 1, K - 1)
        True coefficients, row 0 the intercept.
    """

    X: Array | da.Array
    y: NDArray[np.int64] | da.Array
    coef: Array


def draw_labels(x: Array, coef: Array, rng: np.random.Generator) -> NDArray[np.int64]:
    """Labels drawn from the model: ``x`` (r, p), ``coef`` (p + 1, m) with the intercept in row 0; 0 is the base."""
    prob, lse = log_probabilities(linear_predictor(x, coef, intercept=True))
    cdf = np.cumsum(np.column_stack([np.exp(-lse), prob]), axis=1)
    u = rng.random(size=(int(x.shape[0]),))
    return np.minimum((u[:, None] > cdf).sum(axis=1), coef.shape[1]).astype(np.int64)


def _block(seed: int, rows: int, p: int, coef: Array) -> tuple[Array, NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, p))
    return x, draw_labels(x, coef, rng)


def make_mnlogit(
    n: int,
    p: int,
    n_classes: int,
    *,
    seed: int = 0,
    chunk_rows: int | None = None,
    coef_scale: float | None = None,
) -> SyntheticProblem:
    """Draw a multinomial-logit data set.

    Parameters
    ----------
    n, p : int
        Rows and feature columns (without the constant).
    n_classes : int
        ``K >= 2``.
    seed : int
        Seed of all randomness.
    chunk_rows : int, optional
        When given, return dask arrays with this many rows per partition, generated lazily per partition.
    coef_scale : float, optional
        Standard deviation of the true coefficients; default ``1 / sqrt(p + 1)``.

    Returns
    -------
    SyntheticProblem
    """
    ss = np.random.SeedSequence(seed)
    coef_seed, data_seed = ss.spawn(2)
    scale = coef_scale if coef_scale is not None else 1.0 / np.sqrt(p + 1)
    coef = np.random.default_rng(coef_seed).normal(0.0, scale, size=(p + 1, n_classes - 1))
    if chunk_rows is None:
        x, y = _block(int(data_seed.generate_state(1)[0]), n, p, coef)
        return SyntheticProblem(x, y, coef)
    sizes = [min(chunk_rows, n - s) for s in range(0, n, chunk_rows)]
    seeds = [int(s.generate_state(1)[0]) for s in data_seed.spawn(len(sizes))]
    x_parts, y_parts = [], []
    for seed_i, rows in zip(seeds, sizes, strict=True):
        xy = delayed(_block, nout=2, pure=True)(seed_i, rows, p, coef)
        x_parts.append(da.from_delayed(xy[0], shape=(rows, p), dtype=np.float64))
        y_parts.append(da.from_delayed(xy[1], shape=(rows,), dtype=np.int64))
    return SyntheticProblem(da.concatenate(x_parts), da.concatenate(y_parts), coef)
