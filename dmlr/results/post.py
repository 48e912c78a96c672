"""Post-estimation of a fitted model as statsmodels users write it: predictions with standard errors, marginal
effects, the prediction table; each on the fitted data when given none (:class:`PostEstimation`, a part of
:class:`~dmlr.results.results.MNLogitResults`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from dmlr.errors import InputError
from dmlr.results.margins import MarginalEffects, marginal_effects
from dmlr.results.prediction import PredictionResults, get_prediction

if TYPE_CHECKING:
    from dmlr.models.bootstrap import BootstrapResults
    from dmlr.results.results import MNLogitResults

__all__ = ["PostEstimation"]


class PostEstimation:
    """The post-estimation methods of :class:`~dmlr.results.results.MNLogitResults`."""

    @property
    def _res(self) -> MNLogitResults:
        return cast("MNLogitResults", self)

    def get_prediction(
        self,
        X: Any = None,
        *,
        average: bool = False,
        offset: Any = None,
        missing: str = "raise",
        unseen: str = "raise",
    ) -> PredictionResults:
        """Predicted probabilities of every class with delta-method standard errors from the fit's covariance.

        Parameters
        ----------
        X : ndarray, dask.array.Array or pandas.DataFrame, shape (n, p), optional
            As for :meth:`~dmlr.MNLogitResults.predict_proba` (a DataFrame holds raw columns, encoded as the fit
            encoded them), or a store or table files (:meth:`model_rows`); default the fitted data
            (:meth:`fitted_rows`).
        average : bool
            Return the average predicted probabilities over the rows of ``X`` and their standard errors (the
            gradient averaged in the same pass).
        offset : array-like, shape (n, m), optional
            NumPy/pandas input only.
        missing, unseen : str
            As for :meth:`~dmlr.MNLogitResults.predict_proba`.

        Returns
        -------
        PredictionResults
            ``predicted`` and ``se`` of shape (n, K) (lazy for dask input) or (K,) when averaged; ``conf_int``,
            ``summary_frame(alpha)``.
        """
        self._res._cov()  # a fit without inference says so here
        X = self.fitted_rows() if X is None else X
        return get_prediction(self._res, X, average=average, offset=offset, missing=missing, unseen=unseen)

    def get_margeff(
        self,
        X: Any = None,
        at: str = "overall",
        method: str = "dydx",
        atexog: dict[Any, float] | None = None,
        dummy: bool | list[str] = False,
        count: bool | list[str] = False,
        *,
        by: str | None = None,
        missing: str = "raise",
    ) -> MarginalEffects:
        """Marginal effects with delta-method standard errors (statsmodels' ``get_margeff`` definitions).

        Parameters
        ----------
        X : array, DataFrame, store or table files, optional
            The rows to average over (``at="overall"``) or to take the mean/median of, in any form
            :meth:`model_rows` takes; default the fitted data (:meth:`fitted_rows`), as statsmodels.
        at : {"overall", "mean", "median", "zero"}
        method : {"dydx", "eydx", "dyex", "eyex"}
        atexog : dict, optional
            Feature name, or column position as statsmodels counts it (the constant, when there is one, is column
            0), to the value it is fixed at before ``at`` applies.
        dummy, count : bool or list of str
            Discrete changes instead of derivatives, as statsmodels: ``True`` finds the 0/1 columns (dummy: the
            change 0 -> 1) or the non-negative integer ones (count: ``(p(x + 1) - p(x - 1)) / 2``); a list names
            them (each is checked). Only for ``dydx``/``eydx`` at ``overall``/``mean``.
        by : {"column", "variable"}, optional
            ``"column"``: statsmodels' effects per design column. ``"variable"`` (the default for a formula fit
            given raw rows, or none): Stata's ``margins, dydx(*)``, per variable of the data through every term
            that reads it, factors as discrete changes of each level from the reference; ``at="overall"`` only.
        missing : {"raise", "drop"}
            Rows of a raw table with a missing value in a column the model reads.

        Returns
        -------
        MarginalEffects
            ``margeff``, ``margeff_se`` (features x every class), ``margeff_cov``, ``pvalues``, ``conf_int``,
            ``summary_frame()``, ``summary()``. On a dask array ``at="overall"`` is one pass of per-block sums.
        """
        self._res._cov()
        X = self.fitted_rows() if X is None else X
        return marginal_effects(self._res, X, at, method, atexog, dummy, count, by, missing)

    def fitted_rows(self) -> Any:
        """The data columns the model was fitted on: the in-memory data (:attr:`fitted_data`), or the store the fit
        recorded, reopened and checked by its checksum (its rows at the version fitted, when rows were appended
        since).

        Raises
        ------
        InputError
            The result holds no data and records no store (a loaded fit of arrays), or the store changed or cannot
            be opened: pass the rows.
        """
        from dmlr.results.encoding import fitted_rows

        return fitted_rows(self._res)

    def pred_table(self, X: Any = None, y: Any = None) -> NDArray[np.float64]:
        """The prediction table, as statsmodels' ``MNLogitResults.pred_table``: ``table[i, j]`` counts the rows of
        observed class ``i`` predicted as class ``j`` (the most probable), classes in sorted label order.

        Parameters
        ----------
        X : array, DataFrame, store or table files, optional
            Rows, in any form :meth:`model_rows` takes; default the fitted rows (:meth:`fitted_rows`).
        y : array-like, shape (n,), optional
            Their class labels; with ``X`` only (default the fitted labels).

        Returns
        -------
        ndarray, shape (K, K)
            Counts (unweighted, as statsmodels'); one pass of the engine for dask input or a store.
        """
        from dmlr.results.encoding import fitted_labels
        from dmlr.results.table import prediction_table

        if (X is None) != (y is None):
            raise InputError("pass both X and y, or neither (the fitted rows and labels)")
        if X is None:
            res = self._res
            return prediction_table(res, self.fitted_rows(), fitted_labels(res), stored=res.fitted_labels is None)
        return prediction_table(self._res, X, y)

    def bootstrap(
        self,
        X: Any = None,
        y: Any = None,
        *,
        nrep: int = 200,
        kind: str = "poisson",
        groups: Any = None,
        seed: int = 0,
        steps: int | None = None,
        weights: Any = None,
        tol: float = 1e-8,
        max_iter: int = 50,
        storage_options: dict[str, Any] | None = None,
        client: Any = None,
        checkpoint: str | None = None,
    ) -> BootstrapResults:
        """Bootstrap the coefficients: ``nrep`` replicates, each the fit of the rows weighted by Poisson(1) draws,
        all replicates evaluated in every pass over the data.

        A replicate's weight of a row (of a cluster, ``kind="cluster"``) is a function of ``(seed, replicate, row
        index or cluster id)`` only, the same on any cluster and chunking (Chamandy et al. 2012's Poisson bootstrap
        for data too large to resample). Each replicate starts at this fit's coefficients and iterates with the full
        sample's information at the fit, factored once (replicates are ``O(1/sqrt(n))`` away from the fit); the
        first pass computes each row's score once for all replicates, later ones every replicate's probabilities.

        Parameters
        ----------
        X : array, DataFrame, dask array or store, optional
            The rows fitted (default: the fit's own, :meth:`fitted_rows`, with their labels).
        y : array-like, optional
            Their labels, with ``X`` (not for a store).
        nrep : int
            Replicates (``>= 2``).
        kind : {"poisson", "cluster"}
            Poisson weights per row, or per cluster of ``groups``.
        groups : array-like, shape (n,), optional
            Cluster ids for ``kind="cluster"`` (default a store's staged groups).
        seed : int
        steps : int, optional
            Stop every replicate after this many steps from the fit (Andrews 2002's k-step bootstrap). ``steps=1``
            is the one-step bootstrap ``b + H^-1 g_r(b)``: one pass over the data (the fit's own data and
            model-based covariance), replicates within ``O(1/n)`` of the iterated ones, whose spread is
            ``O(1/sqrt(n))``: the same standard errors and intervals to first order, for data where each pass is
            long. ``None`` (default): iterate every replicate until converged.
        weights : array-like, shape (n,), optional
            The fit's frequency weights, when it had some (they multiply the replicates' weights).
        tol : float
            A replicate has converged when ``max |score| / n`` of its weighted rows is below ``tol``.
        max_iter : int
            Passes at most for the replicates.
        storage_options, client
            As for :func:`dmlr.fit`.
        checkpoint : str, optional
            Directory (local or fsspec URL): every replicate's coefficients are written there after each pass, and
            the same call after a crash resumes from the last pass written (the same replicates, the same result).
            The files stay; remove the directory once the results are saved.

        Returns
        -------
        BootstrapResults
            ``params`` (nrep, d, m), ``bse``, ``cov_params()``, ``conf_int(alpha, method="percentile" | "normal")``,
            ``n_passes``.
        """
        from dmlr.models.bootstrap import bootstrap

        return bootstrap(
            self._res, X, y, nrep=nrep, kind=kind, groups=groups, seed=seed, steps=steps, weights=weights, tol=tol,
            max_iter=max_iter, storage_options=storage_options, client=client, checkpoint=checkpoint,
        )  # fmt: skip
