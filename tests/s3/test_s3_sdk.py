"""The trial SDK end to end on s3://: count_steps as a real process, resumed from MinIO."""

import json
import os
import subprocess
import sys

import pytest
from rung.storage import open_store
from rung.trial import contract as C

pytestmark = pytest.mark.s3

RUNG_VARS = [v for k, v in vars(C).items() if k.startswith("ENV_")]


def run(tmp_path, uri, budget, aws, extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in RUNG_VARS and not k.startswith(("AWS_", "RUNG_S3_"))}
    result = tmp_path / "result.json"
    result.unlink(missing_ok=True)
    env.update(aws)
    env.update({C.ENV_PARAMS: json.dumps({"x": 0.5}), C.ENV_BUDGET: str(budget),
                C.ENV_CHECKPOINT_URI: uri, C.ENV_TRIAL: "st-0", C.ENV_RESULT_FILE: str(result),
                "COUNT_STEPS_LOG": str(tmp_path / "steps.log")})
    env.update(extra or {})
    proc = subprocess.run([sys.executable, "-m", "rung_trainables.count_steps"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    reports = [json.loads(l[len(C.REPORT_PREFIX):])["step"] for l in proc.stdout.splitlines()
               if l.startswith(C.REPORT_PREFIX)]
    final = json.loads(result.read_text()) if result.exists() else None
    return proc.returncode, reports, final, proc.stderr


def test_count_steps_resumes_from_s3(tmp_path, root_uri, aws_env):
    uri = f"{root_uri}/ns/st/st-0"
    rc, reports, final, err = run(tmp_path, uri, 3, aws_env)
    assert rc == 0, err
    assert reports == [1, 2, 3]
    rc, reports, final, err = run(tmp_path, uri, 9, aws_env, {C.ENV_CHECKPOINT_EVERY_STEPS: "2"})
    assert rc == 0, err
    assert reports == [4, 5, 6, 7, 8, 9] and final["step"] == 9
    assert open_store(root_uri).list_steps("ns/st/st-0") == [3, 4, 6, 8, 9]
    assert (tmp_path / "steps.log").read_text().split() [1::2] == [str(s) for s in range(1, 10)]


def test_the_trial_aborts_a_cut_off_upload_and_prunes(tmp_path, root_uri, aws_env, cut_off_upload):
    store = open_store(root_uri)
    listed = cut_off_upload(store, "ns/st/st-0/2/state.pkl")  # a killed predecessor's save
    assert listed()
    rc, reports, _, err = run(tmp_path, f"{root_uri}/ns/st/st-0", 5, aws_env,
                              {C.ENV_CHECKPOINT_EVERY_STEPS: "1", C.ENV_KEEP_BEST: "0",
                               C.ENV_OBJECTIVE: "loss"})
    assert rc == 0 and err == "" and reports == [1, 2, 3, 4, 5]
    assert not listed()
    assert store.list_steps("ns/st/st-0") == [5]       # pruned by the trial itself at each save
    manifest = json.loads(store._get("ns/st/st-0/5/MANIFEST.json"))
    assert manifest["metrics"] == {"loss": pytest.approx(0.04 + 1 / 6)}


def test_count_steps_with_wrong_credentials_says_why(tmp_path, root_uri, aws_env):
    rc, reports, final, _ = run(tmp_path, f"{root_uri}/ns/st/st-0", 3,
                                  dict(aws_env, AWS_SECRET_ACCESS_KEY="wrong"))
    assert rc != 0 and reports == []  # fails at load_checkpoint, before training anything
    assert final["error"].startswith("StoreUnavailable: AWS_ACCESS_KEY_ID: ")
    assert "\n" not in final["error"]
