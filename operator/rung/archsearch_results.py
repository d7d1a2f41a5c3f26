"""An ArchitectureSearch's results folder (`rung run`): beside the Study's records,
  archsearch.json   the ArchitectureSearch as run (marks the folder as a search's)
  genotype.json     the architecture found (normal and reduction cells)
  history.json      per epoch: losses, accuracies, alphas, op weights, ops left per edge
  search.json       wall time, search time, epochs, and the evaluation's test accuracies
all copied from the trial's latest sealed checkpoint; and `rung report` draws
  plots/genotype.png  the cells        plots/history.png  alphas (DARTS) or ops left (ASAP)
"""

from __future__ import annotations

import json
from pathlib import Path

from rung.api import ArchitectureSearch, Study, parse_archsearch
from rung.archsearch import EVALUATION, GENOTYPE, HISTORY, PROGRESS, trial_of
from rung.runtime.folder import write_json_atomic
from rung.storage import split_trial_uri, trial_uri

SEARCH_FILE, SUMMARY = "archsearch.json", "search.json"


def mark(results: Path, search: ArchitectureSearch) -> None:
    doc = search.model_dump(mode="json", by_alias=True, exclude={"status"})
    doc["metadata"] = {"name": search.metadata.name, "namespace": search.metadata.namespace}
    write_json_atomic(results / SEARCH_FILE, doc)


def is_search(results: Path) -> bool:
    return (results / SEARCH_FILE).is_file()


def export(results: Path, study: Study, run_id: str, root: str, elapsed: float) -> list[Path]:
    """Copy the artefacts of the trial's latest checkpoint into the folder; write search.json."""
    store, prefix = split_trial_uri(trial_uri(root, study.metadata.namespace, study.name, run_id, trial_of(study)))
    found = {name: store.load_file(prefix, name) for name in (PROGRESS, GENOTYPE, HISTORY, EVALUATION)}
    if found[GENOTYPE] is None:
        return []
    written = []
    for name in (GENOTYPE, HISTORY):
        if found[name] is not None:
            write_json_atomic(results / name, json.loads(found[name][1]))
            written.append(results / name)
    progress = json.loads(found[PROGRESS][1]) if found[PROGRESS] else {}
    evaluation = json.loads(found[EVALUATION][1]) if found[EVALUATION] else {}
    summary = {"method": progress.get("method"), "epochs": progress.get("epoch"),
               "wall_seconds": elapsed, "search_seconds": progress.get("search_seconds"),
               "val_accuracy": progress.get("val_accuracy"),
               **{k: evaluation.get(k) for k in ("test_accuracy", "random_test_accuracy", "parameters",
                                                 "random_parameters")}}
    write_json_atomic(results / SUMMARY, summary)
    return written + [results / SUMMARY]


def summary_lines(results: Path) -> list[str]:
    """What `rung run` and `rung report` print about a finished search."""
    try:
        s = json.loads((results / SUMMARY).read_text())
    except (OSError, ValueError):
        return []
    lines = [f"search: {s.get('method')}, {s.get('epochs')} epochs, {s.get('search_seconds') or 0:.1f} s searching "
             f"({s.get('wall_seconds') or 0:.1f} s wall); genotype: {results / GENOTYPE}"]
    if s.get("test_accuracy") is not None:
        lines.append(f"evaluation: searched cell {s['test_accuracy']:.4f} test accuracy, "
                     f"random cell {s['random_test_accuracy']:.4f}")
    return lines


def write_plots(results: Path, out: Path) -> list[Path]:
    from rung.nas_plots import plot_genotype, plot_history

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if (results / GENOTYPE).is_file():
        paths.append(plot_genotype(json.loads((results / GENOTYPE).read_text()), out / "genotype.png"))
    if (results / HISTORY).is_file():
        spec = parse_archsearch(json.loads((results / SEARCH_FILE).read_text()), str(results / SEARCH_FILE)).spec
        ops = spec.search_settings()["ops"]   # the columns of the history's weights
        paths.append(plot_history(json.loads((results / HISTORY).read_text()), spec.method, ops, out / "history.png"))
    return paths
