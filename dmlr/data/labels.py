"""Class labels: validation, reference-category order, and encoding to integer codes.

Codes follow the model order: code 0 is the base (reference) class, codes ``1..m`` the other classes in sorted label
order. The sorted order of all labels (``classes``) is what prediction reports, as scikit-learn's ``classes_`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dmlr.errors import InputError

__all__ = [
    "MAX_CLASSES", "EncodeLabels", "LabelCoding", "check_class_count", "check_label_kinds", "check_label_values",
    "label_positions",
]  # fmt: skip

MAX_CLASSES = 100
"""Most classes a target may have unless ``max_classes`` says otherwise (a multinomial logit fits one coefficient
column per class: more usually means a continuous or an id column was named as the target)."""


def check_class_count(classes: NDArray[Any], where: str, max_classes: int | None = None) -> None:
    """Refuse a float target with non-integral values (a continuous column), or one with more than ``max_classes``
    (default :data:`MAX_CLASSES`) distinct values.

    Parameters
    ----------
    classes : ndarray, shape (K,)
        The distinct labels.
    where : str
        Names the target in messages (``"target column 'dep_delay'"``).
    max_classes : int, optional

    Raises
    ------
    InputError
        Naming the count (and a few of the values).
    """
    k = int(classes.size)
    if classes.dtype.kind == "f":
        values = classes[np.isfinite(classes)]
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise InputError(
                f"{where} holds non-integral numbers ({k:,} distinct values, e.g. {fractional[:3].tolist()}): it looks "
                f"continuous, not like class labels. Convert them to integers or strings if they really are classes."
            )
    limit = MAX_CLASSES if max_classes is None else int(max_classes)
    if k > limit:
        raise InputError(
            f"{where} has {k:,} distinct values, more than max_classes={limit}: a multinomial logit fits K - 1 = "
            f"{k - 1:,} coefficient columns, one per class. Is it a continuous or an id column? If these really are "
            f"classes, pass max_classes={k} (dmlr stage/fit --max-classes {k})."
        )


@dataclass(frozen=True)
class LabelCoding:
    """How labels map to class codes.

    Attributes
    ----------
    classes : ndarray, shape (K,)
        All labels, sorted.
    base : object
        The reference label (coefficient fixed at 0).
    """

    classes: NDArray[Any]
    base: Any

    @classmethod
    def from_labels(cls, unique_labels: NDArray[Any], base: Any = None) -> LabelCoding:
        """Build the coding from the distinct labels seen in ``y``.

        Parameters
        ----------
        unique_labels : ndarray, shape (K,)
            Distinct labels (any sortable dtype).
        base : object, optional
            Reference label; default the smallest label.

        Raises
        ------
        InputError
            Fewer than two classes, or ``base`` is not one of the labels.
        """
        classes = np.unique(unique_labels)
        if classes.size < 2:
            raise InputError(
                f"y has one class only ({classes.tolist()!r}); a multinomial logit needs at least 2 classes"
            )
        if base is None:
            base = classes[0]
        match = np.nonzero(classes == base)[0] if _comparable(classes, base) else np.array([], dtype=np.intp)
        if len(match) != 1:
            raise InputError(f"base={base!r} is not one of the class labels {classes.tolist()!r}")
        return cls(classes=classes, base=classes[match[0]])

    @property
    def n_classes(self) -> int:
        """Number of classes ``K``."""
        return int(self.classes.size)

    @property
    def model_order(self) -> NDArray[Any]:
        """Labels in code order, shape (K,): the base first, then the others sorted."""
        return np.concatenate([[self.base], self.non_base])

    @property
    def non_base(self) -> NDArray[Any]:
        """Labels of the ``m = K - 1`` coefficient columns, shape (m,)."""
        return self.classes[self.classes != self.base]

    @property
    def base_index(self) -> int:
        """Position of the base in ``classes``."""
        return int(np.nonzero(self.classes == self.base)[0][0])

    def encode(self, labels: NDArray[Any], where: str = "y") -> NDArray[np.int32]:
        """Map labels to codes (0 = base).

        Parameters
        ----------
        labels : ndarray, shape (r,)
            Labels to encode.
        where : str
            Names the block in error messages.

        Returns
        -------
        ndarray of int32, shape (r,)

        Raises
        ------
        InputError
            A label that is not one of ``classes``.
        """
        return self.encode_positions(label_positions(labels, self.classes, where), where)

    def encode_positions(self, pos: NDArray[np.integer], where: str = "y") -> NDArray[np.int32]:
        """Map positions in the sorted ``classes`` (as stored in a Zarr store) to codes (0 = base).

        Raises
        ------
        InputError
            A position outside ``0..K-1``.
        """
        pos = np.asarray(pos)
        bad = (pos < 0) | (pos >= self.classes.size)
        if np.any(bad):
            row = int(np.argmax(bad))
            raise InputError(
                f"{where} has class position {int(pos[row])} at row {row}, outside 0..{self.classes.size - 1}"
            )
        # sorted position -> code: labels before the base shift up by one, the base becomes 0.
        b = self.base_index
        codes = np.where(pos < b, pos + 1, pos).astype(np.int32)
        codes[pos == b] = 0
        return codes


def check_label_values(labels: NDArray[Any], where: str = "y") -> None:
    """Reject missing labels and float labels that are not integral.

    Raises
    ------
    InputError
        Naming the first offending row of ``where``.
    """
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels)
        if np.any(bad):
            raise InputError(f"{where} has a missing/non-finite label at row {int(np.argmax(bad))}")
        frac = labels != np.round(labels)
        if np.any(frac):
            row = int(np.argmax(frac))
            raise InputError(
                f"{where} has float labels that are not integral (row {row}: {labels[row]!r}); "
                "pass integer or string class labels"
            )
    elif labels.dtype.kind == "O":
        values = labels.tolist()
        bad = np.array([v is None or _is_na(v) or (isinstance(v, float) and v != v) for v in values])
        if bad.any():
            raise InputError(
                f"{where} has a missing label at row {int(np.argmax(bad))} ({int(bad.sum())} missing); "
                "drop those rows (missing='drop') or give them a class"
            )
        check_label_kinds(values, where)


def check_label_kinds(values: list[Any], where: str = "y") -> None:
    """Reject labels that mix text and numbers (they cannot be sorted into classes).

    Raises
    ------
    InputError
        Naming one label of each kind and its position.
    """
    kinds: dict[str, int] = {}
    for row, v in enumerate(values):
        kinds.setdefault("text" if isinstance(v, (str, bytes)) else "number", row)
    if len(kinds) > 1:
        raise InputError(
            f"{where} mixes text and numeric labels ({values[kinds['text']]!r} at row {kinds['text']}, "
            f"{values[kinds['number']]!r} at row {kinds['number']}); labels must be all text or all numbers, "
            "e.g. y.astype(str)"
        )


def _is_na(value: Any) -> bool:
    """pandas.NA and NaT without importing pandas (this module runs on workers, which stay light)."""
    return type(value).__name__ in ("NAType", "NaTType")


def _comparable(classes: NDArray[Any], base: Any) -> bool:
    try:
        return bool(np.any(classes == base))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class EncodeLabels:
    """Encode a partition's ``labels`` as the fit's ``codes`` when its rows are produced (a transform of the pass
    engine, :class:`dmlr.passes.task.RowsTransform`); the labels are then dropped.

    Attributes
    ----------
    coding : LabelCoding
    positions : bool
        The labels are positions in the sorted classes (a store's ``y``), not the labels themselves.
    """

    coding: LabelCoding
    positions: bool = False

    def inputs(self, fields: Any) -> tuple[str, ...]:
        """The stored fields that give ``fields``: ``labels`` instead of ``codes``."""
        return tuple(dict.fromkeys("labels" if f == "codes" else f for f in fields))

    def __call__(self, rows: Any) -> Any:
        if rows.labels is None:
            return rows
        where = rows.where("y")
        if self.positions:
            codes = self.coding.encode_positions(rows.labels, where)
        else:
            codes = self.coding.encode(rows.labels, where)
        return rows.with_blocks(codes=codes, labels=None)


@dataclass(frozen=True)
class LabelPositions:
    """Replace a partition's raw ``labels`` by their positions in the sorted ``classes`` when its rows are produced
    (a transform of the pass engine, :class:`dmlr.passes.task.RowsTransform`; errors name the partition)."""

    classes: NDArray[Any]

    def inputs(self, fields: Any) -> tuple[str, ...]:
        """The stored fields that give ``fields``: the same."""
        return tuple(fields)

    def __call__(self, rows: Any) -> Any:
        if rows.labels is None:
            return rows
        return rows.with_blocks(labels=label_positions(rows.labels, self.classes, rows.where("y")))


def label_positions(labels: NDArray[Any], classes: NDArray[Any], where: str = "y") -> NDArray[np.int32]:
    """Positions of ``labels`` among the sorted ``classes`` (what a store's ``y`` holds).

    Raises
    ------
    InputError
        A missing or mixed-type label, or a label that is not one of ``classes`` (the first, with its row).
    """
    labels = np.asarray(labels)
    check_label_values(labels, where)
    try:
        pos = np.minimum(np.searchsorted(classes, labels), classes.size - 1)
        unknown = classes[pos] != labels
    except TypeError:  # labels of another type than the classes (text against numbers): none is a class
        pos, unknown = np.zeros(labels.shape, np.intp), np.ones(labels.shape, bool)
    if np.any(unknown):
        row = int(np.nonzero(unknown)[0][0])
        raise InputError(
            f"{where} has label {labels[row : row + 1].tolist()[0]!r} at row {row}, which is not one of "
            f"{classes.tolist()!r}"
        )
    return np.asarray(pos, dtype=np.int32)
