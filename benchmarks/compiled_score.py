"""Does a compiled score kernel pay? A fused numba loop (linear predictor, softmax, residual and the score's outer
product in one sweep over each row, X read once) against dmlr's NumPy kernel (two skinny GEMMs per row block), one
core, best of 5, on P1-, P2-, narrow and wide shapes. Both must agree (1e-8) before they are timed.

numba is not a dependency of dmlr (this measurement is why): ``.venv/bin/pip install numba`` first, then
``.venv/bin/python benchmarks/compiled_score.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from dmlr.oracle.kernels import partition_statistics
from dmlr.oracle.statistics import SCORE_ONLY


@numba.njit(cache=False, fastmath=True)
def fused(x, codes, coef):
    """Log-likelihood and score (d, m) of the rows, one sweep per row."""
    n, p = x.shape
    m = coef.shape[1]
    w = coef[1:]
    score = np.zeros((p + 1, m))
    eta = np.empty(m)
    ll = 0.0
    for i in range(n):
        for k in range(m):
            eta[k] = coef[0, k]
        for j in range(p):
            xij = x[i, j]
            for k in range(m):
                eta[k] += xij * w[j, k]
        shift = 0.0
        for k in range(m):
            shift = max(shift, eta[k])
        denom = np.exp(-shift)
        for k in range(m):
            eta[k] = np.exp(eta[k] - shift)
            denom += eta[k]
        y = codes[i]
        ll += np.log(eta[y - 1] / denom) if y > 0 else -(np.log(denom) + shift)
        for k in range(m):
            eta[k] = -eta[k] / denom
        if y > 0:
            eta[y - 1] += 1.0
        for k in range(m):
            score[0, k] += eta[k]
        for j in range(p):
            xij = x[i, j]
            for k in range(m):
                score[j + 1, k] += eta[k] * xij
    return ll, score


def best(f: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    print("| n x p, K | NumPy score kernel (s) | numba fused (s) | numba / NumPy |")
    print("|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for n, p, k in ((100_000, 49, 6), (50_000, 99, 20), (100_000, 9, 3), (20_000, 999, 8)):
        x = rng.normal(size=(n, p))
        codes = rng.integers(0, k, n).astype(np.int32)
        coef = rng.normal(scale=0.1, size=(p + 1, k - 1))

        def numpy_kernel(x=x, codes=codes, coef=coef):
            return partition_statistics(x, codes, None, None, coef, intercept=True, request=SCORE_ONLY)

        with threadpool_limits(1, "blas"):
            ref = numpy_kernel()
            ll, score = fused(x, codes, coef)  # compiled here, before timing
            assert abs(ll - ref.loglik) < 1e-8 * abs(ref.loglik)
            np.testing.assert_allclose(score, ref.score, rtol=1e-8, atol=1e-8)
            a = best(numpy_kernel)
            b = best(lambda x=x, codes=codes, coef=coef: fused(x, codes, coef))
        print(f"| {n:,} x {p}, {k} | {a:.4f} | {b:.4f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
