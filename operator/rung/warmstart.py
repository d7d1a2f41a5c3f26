"""Warm start (meta-learning): earlier Studies' observations seed a new Study's model.

A task is described by meta-features (auto-sklearn's kind, Feurer et al. 2015: size,
dimensions, class balance, landmarkers). An earlier Study's observations, mapped into the
current search space, become a `Prior` whose weight is the spec's weight times the
similarity of the two tasks' meta-features. The model-based samplers mix the priors into
their good/bad densities, each earlier task ranked on its own (the meta-learning TPE of
Watanabe et al. 2023): see `KDESampler.warm_start`.

Mapping an earlier Study into the current space (`prior_from`):
- a parameter of the same name and a compatible type (numeric with numeric, choice with
  choice) is used; a number outside the current range is clipped to it, a choice the
  current space lacks drops that observation;
- a current parameter the earlier Study lacks (or has with another type) is marginalised:
  in the prior's densities that dimension is uniform, which is the current Study's own
  prior (what a cold sampler draws from), so the earlier task says nothing about it;
- an earlier parameter the current space lacks is ignored.
The losses of the earlier Study are used at one budget only: the largest with enough
observations to fit a model on (losses at different budgets are not comparable).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rung.errors import InputError
from rung.search.base import Observation
from rung.space import Param, SearchSpace

LANDMARK_ROWS = 2000      # landmarkers are fitted on a fixed subsample of larger datasets
LANDMARK_FOLDS = 5
SIMILARITY_SCALE = 0.1    # a mean scaled gap of 0.1 divides the weight by e
_MISSING = {"", "na", "nan", "null", "none", "?"}
_NUMERIC = ("float", "int")


# ---- meta-features ------------------------------------------------------------------

def meta_features(X: Any, y: Any) -> dict[str, float]:
    """The usual meta-features of a dataset (deterministic).

    Always: logInstances (ln n), logFeatures (ln d), missingFraction (of the cells of X).
    Classification (a non-numeric or integral target): classes, classEntropy (bits),
    classBalance (smallest class / largest), and landmarkers, the cross-validated accuracy
    of 1-NN, a decision stump and Gaussian naive Bayes. Regression (a non-integral numeric
    target): the cross-validated R^2 of 1-NN, a stump and a linear model (floored at -1).
    Missing cells are imputed with the column median for the landmarkers.
    """
    X = np.asarray(X, dtype=float)
    X = X[:, None] if X.ndim == 1 else X
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise InputError("dataset", f"X {X.shape} and y {y.shape} do not match",
                         "give X as rows x features and y as one value per row")
    keep = ~_missing_target(y)
    X, y = X[keep], y[keep]
    if len(y) < 2 or X.shape[1] == 0:
        raise InputError("dataset", f"has {len(y)} rows with a target and {X.shape[1]} features",
                         "give at least 2 rows and 1 feature")
    out = {"logInstances": math.log(len(y)), "logFeatures": math.log(X.shape[1]),
           "missingFraction": float(np.isnan(X).mean())}
    classification = _is_classification(y)
    if classification:
        counts = np.unique(y, return_counts=True)[1]
        p = counts / counts.sum()
        out.update(classes=float(len(counts)), classEntropy=float(-(p * np.log2(p)).sum()),
                   classBalance=float(counts.min() / counts.max()))
    else:
        y = y.astype(float)
    out.update(_landmarkers(_impute(X), y, classification))
    return out


def _missing_target(y: np.ndarray) -> np.ndarray:
    if y.dtype.kind == "f":
        return np.isnan(y)
    return np.array([v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip().lower() in _MISSING
                     for v in y], dtype=bool)


def _is_classification(y: np.ndarray) -> bool:
    from sklearn.utils.multiclass import type_of_target  # sklearn loads slowly: only when needed

    kind = type_of_target(y)
    if kind in ("binary", "multiclass"):
        return True
    if kind == "continuous":
        return False
    raise InputError("dataset", f"has a target of kind {kind!r}", "give one class label or number per row")


def _impute(X: np.ndarray) -> np.ndarray:
    missing = np.isnan(X)
    if not missing.any():
        return X
    fill = np.zeros(X.shape[1])
    seen = ~missing.all(axis=0)
    fill[seen] = np.nanmedian(X[:, seen], axis=0)
    return np.where(missing, fill, X)


def _landmarkers(X: np.ndarray, y: np.ndarray, classification: bool) -> dict[str, float]:
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    if len(y) > LANDMARK_ROWS:  # the same rows every time: the features stay deterministic
        rows = np.sort(np.random.default_rng(0).permutation(len(y))[:LANDMARK_ROWS])
        X, y = X[rows], y[rows]
    folds = min(LANDMARK_FOLDS, len(y))
    if classification:
        smallest = int(np.unique(y, return_counts=True)[1].min())
        # Stratified folds need every class in every fold; a rarer class falls back to plain folds.
        cv = (StratifiedKFold(min(folds, smallest), shuffle=True, random_state=0) if smallest >= 2
              else KFold(folds, shuffle=True, random_state=0))
        models = {"accuracy1NN": make_pipeline(StandardScaler(), KNeighborsClassifier(1)),
                  "accuracyStump": DecisionTreeClassifier(max_depth=1, random_state=0),
                  "accuracyNaiveBayes": GaussianNB()}
        scoring, floor = "accuracy", 0.0
    else:
        cv = KFold(folds, shuffle=True, random_state=0)
        models = {"r2NearestNeighbour": make_pipeline(StandardScaler(), KNeighborsRegressor(1)),
                  "r2Stump": DecisionTreeRegressor(max_depth=1, random_state=0),
                  "r2Linear": LinearRegression()}
        scoring, floor = "r2", -1.0  # one wild fold must not dominate the similarity
    if np.ptp(X, axis=0).max() == 0:  # no feature varies: every model can only guess the prior
        guess = DummyClassifier() if classification else DummyRegressor()
        models = dict.fromkeys(models, guess)
    return {name: max(floor, float(np.mean(cross_val_score(model, X, y, cv=cv, scoring=scoring))))
            for name, model in models.items()}


def load_dataset(path: str | Path, target: str | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from a .csv (a header row when no cell of the first row is a number; text
    columns become category codes; empty, NA, NaN, ? are missing), a .npy table, or a
    .npz with arrays X and y (or a single table). In a table the target is the last
    column unless `target` names one (a header name or a 0-based index). Rows without a
    target are left out."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "is not a file", "give a .csv, .npy or .npz dataset")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        X, y = _load_csv(path, target)
    elif suffix in (".npy", ".npz"):
        X, y = _load_numpy(path, target)
    else:
        raise InputError(str(path), f"has no known dataset format ({suffix or 'no suffix'})",
                         "give a .csv, .npy or .npz file")
    keep = ~_missing_target(y)
    return X[keep], y[keep]


def _load_csv(path: Path, target: str | int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, newline="") as f:
            rows = [[c.strip() for c in r] for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(str(path), f"cannot be read as CSV ({e})", "give a UTF-8 comma-separated file") from None
    header = rows.pop(0) if rows and not any(_number(c) is not None for c in rows[0]) else None
    if not rows:
        raise InputError(str(path), "has no data rows", "give a CSV with one row per example")
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise InputError(str(path), f"data row {i + 1} has {len(r)} columns, the first has {width}",
                             "give every row the same columns")
    column = _target_column(target, header, width)
    columns = list(zip(*rows))
    y_cells = columns.pop(column)
    y_numbers = [_number(c) for c in y_cells]
    if all(v is not None or c.lower() in _MISSING for v, c in zip(y_numbers, y_cells)):
        y = np.array([math.nan if v is None else v for v in y_numbers])
    else:
        y = np.array(y_cells, dtype=object)
    X = np.column_stack([_feature(c) for c in columns]) if columns else np.empty((len(rows), 0))
    return X, y


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _feature(cells: Sequence[str]) -> np.ndarray:
    """A numeric column as numbers; a text column as the codes of its sorted values."""
    present = [c for c in cells if c.lower() not in _MISSING]
    if all(_number(c) is not None for c in present):
        return np.array([math.nan if c.lower() in _MISSING else float(c) for c in cells])
    code = {v: float(i) for i, v in enumerate(sorted(set(present)))}
    return np.array([code.get(c, math.nan) if c.lower() not in _MISSING else math.nan for c in cells])


def _target_column(target: str | int | None, header: list[str] | None, width: int) -> int:
    if width < 2:
        raise InputError("dataset", f"has {width} column", "give features and a target column")
    if target is None:
        return width - 1
    if header is not None and str(target) in header:
        return header.index(str(target))
    try:
        index = int(target)
    except ValueError:
        index = None
    if index is None or not -width <= index < width:
        names = f"one of {', '.join(header)} or " if header else ""
        raise InputError("--target", f"{target!r} is not a column", f"give {names}an index from 0 to {width - 1}")
    return index % width


def _load_numpy(path: Path, target: str | int | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(str(path), f"cannot be read by numpy ({e})", "save it with numpy.save or numpy.savez") from None
    if isinstance(loaded, np.ndarray):
        table = loaded
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        xs = [k for k in ("X", "x") if k in arrays]
        if xs and "y" in arrays:
            if target is not None:
                raise InputError("--target", "applies to a table, and this .npz has X and y",
                                 "leave --target out")
            return np.asarray(arrays[xs[0]], dtype=float), np.asarray(arrays["y"])
        if len(arrays) != 1:
            raise InputError(str(path), f"has arrays {', '.join(arrays) or 'none'}",
                             "give arrays X and y, or a single table")
        table = next(iter(arrays.values()))
    if table.ndim != 2 or table.dtype.kind not in "biuf":
        raise InputError(str(path), f"holds a {table.ndim}-D {table.dtype} array", "give a 2-D numeric table")
    column = _target_column(target, None, table.shape[1])
    return np.delete(table, column, axis=1).astype(float), table[:, column]


# ---- similarity ---------------------------------------------------------------------

def similarity(a: Mapping[str, float], b: Mapping[str, float], scale: float = SIMILARITY_SCALE) -> float:
    """How alike two tasks are, in (0, 1]: exp(-mean gap / scale) over their shared keys.

    A key's gap is |a - b| / max(|a|, |b|, 1): fractions and accuracies (in [0, 1]) are
    compared by their difference, large features (ln n, classes) by their relative
    difference, so each key counts alike whatever its magnitude. Unlike a plain relative
    difference it does not blow up near zero (a missing share of 0 against 0.01 is a gap of
    0.01, not 1); unlike min-max scaling (Feurer et al.) it needs no population of tasks.
    The mean keeps the value independent of how many keys are shared. With no shared
    (finite) key nothing says the tasks differ: 1, and the spec's weight alone counts.
    """
    shared = [k for k in sorted(a.keys() & b.keys()) if math.isfinite(a[k]) and math.isfinite(b[k])]
    if not shared:
        return 1.0
    gaps = [abs(a[k] - b[k]) / max(abs(a[k]), abs(b[k]), 1.0) for k in shared]
    return math.exp(-sum(gaps) / len(gaps) / scale)


# ---- priors -------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Prior:
    """An earlier Study's observations, encoded in the current search space."""

    X: np.ndarray                    # (n, len(space)); NaN in marginalised dimensions
    loss: np.ndarray                 # (n,) minimised; +inf for a failure
    trial: np.ndarray                # (n,) the earlier trial numbers (they break loss ties)
    weight: float                    # what one of these observations counts for (own ones: 1)
    budget: float                    # the earlier Study's budget they were observed at
    used: tuple[str, ...]
    marginalised: tuple[str, ...]    # current parameters the earlier Study cannot inform
    ignored: tuple[str, ...]         # earlier parameters the current space cannot take
    clipped: int = 0                 # values clipped into the current range
    dropped: int = 0                 # observations dropped for a choice the current space lacks

    @property
    def missing(self) -> np.ndarray:
        """Per dimension of the current space: True where the prior is uniform."""
        return np.isnan(self.X).all(axis=0)

    def note(self) -> str:
        """One line saying what was taken from the earlier Study and how."""
        parts = [f"{len(self.loss)} observations at budget {self.budget:g}, weight {self.weight:.3g}",
                 f"used {', '.join(self.used)}"]
        if self.marginalised:
            parts.append(f"uniform over {', '.join(self.marginalised)} (not in the earlier Study, or of another type)")
        if self.ignored:
            parts.append(f"ignored {', '.join(self.ignored)} (not in this space, or of another type)")
        if self.clipped:
            parts.append(f"{self.clipped} values clipped into this space's range")
        if self.dropped:
            parts.append(f"{self.dropped} observations dropped (a choice this space lacks)")
        return "; ".join(parts)


