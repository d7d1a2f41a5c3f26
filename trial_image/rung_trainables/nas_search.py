"""An architecture search (DARTS or ASAP, rung.nas) as a checkpointed trial: the trainable an
ArchitectureSearch runs (rung.archsearch). Needs the optional extra: pip install 'rung[torch]'.

Params (rung.archsearch.search_params): method, seed, settings (JSON: rung.nas settings but
epochs), evaluation (JSON: epochs, cells, channels, batch_size, lr). budget = search epochs.

Every epoch: a report (val_accuracy, val_loss, train_loss, ops_left, search_seconds) and a
checkpoint holding the search's whole state plus artefacts others read without unpickling
it (rung.archsearch.ARTEFACTS): progress.json (epoch, metrics, genotype, ops left per edge),
genotype.json and history.json (alphas, op weights and ops left per epoch). A restarted
attempt resumes from the latest checkpoint and computes what an uninterrupted one would (on
CPU: one thread, fixed). Once the search is done (its epochs, or ASAP decided): the
evaluation stage trains the derived network and a random one from the same space from
scratch, the same way; the last report, at step = budget, carries both test accuracies, and
the last checkpoint adds weights.pt (the search network's state_dict) and evaluation.json.
"""

from __future__ import annotations

import io
import json
import math
import sys

from rung import trial
from rung.archsearch import EVALUATION, GENOTYPE, HISTORY, PROGRESS, WEIGHTS
from rung.errors import InputError

EVALUATION_KEYS = ("epochs", "cells", "channels", "batch_size", "lr")


def config() -> dict:
    p = trial.params()
    try:
        settings, evaluation = json.loads(p["settings"]), json.loads(p["evaluation"])
        method, seed = str(p["method"]), int(p["seed"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError("params", f"are not an ArchitectureSearch's ({type(e).__name__}: {e})",
                         "run it through an ArchitectureSearch (rung.archsearch.search_params)") from None
    unknown = sorted(set(evaluation) - set(EVALUATION_KEYS))
    if not isinstance(settings, dict) or unknown:
        raise InputError("params evaluation", f"unknown keys {unknown}", f"use {', '.join(EVALUATION_KEYS)}")
    settings["epochs"] = max(1, math.ceil(trial.budget() - 1e-9))
    return {"method": method, "seed": seed, "settings": settings, "evaluation": evaluation}


def artefacts(search, progress: dict, resumed_from: int) -> dict[str, bytes]:
    status = {**progress, "epochs": search.settings["epochs"], "resumed_from": resumed_from}
    return {PROGRESS: _json(status), GENOTYPE: _json(search.genotype()), HISTORY: _json(search.history())}


def evaluation_stage(search, c: dict) -> dict:
    """The derived network and a random one, trained from scratch the same way."""
    from rung.nas import evaluate, random_genotype

    e = c["evaluation"]
    if e["epochs"] < 1:
        return {}
    train = {"epochs": e["epochs"], "cells": e["cells"], "channels": e["channels"], "batch_size": e["batch_size"],
             "lr": e["lr"], "seed": c["seed"], "device": search.device}
    baseline = random_genotype(search.settings["ops"], search.settings["nodes"], seed=c["seed"])
    derived, random = evaluate(search.genotype(), search.data, **train), evaluate(baseline, search.data, **train)
    return {"test_accuracy": derived["test_accuracy"], "parameters": derived["parameters"],
            "seconds": derived["seconds"], "random_test_accuracy": random["test_accuracy"],
            "random_parameters": random["parameters"], "random_genotype": baseline}


def run(c: dict) -> None:
    import torch

    from rung.nas import Search
    from rung_trainables._torch import cpu_copy

    cuda = trial.gpus() > 0 and torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)   # a fixed count: a resumed search sums exactly as an uninterrupted one
    search = Search(c["method"], c["settings"], c["seed"], device="cuda" if cuda else "cpu")
    state, evaluation = trial.load_checkpoint(), None
    if state is not None:
        search.load_state_dict(state["search"])
        evaluation = state.get("evaluation")
    resumed_from = search.epoch
    print(f"nas_search: {c['method']}, seed {c['seed']}: " +
          (f"resumed from epoch {resumed_from}" if resumed_from else "starting"), file=sys.stderr, flush=True)

    def snapshot() -> dict:
        return {"search": cpu_copy(search.state_dict()), "evaluation": evaluation}

    progress = None
    while not search.done:
        progress = search.run_epoch()
        if not search.done:   # the last epoch's report waits for the evaluation (step = budget)
            trial.report(progress["epoch"], **_metrics(progress))
        trial.save_checkpoint(snapshot(), progress["epoch"], artefacts(search, progress, resumed_from))
    if progress is None:   # resumed a finished search: its last epoch's progress again
        progress = {**search.history()[-1], "method": search.method, "genotype": search.genotype(),
                    "done": True, "search_seconds": search.seconds}
    if evaluation is None:
        evaluation = evaluation_stage(search, c)
    # ASAP may decide before its epochs: its budget is then reached all the same.
    final = max(search.settings["epochs"], search.epoch)
    scores = {k: evaluation[k] for k in ("test_accuracy", "random_test_accuracy") if k in evaluation}
    trial.report(final, **_metrics(progress), epochs_run=search.epoch, **scores)
    weights = io.BytesIO()
    torch.save(cpu_copy(search.model.state_dict()), weights)
    trial.save_checkpoint(snapshot(), final, {**artefacts(search, progress, resumed_from),
                                              WEIGHTS: weights.getvalue(), EVALUATION: _json(evaluation)})


def _metrics(progress: dict) -> dict:
    """The numbers of an epoch's progress, as report() takes them (the objective first)."""
    ops_left = progress.get("ops_left") or {}
    return {"val_accuracy": progress["val_accuracy"], "val_loss": progress["val_loss"],
            "train_loss": progress["train_loss"], "search_seconds": progress["search_seconds"],
            "ops_left": sum(sum(edges) for edges in ops_left.values())}


def _json(doc) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def main() -> None:
    c = config()  # first: the SDK then records any error in the result file
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.tracebacklimit = 0  # one line on stderr: no traceback for a missing install
        raise InputError("rung_trainables.nas_search", "needs torch, which is not installed",
                         "pip install 'rung[torch]'") from None
    run(c)


if __name__ == "__main__":
    main()
