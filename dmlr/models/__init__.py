"""Many models per pass: a bank of fits sharing every pass over the data (:mod:`dmlr.models.bank`), the row
weightings that make folds and replicates functions of the row (:mod:`dmlr.models.weightings`), held-out scores
(:mod:`dmlr.models.scores`), :func:`~dmlr.models.many.fit_many`, :func:`~dmlr.models.cv.cross_validate` and the
bootstrap of a fit (:mod:`dmlr.models.bootstrap`, :meth:`MNLogitResults.bootstrap
<dmlr.results.results.MNLogitResults.bootstrap>`)."""
