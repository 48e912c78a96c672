"""Hypothesis tests on a fitted model: Wald tests of linear restrictions and likelihood-ratio tests of nested fits.

Restrictions are ``R theta = q`` on the class-major parameter vector ``theta = vec(params)`` (the order of
``cov_params()``), given as a matrix or as text: ``"car:age = train:age, train:income = 0"`` (``class:feature``
terms, each side a sum of terms with optional numeric factors, ``2*car:age``; labels and names holding ``+``, ``-``
or ``*`` need the matrix form). Statistics follow statsmodels'
``wald_test`` (chi-squared, ``use_f=False``) and ``t_test`` (normal), using the fit's covariance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from dmlr.errors import InputError

if TYPE_CHECKING:
    from dmlr.results.results import MNLogitResults

__all__ = ["ChiSquareTest", "lr_test", "restriction_matrix", "t_test", "test_features", "wald_test"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class ChiSquareTest:
    """A chi-squared test.

    Attributes
    ----------
    statistic : float
        The chi-squared statistic.
    df : int
        Degrees of freedom (number of independent restrictions).
    pvalue : float
    kind : str
        ``"Wald"`` or ``"likelihood ratio"``.
    hypothesis : str
        What is tested, in words.
    """

    statistic: float
    df: int
    pvalue: float
    kind: str
    hypothesis: str

    def summary(self) -> str:
        """One line: the test, the hypothesis, chi2(df), the p-value."""
        return f"{self.kind} test of {self.hypothesis}: chi2({self.df}) = {self.statistic:.4f}, p = {self.pvalue:.4g}"

    def __str__(self) -> str:
        return self.summary()


def _side(text: str, index: dict[str, int], row: Array) -> float:
    """Add one side's terms (``[sign] [number *] class:feature`` or a number) to ``row``; return its constant."""
    constant = 0.0
    for sign, term in re.findall(r"([+-]?)\s*([^+-]+)", text):
        term = term.strip()
        factor = -1.0 if sign == "-" else 1.0
        if "*" in term:
            number, term = (t.strip() for t in term.split("*", 1))
            factor *= _number(number, term)
        if term in index:
            row[index[term]] += factor
            continue
        try:
            constant += factor * float(term)
        except ValueError:
            raise InputError(
                f"{term!r} is not a parameter: write class:feature with a non-base class and a model column "
                f"(e.g. {next(iter(index))!r}), a number, or number*class:feature"
            ) from None
    return constant


