"""Learning-curve extrapolation: a weighted ensemble of parametric families.

After Domhan, Springenberg and Hutter (IJCAI 2015): a trial's curve is fitted by several
parametric families (here pow3, exp3, log-linear, Janoschek and MMF from their list),
combined by how well each fits, and the combination gives the probability that the loss
at a later step falls below a value. As in the paper every family is monotone (a loss
that does not rise with more steps) and the predictive is a mixture over families.

Differences from the paper, to be fast and deterministic (it runs on every report):
- each family is fitted by least squares with bounded parameters (variable projection:
  the linear coefficients in closed form, the shape parameters from the best point of a
  small grid, then Levenberg-Marquardt) instead of being sampled by MCMC;
- families are weighted by their Akaike weights (AICc, for the few points of a young
  curve) instead of by sampled combination weights;
- each family's predictive is a normal whose variance adds the residual variance, the
  delta-method variance of the extrapolated value and (KAPPA times) the square of the
  change the family still predicts: a smooth curve's residuals are tiny, so without that
  last term the mixture is sure of an extrapolation that is often wrong (recorded MLP
  curves: the final loss fell below the predicted 5% quantile in about half the cases;
  with it, in 2.5-6.5%: bench/curve_stop.py).

Every family is f(x) = c + a * g(x; theta) with a >= 0 and g falling in x, where x is the
step divided by the last fitted step (so the fit does not depend on the step's unit).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

MAX_POINTS = 64   # a longer curve is thinned to this many points: bounded work per fit
KAPPA = 1.0       # the change a family still predicts is uncertain by this multiple of itself
_EXACT = 1e-6     # residuals below this fraction of the curve's spread count as exact


@dataclass(frozen=True)
class Family:
    name: str
    shape: Callable[..., np.ndarray]   # g(x, *theta), falling in x; broadcasts over theta
    low: tuple[float, ...]             # bounds of theta
    high: tuple[float, ...]
    starts: tuple[np.ndarray, ...]     # theta values tried before the least-squares fit

    @property
    def n_params(self) -> int:
        return 2 + len(self.low)

    def __call__(self, x: np.ndarray, p: np.ndarray) -> np.ndarray:
        return p[0] + p[1] * self.shape(x, *p[2:])


def _grid(*axes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every combination of the axes' values, each as a column (broadcasts against x)."""
    return tuple(m.reshape(-1, 1) for m in np.meshgrid(*axes, indexing="ij"))


FAMILIES: tuple[Family, ...] = (
    Family("pow3", lambda x, b: x ** -b, (1e-3,), (4.0,), _grid(np.geomspace(0.02, 3.0, 32))),
    Family("exp3", lambda x, b: np.exp(-b * x), (1e-3,), (200.0,), _grid(np.geomspace(0.1, 150.0, 32))),
    Family("loglinear", lambda x: -np.log(x), (), (), ()),
    Family("janoschek", lambda x, b, d: np.exp(-b * x ** d), (1e-3, 0.1), (1e3, 4.0),
           _grid(np.geomspace(0.1, 300.0, 12), np.geomspace(0.2, 3.0, 8))),
    Family("mmf", lambda x, b, d: 1.0 / (1.0 + (b * x) ** d), (1e-2, 0.1), (1e3, 4.0),
           _grid(np.geomspace(0.1, 300.0, 12), np.geomspace(0.2, 3.0, 8))),
)
# A family is fitted to at least n_params + 2 points (AICc needs them); a fit needs two families.
MIN_POINTS = sorted(f.n_params for f in FAMILIES)[1] + 2


@dataclass(frozen=True)
class _Fit:
    family: Family
    params: np.ndarray
    cov: np.ndarray        # covariance of params (delta method)
    noise: float           # residual variance
    aicc: float


