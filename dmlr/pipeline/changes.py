"""What changed between the previous run's fit and this one's (the report of a pipeline run that appended rows).

Three tables: the coefficients that moved by more than :data:`MOVED_SE` of this fit's standard errors, the
coefficients whose 5% z-test changed its conclusion, and the class shares of the appended rows against the rows
fitted before (from the store's versions).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmlr.results.results import MNLogitResults

__all__ = ["MOVED_SE", "what_changed"]

MOVED_SE = 2.0
"""A coefficient 'moved' when ``|new - old| > MOVED_SE * se(new)``."""

LEVEL = 0.05
"""The significance level of the z-tests compared."""

Section = tuple[str, list[str], list[list[str]]]


def what_changed(previous: MNLogitResults, current: MNLogitResults, versions: list[dict[str, Any]]) -> dict[str, Any]:
    """The changes from ``previous`` to ``current``.

    Parameters
    ----------
    previous, current : MNLogitResults
        The previous run's fit and this run's (same classes; coefficients compared where both have them).
    versions : list of dict
        The training store's versions (:class:`~dmlr.data.metadata.StoreMetadata`).

    Returns
    -------
    dict
        ``previous_rows``, ``rows``, ``moved`` (feature, class, old, new, shift in standard errors), ``flipped``
        (feature, class, old p-value, new p-value, now), ``shares`` (class, share before, share of the new rows):
        JSON data, and ``sections``: the same as report tables.
    """
    old_rows = int(previous.data_info.get("store_rows", previous.n_rows) if previous.data_info else previous.n_rows)
    out: dict[str, Any] = {"previous_rows": old_rows, "rows": int(current.n_rows), "moved": [], "flipped": []}
    if current.covariance is not None and previous.covariance is not None:
        new, old, se = current.params, previous.params, current.bse
        p_new, p_old = current.pvalues, previous.pvalues
        for feature in new.index:
            if feature not in old.index:
                continue
            for cls in new.columns:
                shift = (new.loc[feature, cls] - old.loc[feature, cls]) / se.loc[feature, cls]
                if abs(shift) > MOVED_SE:
                    out["moved"].append([str(feature), str(cls), float(old.loc[feature, cls]),
                                         float(new.loc[feature, cls]), float(shift)])  # fmt: skip
                was, now = p_old.loc[feature, cls] < LEVEL, p_new.loc[feature, cls] < LEVEL
                if was != now:
                    out["flipped"].append([str(feature), str(cls), float(p_old.loc[feature, cls]),
                                           float(p_new.loc[feature, cls]),
                                           "significant" if now else "not significant"])  # fmt: skip
    out["shares"] = _shares(current, versions, old_rows)
    out["sections"] = _sections(out)
    return out


def _shares(current: MNLogitResults, versions: list[dict[str, Any]], old_rows: int) -> list[list[Any]]:
    """Class shares of the rows fitted before and of the rows appended since (empty when not recorded)."""
    before = [v for v in versions if v["rows"][1] <= old_rows]
    after = [v for v in versions if v["rows"][0] >= old_rows]
    if not before or not after or any(v.get("class_counts") is None for v in before + after):
        return []
    a = np.sum([v["class_counts"] for v in before], axis=0).astype(float)
    b = np.sum([v["class_counts"] for v in after], axis=0).astype(float)
    return [[str(c), float(x / a.sum()), float(y / max(b.sum(), 1.0))]
            for c, x, y in zip(np.asarray(current.classes).tolist(), a, b, strict=True)]  # fmt: skip


def _sections(out: dict[str, Any]) -> list[Section]:
    moved = [[f, c, f"{o:.4g}", f"{n:.4g}", f"{s:+.2f}"] for f, c, o, n, s in out["moved"]]
    flipped = [[f, c, f"{a:.3g}", f"{b:.3g}", now] for f, c, a, b, now in out["flipped"]]
    shares = [[c, f"{a:.4f}", f"{b:.4f}"] for c, a, b in out["shares"]]
    title = f"What changed: {out['previous_rows']:,} rows before, {out['rows'] - out['previous_rows']:,} appended"
    return [
        (f"{title}; coefficients that moved by more than {MOVED_SE:g} standard errors",
         ["feature", "class", "before", "now", "shift (se)"], moved or [["(none)", "", "", "", ""]]),
        (f"Tests at {LEVEL:g} whose conclusion changed", ["feature", "class", "p before", "p now", "now"],
         flipped or [["(none)", "", "", "", ""]]),
        ("Class shares: rows before and appended rows", ["class", "before", "appended"],
         shares or [["(not recorded)", "", ""]]),
    ]  # fmt: skip
