"""The fitted model: coefficients, covariance, fit statistics, summary and prediction.

Names follow statsmodels' ``MNLogitResults`` so users can switch without relearning: ``params``, ``bse``,
``tvalues``, ``pvalues``, ``conf_int()``, ``cov_params()``, ``llf``, ``llnull``, ``llr``, ``llr_pvalue``,
``prsquared``, ``aic``, ``bic``, ``nobs``, ``df_model``, ``df_resid``. Coefficient layout: ``params`` is a
``d x m`` DataFrame (rows: model columns, ``const`` first when fitted; columns: non-base class labels in sorted
order); the flat order of ``cov_params()`` is class-major, ``theta = vec(params)``.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import scipy.stats
from numpy.typing import NDArray

from dmlr.errors import InferenceUnavailableError, InputError
from dmlr.options import check_missing
from dmlr.results import hypothesis
from dmlr.results.encoding import encode_frame, feature_matrix
from dmlr.results.hypothesis import ChiSquareTest
from dmlr.results.post import PostEstimation
from dmlr.results.prediction import predict_labels, predict_proba
from dmlr.results.summary import Summary, render_summary

__all__ = ["MNLogitResults"]

Array = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class MNLogitResults(PostEstimation):
    """Results of a multinomial logit fit.

    Attributes
    ----------
    coef : ndarray, shape (d, m)
        Coefficients (see module docstring for the layout).
    covariance : ndarray, shape (m d, m d) or None
        ``I(theta_hat)^{-1}`` (with the ridge term when ``l2 > 0``); ``None`` when ``inference=False``.
    feature_names : tuple of str, length d
    classes : ndarray, shape (K,)
        All class labels, sorted.
    base : object
        Reference class.
    intercept : bool
        Whether ``const`` was added by dmlr (model column 0, not part of the input data).
    llf, llnull : float
        Log-likelihood at the optimum and of the intercept-only model.
    nobs : float
        Number of observations (sum of frequency weights).
    n_rows : int
        Number of data rows.
    has_constant : bool
        Whether the model contains a constant column (added or given).
    converged : bool
    n_iter : int
    method : str
        Step rule(s) used.
    history : list of dict
        One record per iteration: ``iteration``, ``kind``, ``loglik``, ``objective``, ``max_abs_score``,
        ``step_size``, ``seconds``, ``passes`` (cumulative data passes).
    l2 : float
    dep_name : str
        Name of the dependent variable, used in the summary.
    message : str
        Why the optimizer stopped.
    data_info : dict, optional
        For fits of a store: its URL, checksum, target column and feature encoding (used to encode new tables).
    dropped_features : tuple of str
        Dependent columns removed by ``collinear="drop"``; prediction data may still carry them (ignored).
    input_features : tuple of str
        With dropped columns: the data columns as given to the fit, in order (to select from arrays that still
        have them).
    n_missing : int
        Rows dropped for a missing value (``missing="drop"``); ``nobs`` counts the rows fitted.
    cov_type : str
        ``"nonrobust"``, ``"HC0"``, ``"HC1"`` or ``"cluster"``: what ``covariance`` is (see :func:`dmlr.fit`).
    weights_type : str
        ``"frequency"`` or ``"probability"`` (then ``llf`` is a pseudo-log-likelihood and ``nobs`` counts rows).
    n_clusters : int, optional
        ``G`` for ``cov_type="cluster"``.
    cluster_correction : str, optional
        ``"statsmodels"`` or ``"stata"`` for ``cov_type="cluster"``.
    fitted_at : str
        When the fit ended (ISO 8601, UTC); the summary's Date and Time.
    formula : FormulaEncoding, optional
        For :func:`dmlr.fit_formula` fits: the formula and its encoding state, re-applied to new data.
    fitted_data : array-like, optional
        For fits of in-memory data: the data columns fitted (after the missing-value policy), so that
        ``get_margeff()`` and ``get_prediction()`` without data use them, as statsmodels does. Not saved and not
        pickled: a loaded result of a store fit reopens its store instead. A formula fit's are its raw rows.
    fitted_labels : array-like, optional
        The class labels of those rows (``pred_table()``); same life as :attr:`fitted_data`.
    refit : RefitRecord, optional
        For fits of a store with the exact information at the optimum: what a refit after rows were appended needs
        to read only the new rows before its first step (:mod:`dmlr.results.refit`; ``start_params=`` of
        :func:`dmlr.fit`).
    """

    coef: Array
    covariance: Array | None
    feature_names: tuple[str, ...]
    classes: NDArray[Any]
    base: Any
    intercept: bool
    llf: float
    llnull: float
    nobs: float
    n_rows: int
    has_constant: bool
    converged: bool
    n_iter: int
    method: str
    history: list[dict[str, Any]] = field(default_factory=list)
    l2: float = 0.0
    dep_name: str = "y"
    message: str = ""
    data_info: dict[str, Any] | None = None
    dropped_features: tuple[str, ...] = ()
    input_features: tuple[str, ...] = ()
    n_missing: int = 0
    cov_type: str = "nonrobust"
    weights_type: str = "frequency"
    n_clusters: int | None = None
    cluster_correction: str | None = None
    fitted_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    formula: Any = None
    refit: Any = None
    fitted_data: Any = field(default=None, repr=False)
    fitted_labels: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without :attr:`fitted_data` and :attr:`fitted_labels` (a result shipped to workers does not carry
        the data)."""
        state = dict(self.__dict__)
        state.pop("fitted_data", None)
        state.pop("fitted_labels", None)
        return state

    # --- layout -------------------------------------------------------------------------------------------
    @property
    def non_base_classes(self) -> NDArray[Any]:
        """Labels of the coefficient columns, shape (m,)."""
        return self.classes[self.classes != self.base]

    @cached_property
    def _flat_index(self) -> pd.MultiIndex:
        return pd.MultiIndex.from_product(
            [list(self.non_base_classes), list(self.feature_names)], names=["class", "feature"]
        )

    def _table(self, values: Array) -> pd.DataFrame:
        return pd.DataFrame(values, index=list(self.feature_names), columns=list(self.non_base_classes))

    @property
    def params(self) -> pd.DataFrame:
        """Coefficients, DataFrame of shape (d, m)."""
        return self._table(self.coef)

    @property
    def n_passes(self) -> int:
        """Data passes made by the fit (inference pass included)."""
        return int(self.history[-1]["passes"]) if self.history else 0

    # --- inference ----------------------------------------------------------------------------------------
    @property
    def has_inference(self) -> bool:
        """Whether the covariance was computed."""
        return self.covariance is not None

    def _cov(self) -> Array:
        if self.covariance is None:
            raise InferenceUnavailableError(
                "standard errors are unavailable: the fit ran with inference=False, so the information "
                "at the optimum was never computed; refit with inference=True"
            )
        return self.covariance

    def cov_params(self) -> pd.DataFrame:
        """Covariance of the flat class-major parameters, DataFrame of shape (m d, m d)."""
        return pd.DataFrame(self._cov(), index=self._flat_index, columns=self._flat_index)

    @property
    def bse(self) -> pd.DataFrame:
        """Standard errors, DataFrame of shape (d, m)."""
        var = np.diag(self._cov()).reshape(-1, self.coef.shape[0]).T
        return self._table(np.sqrt(var))

    @property
    def tvalues(self) -> pd.DataFrame:
        """Wald z statistics ``params / bse``, shape (d, m)."""
        return self.params / self.bse

    @property
    def pvalues(self) -> pd.DataFrame:
        """Two-sided normal p-values of the z statistics, shape (d, m)."""
        z = self.tvalues.to_numpy()
        return self._table(2.0 * scipy.stats.norm.sf(np.abs(z)))

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald confidence intervals.

        Parameters
        ----------
        alpha : float
            Intervals have coverage ``1 - alpha``.

        Returns
        -------
        pandas.DataFrame, shape (m d, 2)
            Index ``(class, feature)`` in class-major order, columns ``lower``, ``upper``.
        """
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        q = scipy.stats.norm.ppf(1 - alpha / 2)
        theta = self.coef.ravel(order="F")
        se = self.bse.to_numpy().ravel(order="F")
        return pd.DataFrame({"lower": theta - q * se, "upper": theta + q * se}, index=self._flat_index)

    # --- fit statistics -----------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Number of coefficients ``m d``."""
        return int(self.coef.size)

    @property
    def df_model(self) -> float:
        """Model degrees of freedom: ``m (d - 1)`` with a constant, else ``m d``."""
        return float(self.coef.shape[1] * (self.coef.shape[0] - int(self.has_constant)))

    @property
    def df_resid(self) -> float:
        """Residual degrees of freedom ``nobs - m d``."""
        return float(self.nobs - self.n_params)

    @property
    def llr(self) -> float:
        """Likelihood-ratio statistic ``2 (llf - llnull)``."""
        return 2.0 * (self.llf - self.llnull)

    @property
    def llr_pvalue(self) -> float:
        """Chi-squared p-value of :attr:`llr` on :attr:`df_model` degrees of freedom."""
        return float(scipy.stats.chi2.sf(self.llr, self.df_model))

    @property
    def prsquared(self) -> float:
        """McFadden's pseudo-R² ``1 - llf / llnull``."""
        return 1.0 - self.llf / self.llnull

    @property
    def aic(self) -> float:
        """Akaike information criterion ``-2 llf + 2 m d``."""
        return -2.0 * self.llf + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """Bayesian information criterion ``-2 llf + m d log(nobs)``."""
        return -2.0 * self.llf + self.n_params * float(np.log(self.nobs))

    # --- hypothesis tests -------------------------------------------------------------------------------------
    def wald_test(self, r: Any, q: Any = None) -> ChiSquareTest:
        """Joint Wald test of linear restrictions ``R theta = q`` (see :func:`dmlr.results.hypothesis.wald_test`).

        Parameters
        ----------
        r : str or array-like, shape (r, m d)
            ``"car:age = train:age, train:income = 0"`` (``class:feature`` terms), or ``R`` with class-major
            columns (the order of :meth:`cov_params`).
        q : array-like, shape (r,), optional
            Right-hand side for a matrix ``R`` (default zeros).
        """
        return hypothesis.wald_test(self, r, q)

    def t_test(self, r: Any, q: Any = None, alpha: float = 0.05) -> pd.DataFrame:
        """Each restriction alone: estimate, standard error, z, p-value and interval, one row each."""
        return hypothesis.t_test(self, r, q, alpha)

    def test_features(self, features: Sequence[str]) -> ChiSquareTest:
        """Joint Wald test that ``features`` are zero in every equation (Stata's ``test a b`` after ``mlogit``)."""
        return hypothesis.test_features(self, features)

    def summary(self, alpha: float = 0.05) -> Summary:
        """Fit statistics and, per non-base class, coef, std err, z, p-value and interval.

        Returns
        -------
        Summary
            ``str()`` (and ``print``) give the text table; ``as_html()`` and ``as_markdown()`` the others.
        """
        return render_summary(self, alpha)

    def __repr__(self) -> str:
        return (
            f"<MNLogitResults: {self.coef.shape[1] + 1} classes, {self.coef.shape[0]} features, "
            f"nobs={self.nobs:g}, llf={self.llf:.6g}, converged={self.converged}, method={self.method}>"
        )

    # --- prediction ---------------------------------------------------------------------------------------
    @property
    def data_feature_names(self) -> tuple[str, ...]:
        """The columns prediction data must have (``const`` excluded when dmlr added it)."""
        return self.feature_names[1:] if self.intercept else self.feature_names

    def predict_proba(self, X: Any, offset: Any = None, *, missing: str = "raise", unseen: str = "raise") -> Any:
        """Probabilities of every class, columns in sorted label order (base included).

        Parameters
        ----------
        X : ndarray, dask.array.Array, pandas.DataFrame or dask.dataframe.DataFrame, shape (n, p)
            Arrays hold the model's data columns in order. DataFrames hold the raw columns the model was fitted
            from, encoded as the fit encoded them: a formula fit re-applies its formula, a fit of a staged store
            or of a DataFrame with ``category`` columns re-applies that encoding, others are matched by name.
        offset : array-like, shape (n, m), optional
        missing : {"raise", "drop"}
            DataFrame rows with a missing value in a column the model reads: an error naming it, or dropped
            (the result's index says which rows are left).
        unseen : {"raise", "nan"}
            DataFrame rows with a categorical level the fit never saw: an error naming it, or NaN probabilities.

        Returns
        -------
        ndarray, dask.array.Array, pandas.DataFrame or dask.dataframe.DataFrame, shape (n, K)
            Same kind as ``X``, lazy for dask input; DataFrames have one column per class label.
        """
        _check_row_options(missing, unseen)
        if isinstance(X, dd.DataFrame):
            if offset is not None:
                raise InputError("offset cannot be given with a dask DataFrame; predict a dask array instead")
            meta = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in self.classes.tolist()})
            return X.map_partitions(self.proba_frame, missing, unseen, meta=meta)
        if isinstance(X, pd.DataFrame):
            return self.proba_frame(X, missing, unseen, offset=offset)
        return self._proba(self.model_columns(X), offset)

    @property
    def code_to_sorted(self) -> NDArray[np.intp]:
        """``order`` such that ``coded[:, order]`` lists the classes in sorted label order (code order is the base
        first, then the other classes)."""
        codes_sorted = np.concatenate([[self.base], self.non_base_classes])
        return np.argsort(np.searchsorted(self.classes, codes_sorted))

    def _proba(self, x: Any, offset: Any) -> Any:
        return predict_proba(x, self.coef, intercept=self.intercept, code_to_sorted=self.code_to_sorted, offset=offset)

    def proba_frame(
        self, frame: pd.DataFrame, missing: str, unseen: str, offset: Any = None, partition_info: Any = None
    ) -> pd.DataFrame:
        """:meth:`~dmlr.MNLogitResults.predict_proba` of one raw pandas table (a partition when ``partition_info``
        is given, as dask's ``map_partitions`` passes it): one column per class, rows with an unseen level NaN."""
        where = "X" if partition_info is None else f"partition {partition_info['number']} of X"
        x, index = self.encode(frame, missing, unseen, where)
        if offset is not None and len(index) != len(frame):
            raise InputError("rows were dropped for missing values and an offset was given: drop them yourself")
        proba = np.full((x.shape[0], self.classes.size), np.nan)
        ok = ~np.isnan(x).any(axis=1)
        if ok.any():
            proba[ok] = self._proba(x[ok], None if offset is None else np.asarray(offset)[ok])
        return pd.DataFrame(proba, index=index, columns=list(self.classes.tolist()))

    def encode(
        self, frame: pd.DataFrame, missing: str = "raise", unseen: str = "raise", where: str = "X"
    ) -> tuple[Array, pd.Index]:
        """A raw table as the model's data columns (``const`` excluded) and the labels of the rows kept."""
        return encode_frame(
            frame,
            self.data_feature_names,
            formula=self.formula,
            encoding=(self.data_info or {}).get("encoding"),
            where=where,
            missing=missing,
            unseen=unseen,
        )

    def model_columns(self, X: Any) -> Any:
        """An array of the fitted data columns (or of the input columns, dependent ones then left out), checked."""
        if self.dropped_features and np.ndim(X) == 2 and np.shape(X)[1] == len(self.input_features):
            X = X[:, [i for i, f in enumerate(self.input_features) if f not in self.dropped_features]]
        return feature_matrix(X, len(self.data_feature_names))

    def model_rows(self, X: Any, missing: str = "raise", unseen: str = "raise") -> tuple[Any, pd.Index | None]:
        """The model's data columns of ``X``: a raw pandas table encoded as at fit time (with the labels of the rows
        kept); a dask DataFrame, CSV/Parquet files or a directory of them encoded partition by partition (a dask
        array); a store (path or :class:`~dmlr.data.store.StoreData`) as its features; or an array checked (index
        ``None`` but for pandas tables)."""
        from dmlr.results.encoding import encoded_partitions, resolve_rows

        _check_row_options(missing, unseen)
        X = resolve_rows(X)
        if isinstance(X, pd.DataFrame):
            return self.encode(X, missing, unseen)
        if isinstance(X, dd.DataFrame):
            return encoded_partitions(self, X, missing, unseen), None
        return self.model_columns(X), None

    def predict(self, X: Any, offset: Any = None, *, missing: str = "raise", unseen: str = "raise") -> Any:
        """Most probable label for each row, shape (n,); lazy for dask input (arguments as
        :meth:`~dmlr.MNLogitResults.predict_proba`)."""
        return predict_labels(self.predict_proba(X, offset, missing=missing, unseen=unseen), self.classes)


def _check_row_options(missing: str, unseen: str) -> None:
    """Validate the missing-value and unseen-level policies of prediction."""
    check_missing(missing)
    if unseen not in ("raise", "nan"):
        raise InputError(f"unseen must be 'raise' or 'nan', got {unseen!r}")
