"""``dmlr.MultinomialLogit``: a scikit-learn classifier around :func:`dmlr.fit`, with the full results at ``results_``.

Layout: scikit-learn's multiclass convention, ``coef_`` of shape ``(K, p)`` and ``intercept_`` of shape ``(K,)``, with
the reference class's row fixed at zero (softmax probabilities are unchanged by a common shift, so this is the
reference-category model written in scikit-learn's form); for ``K = 2`` the usual ``(1, p)`` and ``(1,)``, the
log-odds of ``classes_[1]`` against ``classes_[0]``.

Defaults follow scikit-learn's ``LogisticRegression``: ``l2=1.0`` is its ``C=1.0`` (the penalty ``l2/2 ||W||^2`` with
the intercept unpenalized). Set ``l2=0`` for the maximum-likelihood fit with statsmodels-style inference.
"""

from __future__ import annotations

import inspect
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from dmlr.api import fit as dmlr_fit
from dmlr.data.inputs import refuse_sparse
from dmlr.options import FitOptions, fit_option_fields
from dmlr.results.results import MNLogitResults

__all__ = ["MultinomialLogit"]


ESTIMATOR_DEFAULTS: dict[str, Any] = {"l2": 1.0}
"""Where the estimator's defaults differ from :class:`~dmlr.options.FitOptions`' (scikit-learn's ``C=1.0``)."""

ESTIMATOR_EXCLUDED = ("persist", "missing")
"""Fit options the estimator does not take (scikit-learn estimators refuse NaN input; data placement is dmlr.fit's)."""