def prior_from(space: SearchSpace, other_params_spec: SearchSpace | Mapping[str, Any],
               observations: Sequence[Observation], weight: float, *,
               min_points: int | None = None) -> Prior | None:
    """The Prior of an earlier Study (its search space spec and observations), or None when
    it has nothing to give: a zero weight, no parameter in common, or fewer than
    `min_points` usable observations on every budget (default len(space) + 3, what a
    cold KDE needs: minPoints + 2).

    `weight` is spec.warmStart.weight times `similarity` of the two tasks' meta-features.
    """
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise InputError("spec.warmStart.weight", f"must be a finite number >= 0 (got {weight!r})")
    other = other_params_spec if isinstance(other_params_spec, SearchSpace) else SearchSpace.from_spec(other_params_spec)
    earlier = {p.name: p for p in other.params}
    pairs = {j: p for j, p in enumerate(space.params) if p.name in earlier and _compatible(p, earlier[p.name])}
    if weight == 0 or not pairs:
        return None

    rows: dict[float, dict[int, tuple[float, np.ndarray, int]]] = {}  # budget -> trial -> (loss, x, clipped)
    dropped: dict[float, int] = {}
    for o in observations:
        x, clipped = _encode(space, pairs, o.config)
        if x is None:
            dropped[o.budget] = dropped.get(o.budget, 0) + 1
            continue
        loss = math.inf if math.isnan(o.loss) else float(o.loss)
        group = rows.setdefault(o.budget, {})
        if o.trial not in group or loss < group[o.trial][0]:  # a trial told twice: its best
            group[o.trial] = (loss, x, clipped)
    need = len(space) + 3 if min_points is None else min_points
    budgets = [b for b, group in rows.items() if len(group) >= max(need, 1)]
    if not budgets:
        return None
    budget = max(budgets)
    trials = sorted(rows[budget])
    chosen = [rows[budget][t] for t in trials]
    used = tuple(p.name for p in pairs.values())
    return Prior(X=np.array([x for _, x, _ in chosen]), loss=np.array([loss for loss, _, _ in chosen]),
                 trial=np.array(trials, dtype=np.int64), weight=float(weight), budget=float(budget), used=used,
                 marginalised=tuple(n for n in space.names if n not in used),
                 ignored=tuple(n for n in other.names if n not in used),
                 clipped=sum(c for _, _, c in chosen), dropped=dropped.get(budget, 0))


def _compatible(current: Param, earlier: Param) -> bool:
    """Numbers map to numbers, choices to choices."""
    return (current.kind in _NUMERIC) == (earlier.kind in _NUMERIC)


def _encode(space: SearchSpace, pairs: dict[int, Param], config: Mapping[str, Any]) -> tuple[np.ndarray | None, int]:
    """The config in the current encoding (NaN where marginalised) and how many values were
    clipped; None when a value cannot be placed in the current space."""
    x = np.full(len(space), math.nan)
    clipped = 0
    for j, p in pairs.items():
        if p.name not in config:
            return None, 0
        v = config[p.name]
        if p.kind in _NUMERIC:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return None, 0
            v = round(v) if p.kind == "int" else float(v)
            inside = min(max(v, p.low), p.high)
            clipped += inside != v
            x[j] = p.encode(inside)
        elif v in p.choices:
            x[j] = p.encode(v)
        else:
            return None, 0
    return x, clipped
