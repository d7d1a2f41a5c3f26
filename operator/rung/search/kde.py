"""BOHB's model ("tpe" in manifests): per-budget KDEs of good and bad configurations.

Falkner et al. 2018, Algorithm 2: with probability randomFraction a random config;
otherwise fit l (the best topPercent) and g (the rest) on the largest budget that has
at least minPoints + 2 observations, draw numSamples candidates from a widened l and
return the one maximising l(x)/g(x).

Differences from the paper, as in HpBandSter:
- the widened l' of the paper widens only the Gaussian kernels; a categorical dimension
  keeps its centre's level with probability 1 - lambda, lambda the model's own bandwidth.

Differences from HpBandSter, on purpose:
- scores are computed in log space and every kernel value is bounded away from zero, so
  a categorical level that was never observed gives a finite score (HpBandSter: inf/NaN);
- the Gaussian kernels are truncated to [0, 1] and normalised there, so points near a
  bound are not penalised for mass that falls outside the space;
- int/ordinal candidates are snapped to the value they decode to before scoring, so the
  score is that of the configuration actually returned.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from rung.search._common import setting
from rung.search.base import Observation, Sampler
from rung.space import Param

_LOG_2PI = math.log(2 * math.pi)


class KDESampler(Sampler):
    SETTINGS = {
        "randomFraction": 1 / 3,
        "topPercent": 15,
        "numSamples": 64,
        "bandwidthFactor": 3,
        "minBandwidth": 1e-3,
        "minPoints": None,  # None: number of dimensions + 1
    }

    def __init__(self, space, seed=0, **settings):
        super().__init__(space, seed, **settings)
        s = self.settings
        self.random_fraction = setting(s, "randomFraction", float, 0.0, 1.0)
        self.top_percent = setting(s, "topPercent", float, 0.0, 100.0, low_open=True)
        self.num_samples = setting(s, "numSamples", int, 1)
        self.bandwidth_factor = setting(s, "bandwidthFactor", float, 0.0, low_open=True)
        # A zero bandwidth would make kernels vanish (log 0); keep a tiny positive floor.
        self.min_bandwidth = max(setting(s, "minBandwidth", float, 0.0), 1e-12)
        self.min_points = len(space) + 1 if s["minPoints"] is None else setting(s, "minPoints", int, 1)

        cat = space.categorical
        card = space.cardinality
        self._num = np.flatnonzero(~cat)
        # Single-choice categoricals always match: they carry no information, leave them out.
        self._cat = np.flatnonzero(cat & (card > 1))
        self._card = card[self._cat]
        # int/ordinal dims are snapped to the value they decode to (floats need not be).
        self._snap = [j for j in self._num if space.params[j].kind != "float"]
        self._reset()

    # ---- cache of encoded observations, per budget ----------------------------------
    def _reset(self) -> None:
        self._stores: dict[float, _Store] = {}
        self._seen = 0
        self._head: Observation | None = None
        self._tail: Observation | None = None
        self._generation = getattr(self, "_generation", -1) + 1
        self._model_key: tuple | None = None
        self._model: tuple[_KDE, _KDE] | None = None

    def _sync(self, observations: Sequence[Observation]) -> None:
        """Bring the cache up to date: encode only the new tail of an append-only list.

        A list that is shorter, or whose first or last-seen element changed, is a
        different history: rebuild from scratch.
        """
        k = self._seen
        if k and (len(observations) < k or not _same(observations[0], self._head)
                  or not _same(observations[k - 1], self._tail)):
            self._reset()
            k = 0
        n = len(observations)
        if n == k:
            return
        d = len(self.space)
        for o in observations[k:]:
            x = self.space.encode(o.config)
            x[self._num] = np.clip(x[self._num], 0.0, 1.0)
            loss = math.inf if math.isnan(o.loss) else float(o.loss)
            store = self._stores.get(o.budget)
            if store is None:
                store = self._stores[o.budget] = _Store(d)
            store.append(x, loss, o.trial)
        self._seen, self._head, self._tail = n, observations[0], observations[n - 1]

    def model_budget(self, observations: Sequence[Observation]) -> float | None:
        """The largest budget with at least minPoints + 2 observations (None: no model yet)."""
        self._sync(observations)
        need = self.min_points + 2
        budgets = [b for b, st in self._stores.items() if st.n >= need]
        return max(budgets) if budgets else None

    def split_sizes(self, n: int) -> tuple[int, int]:
        """(n_good, n_bad) for n observations on the model budget; they overlap when n is small."""
        n_good = max(self.min_points, math.floor(self.top_percent * n / 100))
        return n_good, max(self.min_points, n - n_good)

    # ---- proposal ------------------------------------------------------------------
    def propose(self, index, observations):
        rng = self.rng(index)
        # Always draw the coin first, so the stream layout does not depend on the outcome.
        if rng.random() < self.random_fraction:
            return self.space.sample(rng)
        budget = self.model_budget(observations)
        if budget is None:
            return self.space.sample(rng)
        good, bad = self._fit(budget)
        x = good.sample(rng, self.num_samples, self.bandwidth_factor)
        self._snap_values(x)
        score = good.logpdf(x) - bad.logpdf(x)
        return self.space.decode(x[int(np.argmax(score))])

    def _fit(self, budget: float) -> tuple["_KDE", "_KDE"]:
        store = self._stores[budget]
        key = (self._generation, budget, store.n)
        if key != self._model_key:  # several asks between tells reuse one fit
            n = store.n
            # Sort by (loss, trial): ties split the same way whatever the list order.
            order = np.lexsort((store.trial[:n], store.loss[:n]))
            n_good, n_bad = self.split_sizes(n)
            X = store.X[:n]
            d = len(self.space)
            self._model = (self._kde(X[order[:n_good]], d), self._kde(X[order[n - n_bad:]], d))
            self._model_key = key
        return self._model

    def _kde(self, data: np.ndarray, d: int) -> "_KDE":
        return _KDE(data, self._num, self._cat, self._card, d, self.min_bandwidth)

    def _snap_values(self, x: np.ndarray) -> None:
        for j in self._snap:
            x[:, j] = snap(self.space.params[j], x[:, j])


def snap(p: Param, u: np.ndarray) -> np.ndarray:
    """Vectorised p.encode(p.decode(u)) for an int or ordinal parameter."""
    lo, hi = p._interval()  # the same cells Param.decode uses
    u = np.clip(u, 0.0, 1.0)
    if p.kind == "ordinal":
        level = np.clip(np.round(lo + u * (hi - lo)), 0, p.cardinality - 1)
        return (level - lo) / (hi - lo)
    if p.log:
        a, b = math.log(lo), math.log(hi)
        v = np.clip(np.round(np.exp(a + u * (b - a))), p.low, p.high)
        return (np.log(v) - a) / (b - a)
    v = np.clip(np.round(lo + u * (hi - lo)), p.low, p.high)
    return (v - lo) / (hi - lo)


def _one_blas_thread():
    """Run the (64 x ~20) @ (~20 x n) product on the calling thread.

    A second BLAS thread saves ~0.2 ms on an idle machine, but on a busy one its spin-wait
    starves the caller (measured here, 5,000 observations: p50 36 ms with threads, 8 without).
    """
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        except ImportError:  # optional: without it the product just uses BLAS's default
            _BLAS = False
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()


_BLAS = None


def _same(a: Observation, b: Observation | None) -> bool:
    return a is b or a == b


class _Store:
    """Append-only encoded observations of one budget (arrays grow by doubling)."""

    def __init__(self, d: int):
        self.n = 0
        self.X = np.empty((16, d))
        self.loss = np.empty(16)
        self.trial = np.empty(16, dtype=np.int64)

    def append(self, x: np.ndarray, loss: float, trial: int) -> None:
        if self.n == len(self.loss):
            cap = 2 * self.n
            self.X = np.resize(self.X, (cap, self.X.shape[1]))
            self.loss = np.resize(self.loss, cap)
            self.trial = np.resize(self.trial, cap)
        self.X[self.n], self.loss[self.n], self.trial[self.n] = x, loss, trial
        self.n += 1


class _KDE:
    """Product-kernel KDE in encoded space.

    Numeric/ordinal dims: Gaussian kernels truncated to [0, 1]; categorical dims:
    Aitchison-Aitken kernels. Bandwidths: normal reference rule, 1.06 std n^(-1/(d+4)).
    The log kernel of candidate x and data point p is written as a dot product
    (the squared distance expanded; a categorical match as a one-hot product), so scoring
    m candidates against n points is one (m, D) @ (D, n) product plus a logsumexp.
    """

    def __init__(self, data, num, cat, card, d, min_bw):
        n = len(data)
        self.num, self.cat, self.card = num, cat, card
        self.data = data
        bw = 1.06 * data.std(axis=0) * n ** (-1.0 / (d + 4))
        self.h = np.maximum(bw[num], min_bw)
        # lambda <= (c-1)/c keeps a match at least as likely as any other level.
        self.lam = np.clip(bw[cat], min_bw, (card - 1) / card)
        self.offsets = np.concatenate([[0], np.cumsum(card)[:-1]]).astype(int)
        self.width = int(card.sum())

        # Gaussian part, coordinates centred and scaled by the bandwidth.
        p = data[:, num]
        z = (p - 0.5) / self.h
        # Truncation to [0, 1]: the mass is in [~0.5, 1], so float32 (4x faster ndtr) is plenty.
        p32, h32 = p.astype(np.float32), self.h.astype(np.float32)
        log_mass = np.log(ndtr((1.0 - p32) / h32) - ndtr(-p32 / h32)).astype(float)
        self.bias = -0.5 * np.einsum("ij,ij->i", z, z) - log_mass.sum(axis=1)

        # Categorical part: log k = log_other + delta * [match].
        log_match = np.log1p(-self.lam)
        log_other = np.log(self.lam / (card - 1))
        onehot = np.zeros((n, self.width))
        for k, j in enumerate(cat):
            onehot[np.arange(n), self.offsets[k] + data[:, j].astype(int)] = log_match[k] - log_other[k]

        self.G = np.hstack([z, onehot])
        self.const = (-np.log(self.h).sum() - 0.5 * len(num) * _LOG_2PI + log_other.sum() - math.log(n))

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        zx = (x[:, self.num] - 0.5) / self.h
        F = np.hstack([zx, self._onehot(x)])
        with _one_blas_thread():
            M = F @ self.G.T
        M += self.bias
        top = M.max(axis=1)
        M -= top[:, None]
        np.exp(M, out=M)
        return top + np.log(M.sum(axis=1)) - 0.5 * np.einsum("ij,ij->i", zx, zx) + self.const

    def _onehot(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.width))
        rows = np.arange(len(x))
        for k, j in enumerate(self.cat):
            level = np.clip(x[:, j].astype(int), 0, self.card[k] - 1)
            out[rows, self.offsets[k] + level] = 1.0
        return out

    def sample(self, rng: np.random.Generator, m: int, factor: float) -> np.ndarray:
        """m draws from this KDE with every numeric bandwidth multiplied by `factor` (l' in the paper)."""
        x = self.data[rng.integers(len(self.data), size=m)].copy()
        mu = x[:, self.num]
        h = self.h * factor
        # Truncated normal by inverting the CDF between the bounds' CDF values.
        lo, hi = ndtr(-mu / h), ndtr((1.0 - mu) / h)
        u = lo + rng.random(mu.shape) * (hi - lo)
        x[:, self.num] = np.clip(mu + h * ndtri(u), 0.0, 1.0)
        # Categorical: keep the centre's level with probability 1 - lambda, else a uniform
        # level. Not widened by `factor` (as HpBandSter): widening redraws nearly every
        # binary dimension uniformly while the model has few points.
        redraw = rng.random((m, len(self.cat))) < self.lam
        levels = np.floor(rng.random((m, len(self.cat))) * self.card).astype(int)
        for k, j in enumerate(self.cat):
            x[redraw[:, k], j] = levels[redraw[:, k], k]
        return x