def _number(text: str, term: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{text!r} before {term!r} is not a number") from None


def restriction_matrix(res: MNLogitResults, constraints: str) -> tuple[Array, Array]:
    """``R`` and ``q`` from text like ``"car:age = train:age, train:income = 0"``.

    Returns
    -------
    R : ndarray, shape (r, m d)
    q : ndarray, shape (r,)

    Raises
    ------
    InputError
        A term that names no parameter (an unknown class or feature), a restriction without ``=``.
    """
    names = [f"{c}:{f}" for c in res.non_base_classes.tolist() for f in res.feature_names]
    index = {n: j for j, n in enumerate(names)}
    rows, q = [], []
    for part in (p for p in constraints.split(",") if p.strip()):
        if part.count("=") != 1:
            raise InputError(f"restriction {part.strip()!r} needs one '=' (e.g. 'car:age = train:age')")
        lhs, rhs = part.split("=")
        left, right = np.zeros(len(names)), np.zeros(len(names))
        c_left, c_right = _side(lhs, index, left), _side(rhs, index, right)
        rows.append(left - right)
        q.append(c_right - c_left)
    if not rows:
        raise InputError("no restriction given")
    return np.array(rows), np.array(q)


def _restrictions(res: MNLogitResults, r: Any, q: Any) -> tuple[Array, Array]:
    if isinstance(r, str):
        if q is not None:
            raise InputError("q is given inside the text of the restrictions")
        return restriction_matrix(res, r)
    R = np.atleast_2d(np.asarray(r, dtype=np.float64))
    if R.shape[1] != res.n_params:
        raise InputError(f"R must have {res.n_params} columns (one per parameter, class-major); got {R.shape}")
    qv = np.zeros(R.shape[0]) if q is None else np.atleast_1d(np.asarray(q, dtype=np.float64))
    if qv.shape != (R.shape[0],):
        raise InputError(f"q must have {R.shape[0]} entries (one per restriction); got {qv.shape}")
    return R, qv


def wald_test(res: MNLogitResults, r: Any, q: Any = None, hypothesis: str | None = None) -> ChiSquareTest:
    """Joint Wald test of ``R theta = q``: ``(R theta - q)' (R V R')^-1 (R theta - q) ~ chi2(rank R)``.

    Parameters
    ----------
    res : MNLogitResults
    r : str or array-like, shape (r, m d)
        Text restrictions or the matrix ``R`` (class-major columns, the order of ``cov_params()``).
    q : array-like, shape (r,), optional
        Right-hand side for a matrix ``R`` (default zeros).

    Raises
    ------
    InputError
        Linearly dependent restrictions (a rank-deficient ``R``), or the errors of :func:`restriction_matrix`.
    """
    R, qv = _restrictions(res, r, q)
    rank = int(np.linalg.matrix_rank(R))
    if rank < R.shape[0]:
        raise InputError(f"the {R.shape[0]} restrictions are linearly dependent (rank {rank}); remove the redundant")
    theta = res.coef.ravel(order="F")
    diff = R @ theta - qv
    middle = R @ res.cov_params().to_numpy() @ R.T
    statistic = float(diff @ np.linalg.solve(middle, diff))
    text = hypothesis or (r if isinstance(r, str) else f"{R.shape[0]} linear restrictions")
    return ChiSquareTest(statistic, rank, float(scipy.stats.chi2.sf(statistic, rank)), "Wald", text)


def t_test(res: MNLogitResults, r: Any, q: Any = None, alpha: float = 0.05) -> pd.DataFrame:
    """Each restriction on its own: estimate of ``R theta - q``, its standard error, z, p-value and interval.

    Returns
    -------
    pandas.DataFrame, one row per restriction
        Columns ``estimate``, ``std err``, ``z``, ``P>|z|``, ``lower``, ``upper`` (statsmodels' ``t_test`` with
        normal quantiles).
    """
    R, qv = _restrictions(res, r, q)
    theta = res.coef.ravel(order="F")
    estimate = R @ theta - qv
    se = np.sqrt(np.einsum("ij,jk,ik->i", R, res.cov_params().to_numpy(), R))
    z = estimate / se
    half = scipy.stats.norm.ppf(1 - alpha / 2) * se
    labels = [p.strip() for p in r.split(",") if p.strip()] if isinstance(r, str) else list(range(len(qv)))
    return pd.DataFrame(
        {
            "estimate": estimate,
            "std err": se,
            "z": z,
            "P>|z|": 2 * scipy.stats.norm.sf(np.abs(z)),
            "lower": estimate - half,
            "upper": estimate + half,
        },
        index=labels,
    )


def test_features(res: MNLogitResults, features: Sequence[str]) -> ChiSquareTest:
    """The joint Wald test that ``features`` have zero coefficients in every equation (Stata's ``test a b``
    after ``mlogit``, ``testparm i.carrier`` for a factor): ``columns * (K - 1)`` restrictions.

    A name is a model column, or a categorical variable: every column of its levels (``carrier`` stands for
    ``carrier[T.AS]``, ``carrier[T.B6]``, ... and, in formula fits, ``C(carrier)[T.AS]``, ...).

    Raises
    ------
    InputError
        A name that is neither (the closest model columns and variables are suggested).
    """
    features = expand_features(res.feature_names, features)
    names = list(res.feature_names)
    d, m = res.coef.shape
    R = np.zeros((len(features) * m, d * m))
    for i, (k, f) in enumerate((k, f) for f in features for k in range(m)):
        R[i, k * d + names.index(f)] = 1.0
    return wald_test(res, R, hypothesis=f"{', '.join(features)} = 0 in every equation")


def _variable(column: str) -> str | None:
    """The categorical variable a dummy column belongs to (``carrier[T.AS]``, ``C(carrier)[T.AS]``,
    ``C(carrier, Sum)[S.AS]``: ``carrier``), or None."""
    import re

    match = re.fullmatch(r"(?:C\(\s*([^,)]+?)\s*(?:,.*)?\)|([^\[(]+))\[[^\]]+\]", column)
    if match is None:
        return None
    return (match.group(1) or match.group(2)).strip()


def expand_features(columns: Sequence[str], features: Sequence[str]) -> list[str]:
    """``features`` with every categorical variable's name replaced by its columns (in model order).

    Raises
    ------
    InputError
        No names, or a name that is neither a column nor a variable (the closest ones suggested).
    """
    import difflib

    columns = list(columns)
    variables: dict[str, list[str]] = {}
    for column in columns:
        variable = _variable(column)
        if variable is not None:
            variables.setdefault(variable, []).append(column)
    out: list[str] = []
    for name in features:
        if name in columns:
            out.append(name)
        elif name in variables:
            out += variables[name]
        else:
            known = [*columns, *variables]
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(
                f"{name!r} is neither a model column nor a categorical variable of the model{hint} (columns: "
                f"{columns[:12]}{' ...' if len(columns) > 12 else ''})"
            )
    if not out:
        raise InputError(f"no features to test; the model columns are {columns}")
    return list(dict.fromkeys(out))


def lr_test(restricted: MNLogitResults, full: MNLogitResults) -> ChiSquareTest:
    """Likelihood-ratio test of a restricted fit against a fuller one on the same rows: ``2 (llf_full - llf_r)``
    on ``n_params_full - n_params_restricted`` degrees of freedom.

    Raises
    ------
    InputError
        Different rows or weights (``nobs``, ``n_rows``), different classes, a restricted model that is not
        smaller, a restricted model's columns that the full one lacks, a penalized fit, or probability weights.
    """
    if restricted.nobs != full.nobs or restricted.n_rows != full.n_rows:
        raise InputError(
            f"the fits are of different data (nobs {restricted.nobs:g} vs {full.nobs:g}, rows {restricted.n_rows} "
            f"vs {full.n_rows}): a likelihood-ratio test needs the same rows and weights"
        )
    if list(restricted.classes) != list(full.classes):
        raise InputError("the fits have different classes")
    missing = [f for f in restricted.feature_names if f not in full.feature_names]
    if missing and all(f in restricted.feature_names for f in full.feature_names):
        raise InputError(
            f"the arguments look swapped: {full.n_params} parameters in the second fit, {restricted.n_params} in the "
            "first; lr_test(restricted, full) takes the smaller model first"
        )
    if missing or restricted.n_params >= full.n_params:
        raise InputError(
            f"the restricted fit is not nested in the full one (columns {missing} not in the full fit, or "
            f"{restricted.n_params} >= {full.n_params} parameters)"
        )
    if "probability" in (restricted.weights_type, full.weights_type):
        raise InputError(
            "likelihood-ratio tests are not valid with probability weights (the pseudo-log-likelihood's ratio is not "
            "chi-squared); use a Wald test, res.test_features(...), under the robust covariance"
        )
    if restricted.l2 > 0 or full.l2 > 0:
        raise InputError("likelihood-ratio tests need unpenalized fits (l2 = 0)")
    df = full.n_params - restricted.n_params
    statistic = 2.0 * (full.llf - restricted.llf)
    dropped = [f for f in full.feature_names if f not in restricted.feature_names]
    return ChiSquareTest(
        statistic, df, float(scipy.stats.chi2.sf(statistic, df)), "likelihood ratio",
        f"{', '.join(dropped)} = 0 in every equation",
    )  # fmt: skip
