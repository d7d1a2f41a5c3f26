"""The operator at 100 trials at once and 1,000 in all, on simulated GPU nodes (KWOK)
against the real API server, through bench/scale: the functional invariants, not timings."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench/scale"))
import scale  # noqa: E402

pytestmark = pytest.mark.cluster


def test_a_thousand_trials_a_hundred_at_once_all_finish_none_lost_or_duplicated(kubectl, operator, namespace,
                                                                                   tmp_path):
    result = scale.main(["--trials", "1000", "--concurrent", "100", "--namespace", namespace,
                         "--use-running-operator", "--unit-seconds", "0.5", "--timeout", "1200",
                         "--out", str(tmp_path)])
    assert result["phases"] == ["Succeeded"], result
    assert result["trials"] == 1000 and result["trial_phases"] == {"Succeeded": 1000}, result
    assert (result["lost"], result["duplicated"], result["finisher_errors"]) == (0, 0, 0), result
    # ASHA (eta 3, budgets 1..27) promotes about a third at each rung: more segments than trials.
    assert 1000 < result["segments"] < 1600
    # The real scheduler placed them on the simulated nodes only, up to the 100 GPUs at once.
    assert max(s["running"] for s in scale.json.loads((tmp_path / "samples.json").read_text())["samples"]) <= 100
    # Of its finished pods the Study keeps the newest 200 (--keep-finished-pods) and deletes the others.
    def kept():
        pods = kubectl.json("get", "pods", "-n", namespace, "-l", "rung.dev/study")["items"]
        return len([p for p in pods if not p["metadata"].get("deletionTimestamp")])
    kubectl.wait_for(lambda: kept() == 200, 60, f"the Study to keep 200 pods ({result['pods_left']} at its end)")
