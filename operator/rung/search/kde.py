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

Warm start (`warm_start`, priors from rung.warmstart), as the meta-learning TPE of Watanabe
et al. (2023): l and g become weighted mixtures of per-task KDEs. The Study's own l and g
weigh n_good and n_bad (one per observation). Each earlier Study's l and g are fitted on its
own loss ranking, split by the same topPercent (losses of different tasks are not
comparable), and weigh n_good and n_bad times a per-observation weight of
prior.weight x min(1, P / n_m), P = minPoints + 2: an earlier Study counts for at most one
first model's worth of observations, so it gives the start and a long earlier Study cannot
outweigh the new one's own results for long. Its share of the model, about W / (W + n) for
priors of total weight W, shrinks as the Study's own n points on the model budget arrive.
Until the Study has a model of its own, Algorithm 2's rule decides, with the priors'
observations counted by their weights: a model (of the priors alone) once they are worth
at least P observations, sum of weight x n_m >= P, else a random configuration as cold.
So a prior of weight ~0 leaves a cold sampler, before and after the Study's own model.
A prior is uniform in the dimensions it cannot inform (parameters the earlier Study lacked).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from rung.search._common import setting
from rung.search.base import Observation, Sampler
from rung.space import Param, SearchSpace

if TYPE_CHECKING:
    from rung.warmstart import Prior

_LOG_2PI = math.log(2 * math.pi)


def _special():
    """scipy.special, loaded at the first model rather than at start-up (it costs the
    operator half a second before its first decision)."""
    from scipy import special

    return special


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
        self._priors: list[_Prior] = []
        self._priors_worth = 0.0
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
        self._warm_key: tuple | None = None
        self._warm: tuple[_Mixture, _Mixture] | None = None

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
        if budget is None and self._priors_worth < self.min_points + 2:
            return self.space.sample(rng)
        good, bad = self._mix(budget) if self._priors else self._fit(budget)
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

    # ---- warm start ------------------------------------------------------------------
    def warm_start(self, priors: Sequence["Prior"]) -> "KDESampler":
        """Mix earlier Studies' observations into the model (see the module docstring).

        Call it once, before the first propose(): proposals are then a pure function of the
        priors as well. Priors of weight 0 are left out.
        """
        kept = [(prior, model) for prior in priors if (model := self._prior_model(prior)) is not None]
        self._priors = [model for _, model in kept]
        # What the priors are worth in observations, against the minPoints + 2 a model needs.
        self._priors_worth = sum(prior.weight * len(prior.loss) for prior, _ in kept)
        self._warm_key = None
        return self

    def _prior_model(self, prior: "Prior") -> "_Prior | None":
        if prior.X.shape[1] != len(self.space):
            raise ValueError(f"prior has {prior.X.shape[1]} dimensions, the space {len(self.space)}")
        missing = prior.missing
        num, cat = self._num[~missing[self._num]], self._cat[~missing[self._cat]]
        if prior.weight <= 0 or not (len(num) or len(cat)):
            return None
        n = len(prior.loss)
        order = np.lexsort((prior.trial, prior.loss))
        n_good, n_bad = self.split_sizes(n)
        card = self.space.cardinality[cat]
        d = len(self.space) - int(missing.sum())
        uniform = np.flatnonzero(missing)
        good = _KDE(prior.X[order[:n_good]], num, cat, card, d, self.min_bandwidth)
        bad = _KDE(prior.X[order[n - n_bad:]], num, cat, card, d, self.min_bandwidth)
        # Each observation counts for `weight` of an own one, the whole prior for at most one
        # first model's worth (minPoints + 2 observations), whatever the earlier Study's length.
        per_point = prior.weight * min(1.0, (self.min_points + 2) / n)
        log_u = self._log_uniform(uniform)
        return _Prior(_Part(good, per_point * n_good, uniform, log_u), _Part(bad, per_point * n_bad, uniform, log_u))

    def _log_uniform(self, dims: np.ndarray) -> float:
        """log density of the uniform distribution over `dims` (numeric ones have density 1)."""
        return -float(np.log(self.space.cardinality[np.intersect1d(dims, self._cat)]).sum())

    def _mix(self, budget: float | None) -> tuple["_Mixture", "_Mixture"]:
        """l and g with the priors mixed in; `budget` None: the priors' alone (no own model yet)."""
        n = 0 if budget is None else self._stores[budget].n
        key = (self._generation, budget, n)
        if key != self._warm_key:
            good = [p.good for p in self._priors]
            bad = [p.bad for p in self._priors]
            if budget is not None:
                n_good, n_bad = self.split_sizes(n)
                own_good, own_bad = self._fit(budget)
                none = np.empty(0, dtype=int)
                good.insert(0, _Part(own_good, n_good, none, 0.0))
                bad.insert(0, _Part(own_bad, n_bad, none, 0.0))
            self._warm = (_Mixture(good, self.space), _Mixture(bad, self.space))
            self._warm_key = key
        return self._warm

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


@dataclass(frozen=True)
class _Part:
    """One density of a mixture: a KDE, uniform over the dimensions `uniform`, with mixture
    weight `weight`."""

    kde: "_KDE"
    weight: float
    uniform: np.ndarray
    log_uniform: float


@dataclass(frozen=True)
class _Prior:
    """An earlier Study's parts of l and g."""

    good: _Part
    bad: _Part


class _Mixture:
    """A weighted mixture of densities over the encoded space (the warm-started l or g)."""

    def __init__(self, parts: list[_Part], space: SearchSpace):
        self.parts, self.space = parts, space
        weights = np.array([p.weight for p in parts], dtype=float)
        self.log_w = np.log(weights / weights.sum())
        self.cum = np.cumsum(weights) / weights.sum()

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        terms = np.array([lw + p.log_uniform + p.kde.logpdf(x) for lw, p in zip(self.log_w, self.parts)])
        return _special().logsumexp(terms, axis=0)

    def sample(self, rng: np.random.Generator, m: int, factor: float) -> np.ndarray:
        """m draws: each from a part chosen by weight, its uniform dimensions drawn uniformly."""
        which = np.minimum(np.searchsorted(self.cum, rng.random(m), side="right"), len(self.parts) - 1)
        x = np.empty((m, len(self.space)))
        for i, p in enumerate(self.parts):
            rows = np.flatnonzero(which == i)
            if not len(rows):
                continue
            part = p.kde.sample(rng, len(rows), factor)
            if len(p.uniform):
                part[:, p.uniform] = self.space.sample_encoded(rng, len(rows))[:, p.uniform]
            x[rows] = part
        return x


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
        ndtr = _special().ndtr
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
        special = _special()
        lo, hi = special.ndtr(-mu / h), special.ndtr((1.0 - mu) / h)
        u = lo + rng.random(mu.shape) * (hi - lo)
        x[:, self.num] = np.clip(mu + h * special.ndtri(u), 0.0, 1.0)
        # Categorical: keep the centre's level with probability 1 - lambda, else a uniform
        # level. Not widened by `factor` (as HpBandSter): widening redraws nearly every
        # binary dimension uniformly while the model has few points.
        redraw = rng.random((m, len(self.cat))) < self.lam
        levels = np.floor(rng.random((m, len(self.cat))) * self.card).astype(int)
        for k, j in enumerate(self.cat):
            x[redraw[:, k], j] = levels[redraw[:, k], k]
        return x
