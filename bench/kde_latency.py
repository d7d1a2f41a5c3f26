"""Latency of one KDE ("tpe") proposal with 5,000 observations over 10 dimensions.

Measures, in one run on this machine:
- rung refit:  a new observation is told before every propose() (the async case: every
  ask follows a tell, so the KDEs are refit each time);
- rung cached: propose() repeatedly on the same observations (several asks between
  tells, e.g. a Hyperband bracket filling up: the fit is reused);
- optuna (if importable): TPESampler's time to sample one new trial, i.e. study.ask()
  with the same 10 distributions on a study holding the same 5,000 completed trials
  (added with create_trial/add_trials, not optimised), a tell after every ask so that
  it refits each time too. In-memory storage, n_ei_candidates=64 (= our numSamples),
  otherwise Optuna's defaults (multivariate TPE in Optuna 5).

Run: python bench/kde_latency.py   (about 30-60 s on 2 cores)
"""

from __future__ import annotations

import math
import os
import platform
import time

import numpy as np

from rung.search import KDESampler, Observation
from rung.space import Param, SearchSpace

N_OBS = 5000
N_CALLS = 200
N_OPTUNA_CALLS = 40  # Optuna is much slower per call; 40 calls give a stable median
SEED = 0

SPACE = SearchSpace([
    *(Param(f"x{i}", "float", 0.0, 1.0) for i in range(5)),
    Param("lr", "float", 1e-5, 1.0, log=True),
    Param("width", "int", 1, 1024, log=True),
    Param("depth", "int", 1, 10),
    Param("act", "categorical", choices=("relu", "gelu", "tanh", "silu")),
    Param("opt", "categorical", choices=("sgd", "adam", "adamw")),
])


def loss(c: dict) -> float:
    """A smooth bowl in the floats plus terms for the others (any cheap function would do)."""
    return (sum((c[f"x{i}"] - 0.3) ** 2 for i in range(5))
            + (math.log10(c["lr"]) + 3) ** 2 / 10 + abs(math.log2(c["width"]) - 7) / 10
            + abs(c["depth"] - 4) / 20 + (c["act"] != "gelu") * 0.1 + (c["opt"] != "adamw") * 0.1)


def pct(ts: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.array(ts) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def bench_rung(configs: list[dict], extra: list[dict]) -> tuple[float, list[float], list[float]]:
    obs = [Observation(t, c, 1.0, loss(c)) for t, c in enumerate(configs)]
    sampler = KDESampler(SPACE, seed=SEED, randomFraction=0.0)  # time the model path only
    t = time.perf_counter()
    sampler.propose(0, obs)  # first call encodes all 5,000 (once per scheduler lifetime)
    first_ms = (time.perf_counter() - t) * 1000
    refit = []
    for i, c in enumerate(extra):
        obs.append(Observation(N_OBS + i, c, 1.0, loss(c)))
        t = time.perf_counter()
        sampler.propose(N_OBS + i, obs)
        refit.append(time.perf_counter() - t)
    cached = []
    for i in range(N_CALLS):
        t = time.perf_counter()
        sampler.propose(10 * N_OBS + i, obs)
        cached.append(time.perf_counter() - t)
    return first_ms, refit, cached


def bench_optuna(configs: list[dict]) -> tuple[list[float], str] | None:
    try:
        import optuna
    except ImportError:
        return None
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {}
    for p in SPACE.params:
        if p.kind == "float":
            dists[p.name] = FloatDistribution(p.low, p.high, log=p.log)
        elif p.kind == "int":
            dists[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            dists[p.name] = CategoricalDistribution(p.choices)
    sampler = optuna.samplers.TPESampler(seed=SEED, n_ei_candidates=64)
    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.add_trials([optuna.trial.create_trial(params=c, distributions=dists, value=loss(c))
                      for c in configs])
    times = []
    for _ in range(N_OPTUNA_CALLS):
        t = time.perf_counter()
        trial = study.ask(dists)  # samples every parameter of the new trial
        times.append(time.perf_counter() - t)
        study.tell(trial, loss(trial.params))
    return times, optuna.__version__


def main() -> None:
    rng = np.random.default_rng(SEED)
    configs = [SPACE.sample(rng) for _ in range(N_OBS)]
    extra = [SPACE.sample(rng) for _ in range(N_CALLS)]

    first_ms, refit, cached = bench_rung(configs, extra)
    rows = [("rung KDESampler, refit per call", len(refit), *pct(refit)),
            ("rung KDESampler, cached fit", len(cached), *pct(cached))]
    peer = bench_optuna(configs)
    if peer is not None:
        times, version = peer
        rows.append((f"optuna {version} TPESampler (ask, refit per call)", len(times), *pct(times)))

    print(f"# KDE proposal latency: {N_OBS} observations, 10 dims (5 float, log float, "
          f"log int, int, 2 categorical), one budget; {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    print()
    print("| sampler | calls | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for name, n, p50, p95, p99 in rows:
        print(f"| {name} | {n} | {p50:.2f} | {p95:.2f} | {p99:.2f} |")
    print()
    print(f"rung first call (encodes all {N_OBS} observations, once per sampler): "
          f"{first_ms:.0f} ms")
    if peer is not None:
        print(f"p50 ratio optuna / rung (both refit per call): {rows[2][2] / rows[0][2]:.1f}x")
    else:
        print("\n(optuna not importable: no peer row)")


if __name__ == "__main__":
    main()
