"""The per-partition oracle against independent references: finite differences and the dense Kronecker sum."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmlr.oracle.kernels import partition_statistics
from dmlr.oracle.probabilities import softmax
from dmlr.oracle.statistics import Request, Statistics

ALL = Request(information=True, gram=True, moments=True)


def _inputs(seed: int, n: int, p: int, k: int, weighted: bool, with_offset: bool, intercept: bool):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p))
    y = rng.integers(0, k, size=n).astype(np.int32)
    v = rng.uniform(0.2, 3.0, size=n) if weighted else None
    o = rng.normal(size=(n, k - 1)) if with_offset else None
    coef = rng.normal(scale=0.7, size=(p + intercept, k - 1))
    return x, y, v, o, coef


def _design(x: np.ndarray, intercept: bool) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), x]) if intercept else x


def dense_information(x, v, o, coef, intercept):
    """Reference: sum_i v_i (Lambda_p - p p^T) kron x_i x_i^T, one row at a time with np.kron."""
    xa = _design(x, intercept)
    eta = xa @ coef + (0 if o is None else o)
    ex = np.exp(np.column_stack([np.zeros(len(x)), eta]))
    prob = (ex / ex.sum(axis=1, keepdims=True))[:, 1:]
    m, d = coef.shape[1], coef.shape[0]
    total = np.zeros((m * d, m * d))
    for i in range(len(x)):
        wi = 1.0 if v is None else v[i]
        total += wi * np.kron(np.diag(prob[i]) - np.outer(prob[i], prob[i]), np.outer(xa[i], xa[i]))
    return total


def dense_loglik(x, y, v, o, coef, intercept):
    """Reference log-likelihood written directly from the definition."""
    xa = _design(x, intercept)
    eta = np.column_stack([np.zeros(len(x)), xa @ coef + (0 if o is None else o)])
    ll = eta[np.arange(len(x)), y] - np.log(np.exp(eta).sum(axis=1))
    return float(ll.sum() if v is None else v @ ll)


CASES = [
    # (k, weighted, offset, intercept)
    (2, False, False, True),
    (3, True, True, True),
    (4, True, False, False),
    (5, False, True, True),
]


@pytest.mark.parametrize(("k", "weighted", "with_offset", "intercept"), CASES)
@pytest.mark.parametrize("block_bytes", [8 * 7 * 40, 2**24])  # many small row blocks / one block
def test_information_equals_dense_kronecker_sum(k, weighted, with_offset, intercept, block_bytes):
    x, y, v, o, coef = _inputs(k, 57, 3, k, weighted, with_offset, intercept)
    stats = partition_statistics(x, y, v, o, coef, intercept=intercept, request=ALL, block_bytes=block_bytes)
    ref = dense_information(x, v, o, coef, intercept)
    got = stats.full_information()
    assert np.max(np.abs(got - ref)) <= 1e-12 * np.max(np.abs(ref))
    assert np.array_equal(got, got.T)
    assert np.linalg.eigvalsh(got).min() > 0


@pytest.mark.parametrize(("k", "weighted", "with_offset", "intercept"), CASES)
def test_loglik_matches_definition_and_gram(k, weighted, with_offset, intercept):
    x, y, v, o, coef = _inputs(10 + k, 80, 4, k, weighted, with_offset, intercept)
    stats = partition_statistics(x, y, v, o, coef, intercept=intercept, request=ALL)
    assert stats.loglik == pytest.approx(dense_loglik(x, y, v, o, coef, intercept), rel=1e-13)
    xa = _design(x, intercept)
    vv = np.ones(len(x)) if v is None else v
    np.testing.assert_allclose(stats.full_gram(), xa.T @ (vv[:, None] * xa), rtol=1e-13)
    gram_only = partition_statistics(x, y, v, o, coef, intercept=intercept, request=Request(gram=True))
    np.testing.assert_allclose(gram_only.full_gram(), xa.T @ (vv[:, None] * xa), rtol=1e-13)  # without the info
    np.testing.assert_allclose(stats.col_sum, vv @ xa, rtol=1e-12)
    np.testing.assert_allclose(stats.class_weights, np.bincount(y, weights=vv, minlength=k))
    assert stats.n_rows == len(x)
    assert stats.weight_sum == pytest.approx(vv.sum())


@pytest.mark.parametrize(("k", "weighted", "with_offset", "intercept"), CASES)
def test_score_and_information_match_central_differences(k, weighted, with_offset, intercept):
    x, y, v, o, coef = _inputs(20 + k, 60, 3, k, weighted, with_offset, intercept)
    d, m = coef.shape
    theta = coef.ravel(order="F")
    h = 1e-5

    def stats_at(t: np.ndarray) -> Statistics:
        w = t.reshape(m, d).T
        return partition_statistics(x, y, v, o, w, intercept=intercept, request=Request())

    base = partition_statistics(x, y, v, o, coef, intercept=intercept, request=Request(information=True))
    eye = np.eye(m * d)
    # score: central differences of the log-likelihood
    fd_score = np.array([(stats_at(theta + h * e).loglik - stats_at(theta - h * e).loglik) / (2 * h) for e in eye])
    score = base.score.ravel(order="F")
    assert np.max(np.abs(fd_score - score)) < 1e-6 * np.max(np.abs(score))
    # information: minus central differences of the score
    fd_info = -np.column_stack(
        [(stats_at(theta + h * e).score - stats_at(theta - h * e).score).ravel(order="F") / (2 * h) for e in eye]
    )
    info = base.full_information()
    assert np.max(np.abs(fd_info - info)) < 1e-6 * np.max(np.abs(info))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(0, 40), min_size=0, max_size=4),
    k=st.integers(2, 5),
)
def test_statistics_are_additive_over_any_row_split(seed, cuts, k):
    """Summing the records of any split of the rows (empty parts included) gives the record of all rows."""
    x, y, v, o, coef = _inputs(seed, 40, 3, k, True, True, True)
    bounds = [0, *sorted(cuts), 40]
    parts = [
        partition_statistics(x[a:b], y[a:b], v[a:b], o[a:b], coef, intercept=True, request=ALL, partition=i)
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]
    whole = partition_statistics(x, y, v, o, coef, intercept=True, request=ALL)
    total = Statistics.sum(parts)
    assert total.n_rows == whole.n_rows
    assert total.loglik == pytest.approx(whole.loglik, rel=1e-12)
    np.testing.assert_allclose(total.score, whole.score, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(total.full_information(), whole.full_information(), atol=1e-12)


def test_probabilities_are_stable_for_huge_logits():
    """The one softmax, class-major as the passes call it (rows are observations here, transposed for it)."""
    eta = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [800.0, 800.0, 799.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        prob, lse = softmax(np.ascontiguousarray(eta.T))
    full = np.column_stack([np.exp(-lse), prob.T])
    assert np.all(np.isfinite(full)) and np.all(np.isfinite(lse))
    np.testing.assert_allclose(full.sum(axis=1), 1.0, atol=1e-12)
    assert lse[0] == pytest.approx(1e4)
    assert full[1, 0] == pytest.approx(1.0)