class MultinomialLogit(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Multinomial logistic regression fitted on Dask, with statistical inference.

    Parameters
    ----------
    l2 : float, default 1.0
        Ridge penalty (scikit-learn's ``1 / C``); 0 gives the maximum-likelihood estimate.
    client : distributed.Client, optional
        Where to fit (default the current client, else local threads).
    warm_start : bool, default False
        Start each ``fit`` after the first at the previous fit's coefficients (scikit-learn's meaning; its classes
        and columns must be the new data's): ``start_params`` of :func:`dmlr.fit`.
    **options
        Every other option of :func:`dmlr.fit` (:class:`~dmlr.options.FitOptions`): ``method``,
        ``fit_intercept``, ``base``, ``tol``, ``max_iter``, ``inference``, ``separation``, ``collinear``,
        ``split_every``, ``cov_type`` (``"cluster"`` takes the cluster ids from ``fit(..., groups=)``),
        ``weights_type`` (what ``sample_weight`` is), ``cluster_correction``, with dmlr.fit's defaults.

    Attributes
    ----------
    classes_ : ndarray, shape (K,)
    coef_ : ndarray, shape (K, p), or (1, p) for K = 2
    intercept_ : ndarray, shape (K,), or (1,) for K = 2
    n_iter_ : ndarray, shape (1,)
        Iterations of the optimizer.
    n_features_in_ : int
    feature_names_in_ : ndarray of str, shape (p,)
        Only when fitted on a DataFrame.
    results_ : MNLogitResults
        Everything :func:`dmlr.fit` returns (``summary()``, ``bse``, ``pvalues``, ...).
    """

    def __init__(
        self, l2: float = ESTIMATOR_DEFAULTS["l2"], *, client: Any = None, warm_start: bool = False, **options: Any
    ) -> None:
        self.l2 = l2
        self.client = client
        self.warm_start = warm_start
        names = _option_names()
        for key in options:
            if key not in names:
                raise TypeError(f"MultinomialLogit() got an unexpected keyword argument {key!r}")
        for name in names:
            setattr(self, name, options.get(name, _default(name)))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None, groups: Any = None) -> MultinomialLogit:
        """Fit the model.

        Parameters
        ----------
        X : array-like, DataFrame or dask array, shape (n, p)
        y : array-like or dask array, shape (n,)
        sample_weight : array-like, shape (n,), optional
            Frequency weights (probability weights with ``weights_type="probability"``).
        groups : array-like, shape (n,), optional
            Cluster ids for cluster-robust standard errors.

        Returns
        -------
        self
        """
        refuse_sparse(X)
        if isinstance(X, da.Array):
            self.n_features_in_ = int(X.shape[1])
            x_fit, y_fit = X, y
        elif _has_categories(X):  # encoded by dmlr.fit as it encodes them (one-hot against the first category)
            self.n_features_in_ = int(X.shape[1])
            self.feature_names_in_ = np.asarray(list(map(str, X.columns)), dtype=object)
            x_fit, y_fit = X, np.asarray(y)
            check_classification_targets(y_fit)
        else:
            names = list(map(str, X.columns)) if isinstance(X, pd.DataFrame) else None
            x_fit, y_fit = validate_data(self, X, y, dtype=np.float64, y_numeric=False)
            check_classification_targets(y_fit)
            if sample_weight is not None:
                sample_weight = _check_sample_weight(sample_weight, x_fit, dtype=np.float64)
            if names is not None:
                x_fit = pd.DataFrame(x_fit, columns=names)
        options = {name: getattr(self, name) for name in ("l2", *_option_names())}
        start = getattr(self, "results_", None) if self.warm_start else None
        res = dmlr_fit(
            x_fit, y_fit, weights=sample_weight, groups=groups, client=self.client, start_params=start, **options
        )
        self.results_ = res
        self.n_iter_ = np.array([res.n_iter])
        self.classes_ = np.asarray(res.classes)
        coef, intercept = self._sklearn_layout(res)
        self.coef_, self.intercept_ = coef, intercept
        return self

    @staticmethod
    def _sklearn_layout(res: MNLogitResults) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        w = res.coef  # (d, m), class columns in sorted non-base order
        slopes = w[1:] if res.intercept else w
        offsets = w[0] if res.intercept else np.zeros(w.shape[1])
        k = res.classes.size
        coef = np.zeros((k, slopes.shape[0]))
        intercept = np.zeros(k)
        non_base = [i for i, c in enumerate(res.classes) if c != res.base]
        coef[non_base] = slopes.T
        intercept[non_base] = offsets
        base = int(np.nonzero(res.classes == res.base)[0][0])
        if k == 2:  # scikit-learn's binary form: log-odds of classes_[1] against classes_[0]
            sign = 1.0 if base == 0 else -1.0
            return sign * (coef[1] - coef[0])[None, :], sign * np.array([intercept[1] - intercept[0]])
        return coef, intercept

    def _input(self, X: Any) -> Any:
        check_is_fitted(self, "results_")
        if isinstance(X, da.Array):
            return X
        if _has_categories(X):  # raw columns, encoded by the results as the fit encoded them
            if list(map(str, X.columns)) != list(getattr(self, "feature_names_in_", [])):
                raise ValueError(f"X has the columns {list(X.columns)}; the estimator was fitted with "
                                 f"{list(getattr(self, 'feature_names_in_', []))}")  # fmt: skip
            return X
        x = validate_data(self, X, reset=False, dtype=np.float64)
        if isinstance(X, pd.DataFrame):
            return pd.DataFrame(x, columns=list(map(str, X.columns)), index=X.index)
        return x

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n, K), columns in ``classes_`` order; lazy for dask input."""
        x = self._input(X)  # checks that the estimator is fitted
        proba = self.results_.predict_proba(x)
        return proba.to_numpy() if isinstance(proba, pd.DataFrame) else proba

    def predict_log_proba(self, X: Any) -> Any:
        """Log of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        return da.log(proba) if isinstance(proba, da.Array) else np.log(proba)

    def predict(self, X: Any) -> Any:
        """Most probable class, shape (n,); lazy for dask input."""
        proba = self.predict_proba(X)
        if isinstance(proba, da.Array):
            classes = self.classes_
            return da.map_blocks(lambda b: classes[np.argmax(b, axis=1)], proba, drop_axis=1, dtype=classes.dtype)
        return self.classes_[np.argmax(proba, axis=1)]


def _has_categories(X: Any) -> bool:
    """A pandas DataFrame with ``category`` columns (which ``dmlr.fit`` one-hot encodes)."""
    return isinstance(X, pd.DataFrame) and any(isinstance(t, pd.CategoricalDtype) for t in X.dtypes)


def _option_names() -> list[str]:
    """The fit options the estimator takes besides ``l2``, in :class:`~dmlr.options.FitOptions` order."""
    return [f.name for f in fit_option_fields() if f.name not in ESTIMATOR_EXCLUDED and f.name != "l2"]


def _default(name: str) -> Any:
    return ESTIMATOR_DEFAULTS.get(name, getattr(FitOptions, name))


def _init_signature() -> inspect.Signature:
    """``__init__``'s signature with one keyword per option (what scikit-learn's ``get_params`` reads)."""
    self_ = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [self_, inspect.Parameter("l2", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_default("l2"))]
    params.append(inspect.Parameter("client", inspect.Parameter.KEYWORD_ONLY, default=None))
    params.append(inspect.Parameter("warm_start", inspect.Parameter.KEYWORD_ONLY, default=False))
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=_default(n)) for n in _option_names()]
    return inspect.Signature(params)


MultinomialLogit.__init__.__signature__ = _init_signature()  # type: ignore[attr-defined]
