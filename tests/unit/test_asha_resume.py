"""Under ASHA, a promoted trial continues from its checkpoint: no step is ever trained twice.

count_steps logs every step it really trains; the log must hold each step of each trial
exactly once, up to the highest rung the trial reached.
"""

from collections import Counter

import pytest
import yaml

from rung.cli import main

pytestmark = pytest.mark.unit


def test_promoted_trials_never_retrain(tmp_path, capsys):
    log = tmp_path / "steps.log"
    manifest = tmp_path / "study.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "rung.dev/v1alpha1", "kind": "Study", "metadata": {"name": "resume"},
        "spec": {
            "objective": {"metric": "loss"},
            "searchSpace": {"x": {"type": "float", "low": 0, "high": 1}},
            "algorithm": {"name": "asha", "seed": 3, "settings": {"reductionFactor": 3}},
            "budget": {"min": 1, "max": 27},
            "limits": {"maxTrials": 27, "parallelism": 2},
            "trial": {"command": ["python", "-m", "rung_trainables.count_steps"],
                      "env": {"COUNT_STEPS_LOG": str(log)}},
        }}))
    assert main(["run", str(manifest), "--quiet", "--results", str(tmp_path / "out")]) == 0
    trained = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    assert set(trained.values()) == {1}, "some step was trained twice"
    reached = {}
    for trial, step in trained:
        reached[trial] = max(reached.get(trial, 0), int(step))
    for trial, top in reached.items():        # each trial trained 1..top, nothing skipped
        assert {int(s) for t, s in trained if t == trial} == set(range(1, top + 1))
    promoted = [t for t, top in reached.items() if top > 1]
    assert len(reached) == 27 and len(promoted) >= 9 and max(reached.values()) == 27
    # total work equals the promotion plan: the sum of the top budget each trial reached
    assert sum(trained.values()) == sum(reached.values())
    capsys.readouterr()