class CurveFit:
    """The ensemble fitted to one curve; predictions at any later step."""

    def __init__(self, fits: Sequence[_Fit], last_step: float, offset: float, scale: float):
        self._fits = fits
        self._last_step, self._offset, self._scale = last_step, offset, scale
        best = min(f.aicc for f in fits)
        w = np.array([math.exp(-0.5 * (f.aicc - best)) for f in fits])
        self._weights = w / w.sum()

    @property
    def weights(self) -> dict[str, float]:
        return {f.family.name: float(w) for f, w in zip(self._fits, self._weights)}

    def _components(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        """Each family's predictive mean and standard deviation at `step`, in loss units."""
        x = np.array([step / self._last_step, 1.0])   # the target and the last fitted step
        means, sds = np.empty(len(self._fits)), np.empty(len(self._fits))
        for i, f in enumerate(self._fits):
            at_step, at_last = f.family(x, f.params)
            grad = _jacobian(f.family, x[:1], f.params)[0]
            spread = float(grad @ f.cov @ grad) + (KAPPA * (at_step - at_last)) ** 2
            means[i], sds[i] = at_step, math.sqrt(f.noise + max(spread, 0.0))
        return self._offset + self._scale * means, self._scale * np.maximum(sds, _EXACT)

    def mean(self, step: float) -> float:
        """The mixture's expected loss at `step`."""
        means, _ = self._components(step)
        return float(self._weights @ means)

    def prob_below(self, value: float, step: float) -> float:
        """P(loss at `step` < value) under the mixture."""
        from scipy.special import ndtr   # scipy loads at the first fit, not with the schedulers

        means, sds = self._components(step)
        return float(self._weights @ ndtr((value - means) / sds))


def fit_curve(steps: Sequence[float], losses: Sequence[float]) -> CurveFit | None:
    """The ensemble fitted to (step, loss) points in step order; None with fewer than
    MIN_POINTS usable points (finite loss, step above 0)."""
    x, y = np.asarray(steps, dtype=float), np.asarray(losses, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    if len(x) > MAX_POINTS:
        pick = np.unique(np.round(np.linspace(0, len(x) - 1, MAX_POINTS)).astype(int))
        x, y = x[pick], y[pick]
    if len(x) < MIN_POINTS:
        return None
    offset = float(y.mean())
    scale = max(float(y.std()), 1e-12 * max(1.0, abs(offset)))   # a flat curve keeps a unit
    last = float(x[-1])
    xn, yn = x / last, (y - offset) / scale
    fits = [_fit_family(f, xn, yn) for f in FAMILIES if len(xn) >= f.n_params + 2]
    return CurveFit(fits, last, offset, scale)


class Curve:
    """A trial's reported (step, loss) points, in step order."""

    __slots__ = ("steps", "losses")

    def __init__(self):
        self.steps: list[float] = []
        self.losses: list[float] = []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: float, loss: float) -> bool:
        """Keep a new point; False for a step not after the last one (a segment restarted
        from an earlier checkpoint reports steps again: no news)."""
        if self.steps and step <= self.steps[-1]:
            return False
        self.steps.append(float(step))
        self.losses.append(float(loss))
        return True

    def fit(self, up_to: float = math.inf) -> CurveFit | None:
        """The ensemble fitted to the points at steps up to `up_to`."""
        n = bisect.bisect_right(self.steps, up_to)
        return fit_curve(self.steps[:n], self.losses[:n])


def _fit_family(family: Family, x: np.ndarray, y: np.ndarray) -> _Fit:
    from scipy.optimize import least_squares   # scipy loads at the first fit, not with the schedulers
    from scipy.special import expit, logit

    n, k = len(x), family.n_params
    theta = _best_start(family, x, y)
    if family.low:
        # Variable projection: least squares over theta alone (c and a follow in closed
        # form), theta kept inside its bounds by a logistic map on the log scale.
        low, span = np.log(family.low), np.log(np.divide(family.high, family.low))

        def bounded(u: np.ndarray) -> np.ndarray:
            return np.exp(low + span * expit(u))

        u = least_squares(lambda u: _linear_fit(family.shape(x, *bounded(u))[None, :], y)[2][0],
                          logit((np.log(theta) - low) / span), method="lm", xtol=1e-6, ftol=1e-6,
                          max_nfev=30 * k).x
        theta = bounded(u)
    c, a, residuals = _linear_fit(family.shape(x, *theta)[None, :], y)
    params = np.array([c[0], a[0], *theta])
    rss = max(float(np.sum(residuals ** 2)), n * _EXACT ** 2)
    noise = rss / (n - k)
    jac = _jacobian(family, x, params)
    cov = noise * np.linalg.pinv(jac.T @ jac, rcond=1e-10)
    aicc = n * math.log(rss / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)
    return _Fit(family, params, cov, noise, aicc)


def _best_start(family: Family, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The theta of the grid point that fits best."""
    if not family.low:
        return np.empty(0)
    residuals = _linear_fit(family.shape(x, *family.starts), y)[2]
    i = int(np.argmin(np.sum(residuals * residuals, axis=1)))
    return np.array([t[i, 0] for t in family.starts])


def _linear_fit(g: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """c, a and the residuals of y ~ c + a * g for each row of g, with a >= 0 (a curve
    that rises is fitted by a flat line). y is centred (fit_curve makes it so)."""
    g_mean = g.sum(axis=1) / g.shape[1]
    gc = g - g_mean[:, None]
    a = np.maximum((gc @ y) / np.maximum(np.einsum("ij,ij->i", gc, gc), 1e-300), 0.0)
    return -a * g_mean, a, y - a[:, None] * gc


def _jacobian(family: Family, x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """d family(x, p) / dp by central differences, shape (len(x), len(p))."""
    h = 1e-6 * (1.0 + np.abs(p))
    cols = []
    for j in range(len(p)):
        up, down = p.copy(), p.copy()
        up[j] += h[j]
        down[j] -= h[j]
        if j >= 2:   # keep theta inside its bounds (a shape may be undefined outside)
            up[j] = min(up[j], family.high[j - 2])
            down[j] = max(down[j], family.low[j - 2])
        cols.append((family(x, up) - family(x, down)) / (up[j] - down[j]))
    return np.stack(cols, axis=1)
