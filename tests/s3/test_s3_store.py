"""The s3:// store against a real MinIO: the file store's behaviour (the same scenarios
run on both, through the store primitives, so any difference shows as one failing param),
multipart, retention, the one-line errors, and a store that goes away and comes back."""

import json
import time
import uuid
from urllib.parse import unquote

import pytest
from rung.errors import InputError
from rung.storage import (
    S3Store,
    StoreUnavailable,
    open_store,
    split_trial_uri,
    trial_uri,
)

pytestmark = pytest.mark.s3

P = "ns/study/r1/study-0"


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    if request.param == "file":
        return open_store(tmp_path.as_uri())
    return open_store(request.getfixturevalue("root_uri"))


def obj(step, name):
    return f"{P}/{step}/{name}"


# --- the file store's scenarios ------------------------------------------------------------

def test_save_seals_with_manifest_and_loads(store):
    store.save(P, 3, {"state.pkl": b"abc", "extra.bin": b""})
    manifest = json.loads(store._get(obj(3, "MANIFEST.json")))
    assert manifest["step"] == 3 and manifest["files"]["state.pkl"]["size"] == 3
    assert store.load_latest(P) == (3, {"state.pkl": b"abc", "extra.bin": b""})
    assert sorted(store._children(f"{P}/3")) == []  # files only, no stray "folders"


def test_highest_step_wins_numerically_not_lexically(store):
    for step in (1, 3, 9, 27, 2.5):
        store.save(P, step, {"s": str(step).encode()})
    assert store.list_steps(P) == [1, 2.5, 3, 9, 27]
    assert store.load_latest(P)[0] == 27


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_corrupt_object_falls_back_to_previous_sealed(store, damage):
    store.save(P, 1, {"s": b"one"})
    store.save(P, 3, {"s": b"three"})
    if damage == "remove":
        store._remove(obj(3, "s"))
    else:
        store._put(obj(3, "s"), b"thrEe" if damage == "flip" else b"thr")
    assert store.load_latest(P) == (1, {"s": b"one"})


def test_unsealed_and_unmanifested_are_ignored(store):
    store.save(P, 1, {"s": b"one"})
    store._put(obj(9, "s"), b"half-written")  # a save cut short before its manifest
    store.save(P, 3, {"s": b"three"})
    store._remove(obj(3, "MANIFEST.json"))
    assert store.list_steps(P) == [1]
    assert store.load_latest(P) == (1, {"s": b"one"})


def test_bad_or_misplaced_manifest_is_ignored(store):
    store.save(P, 1, {"s": b"one"})
    store.save(P, 3, {"s": b"three"})
    store._put(obj(3, "MANIFEST.json"), b"{not json")
    for name in ("s", "MANIFEST.json"):  # step 1's checkpoint copied under step 5
        store._put(obj(5, name), store._get(obj(1, name)))
    assert store.load_latest(P) == (1, {"s": b"one"})


def test_max_step(store):
    for step in (1, 3, 9):
        store.save(P, step, {"s": bytes([int(step)])})
    assert store.load_latest(P, max_step=8.999)[0] == 3
    assert store.load_latest(P, max_step=9)[0] == 9
    assert store.load_latest(P, max_step=0.5) is None


def test_resave_replaces_and_an_interrupted_resave_is_not_trusted(store):
    store.save(P, 1, {"s": b"one"})
    store.save(P, 3, {"s": b"old"})
    store.save(P, 3, {"s": b"new", "t": b"2"})
    assert store.load_latest(P) == (3, {"s": b"new", "t": b"2"})
    store._remove(obj(3, "MANIFEST.json"))
    store._put(obj(3, "s"), b"newer")
    assert store.load_latest(P) == (1, {"s": b"one"})


def test_missing_and_delete_keep_siblings_with_a_common_prefix(store):
    assert store.load_latest(P) is None and store.list_steps(P) == []
    for trial in (P, P + "0", "ns/study/r1/study-1"):  # study-0 vs study-00: not a sub-tree
        store.save(trial, 1, {"s": trial.encode()})
    store.delete(P)
    store.delete(P)  # idempotent
    assert store.load_latest(P) is None
    assert store.list_steps(P + "0") == [1] and store.list_steps("ns/study/r1/study-1") == [1]


def test_delete_study_removes_one_run_only(store):
    store.save("ns/study/r1/study-0", 1, {"s": b"a"})
    store.save("ns/study/r2/study-0", 1, {"s": b"b"})    # the same name created again: another run
    store.save("ns/study2/r1/study2-0", 1, {"s": b"c"})
    for short in ("ns", "ns/study"):
        with pytest.raises(InputError, match="namespace>/<study>/<run"):
            store.delete_study(short)
    store.delete_study("ns/study/r1")
    assert store.list_steps("ns/study/r1/study-0") == []
    assert store.list_steps("ns/study/r2/study-0") == [1] and store.list_steps("ns/study2/r1/study2-0") == [1]


@pytest.fixture
def state_gets(store, monkeypatch):
    """From now on, the keys other than manifests the store reads: on s3 every GetObject
    its real client sends (a botocore event hook), on file every _get."""
    keys = []
    if isinstance(store, S3Store):
        def hook(params, **_):
            keys.append(unquote(params["url_path"]))
        store.client.meta.events.register("before-call.s3.GetObject", hook)
    else:
        get = store._get
        monkeypatch.setattr(store, "_get", lambda key: keys.append(key) or get(key))
    yield lambda: [k for k in keys if not k.endswith("/MANIFEST.json")]
    if isinstance(store, S3Store):  # the client is shared by every store of these settings
        store.client.meta.events.unregister("before-call.s3.GetObject", hook)


@pytest.mark.parametrize("goal,best", [("minimize", 3), ("maximize", 9)])
def test_prune_keeps_latest_and_best_by_manifest_metrics(store, goal, best, state_gets):
    for step, acc in ((1, 0.5), (3, 0.1), (9, 0.9), (27, 0.4)):
        store.save(P, step, {"s": str(step).encode()}, metrics={"acc": acc})
    store.save(P, 2, {"s": b"2"})                        # no metrics (an older manifest): unranked
    store._put(obj(81, "s"), b"in progress")             # unsealed, above the latest: left alone
    assert store.load_latest(P) == (27, {"s": b"27"})
    seen = state_gets()
    assert len(seen) == 1 and seen[0].endswith("/27/s")  # the hook sees a state read...
    removed = store.prune(P, keep_best=1, objective="acc", goal=goal)
    assert state_gets() == seen                          # ...and prune reads none
    assert removed == sorted({1, 2, 3, 9} - {best})
    assert store.list_steps(P) == [best, 27] and "81" in store._children(P)
    assert store.load_latest(P, max_step=best) == (best, {"s": str(best).encode()})


def test_prune_does_not_count_a_checkpoint_with_a_wrong_size_as_latest(store, state_gets):
    for step in (1, 3, 9):
        store.save(P, step, {"s": str(step).encode()})
    store._put(obj(9, "s"), b"rot")                      # the newest sealed one is damaged
    assert store.prune(P) == [1] and state_gets() == []
    assert store.list_steps(P) == [3, 9]
    assert store.load_latest(P) == (3, {"s": b"3"})


# --- s3 only --------------------------------------------------------------------------------

def test_uri_round_trip_and_layout(root_uri):
    uri = trial_uri(root_uri + "/", "default", "mlp", "u1", "mlp-3")
    store, prefix = split_trial_uri(uri)
    assert isinstance(store, S3Store) and prefix == "mlp-3"
    store.save(prefix, 2, {"s": b"x"})
    bucket, root = root_uri[len("s3://"):].split("/", 1)
    keys = {o["Key"] for o in store.client.list_objects_v2(Bucket=bucket, Prefix=root)["Contents"]}
    assert keys == {f"{root}/default/mlp/u1/mlp-3/2/s", f"{root}/default/mlp/u1/mlp-3/2/MANIFEST.json"}
    assert open_store(root_uri).load_latest("default/mlp/u1/mlp-3") == (2, {"s": b"x"})


def test_multipart_upload(root_uri):
    mib = 1024 * 1024
    # S3's smallest part is 5 MiB: 12 MiB + 1 byte in 5 MiB parts is three parts.
    store = S3Store(*root_uri[len("s3://"):].split("/", 1), multipart_threshold=5 * mib,
                    multipart_chunksize=5 * mib)
    big = bytes(range(256)) * (12 * mib // 256) + b"!"
    store.save(P, 1, {"big.bin": big, "small": b"s"})
    head = store.client.head_object(Bucket=store.bucket, Key=store._key(obj(1, "big.bin")))
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    assert store.load_latest(P) == (1, {"big.bin": big, "small": b"s"})
    # Same bytes through a store with default (64 MiB) settings.
    assert open_store(root_uri).load_latest(P)[1]["big.bin"] == big


def test_abort_incomplete_aborts_cut_off_uploads_of_that_prefix_only(root_uri, cut_off_upload):
    store = open_store(root_uri)
    store.save(P, 1, {"s": b"one"})
    ours = [cut_off_upload(store, obj(3, "state.pkl")), cut_off_upload(store, obj(1, "s"))]
    sibling = cut_off_upload(store, f"{P}0/3/state.pkl")  # study-00: shares the name's start
    assert all(listed() for listed in ours + [sibling])
    assert store.abort_incomplete(P) == 2
    assert not any(listed() for listed in ours)
    assert sibling() and store.load_latest(P) == (1, {"s": b"one"})
    assert store.abort_incomplete(P) == 0
    store.delete_study("ns/study/r1")                     # aborts them too, before removing objects
    assert not sibling() and store.list_steps(P) == []


def test_empty_files_do_not_stall_the_next_request(root_uri):
    # Regression: "Expect: 100-continue" on an empty PUT left MinIO's late reply on the
    # connection, and the next request hung until the read timeout.
    # A stall costs a whole read timeout, so "faster than one timeout" is a wide margin.
    store = S3Store(*root_uri[len("s3://"):].split("/", 1), read_timeout=5, max_attempts=1)
    t0 = time.monotonic()
    for step in (1, 2, 3):
        store.save(P, step, {"a": b"", "b": b"x"})
    assert store.load_latest(P) == (3, {"a": b"", "b": b"x"})
    assert time.monotonic() - t0 < 5


def test_settings_from_env_are_checked(aws_env, monkeypatch):
    monkeypatch.setenv("RUNG_S3_MULTIPART_THRESHOLD", "8M")
    assert open_store("s3://rung/x").multipart_threshold == 8 * 1024 * 1024
    monkeypatch.setenv("RUNG_S3_MULTIPART_THRESHOLD", "lots")
    with pytest.raises(InputError, match="RUNG_S3_MULTIPART_THRESHOLD"):
        open_store("s3://rung/x")


def one_line_error(store, field, *words):
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        store.save(P, 1, {"s": b"x"})
    text = str(info.value)
    assert "\n" not in text and text.startswith(field + ": "), text
    for word in words:
        assert word in text, text
    return info.value, time.monotonic() - t0


def test_wrong_credentials(root_uri, aws_env, monkeypatch):
    open_store(root_uri).check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    # Outside the operator (rung run, a trial), the fix names the variables, not a Secret.
    err, _ = one_line_error(open_store(root_uri), "AWS_ACCESS_KEY_ID", "refused the credentials",
                            "AWS_SECRET_ACCESS_KEY", "in the environment")
    assert not err.transient and "secretRef" not in err.line()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    one_line_error(open_store(root_uri), "AWS_ACCESS_KEY_ID", "InvalidAccessKeyId")
    bucket, prefix = root_uri[len("s3://"):].split("/", 1)
    one_line_error(S3Store(bucket, prefix, from_secret=True), "spec.checkpoints.secretRef", "InvalidAccessKeyId",
                   "in the Secret it names")
    # The operator's way: a Secret's data over a process environment that has none of it.
    secret = {"AWS_ACCESS_KEY_ID": aws_env["AWS_ACCESS_KEY_ID"],
              "AWS_SECRET_ACCESS_KEY": aws_env["AWS_SECRET_ACCESS_KEY"]}
    store = S3Store(*root_uri[len("s3://"):].split("/", 1), env=secret)
    store.check()
    store.save(P, 1, {"s": b"x"})


def test_missing_bucket(aws_env):
    bucket = f"rung-missing-{uuid.uuid4().hex[:8]}"
    err, _ = one_line_error(open_store(f"s3://{bucket}/x"), "spec.checkpoints.uri",
                            f"bucket '{bucket}' does not exist", "create it")
    assert not err.transient
    missing = open_store(f"s3://{bucket}/x")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        missing.load_latest(P)
    with pytest.raises(StoreUnavailable, match="does not exist"):
        missing.check()


def test_unreachable_endpoint_fails_after_bounded_retries(aws_env, monkeypatch):
    monkeypatch.setenv("RUNG_S3_ENDPOINT", "http://127.0.0.1:1")  # nothing listens on port 1
    store = open_store("s3://rung/x")
    err, took = one_line_error(store, "spec.checkpoints.uri", "cannot reach S3 endpoint http://127.0.0.1:1",
                               "after 3 attempts", "RUNG_S3_ENDPOINT")
    assert err.transient and took < 30
    with pytest.raises(StoreUnavailable, match="cannot reach"):  # a load does not pretend "no checkpoint"
        store.load_latest(P)


def test_store_comes_back_and_nothing_is_lost(minio, root_uri):
    store = open_store(root_uri)
    store.save(P, 1, {"s": b"one"})
    minio.down()
    try:
        err, took = one_line_error(store, "spec.checkpoints.uri", "cannot reach S3 endpoint")
        assert err.transient and took < 30
    finally:
        minio.up()
    store.save(P, 3, {"s": b"three"})  # same store object, same client: no reconnect step
    assert store.list_steps(P) == [1, 3]
    assert store.load_latest(P) == (3, {"s": b"three"})
    assert store.load_latest(P, max_step=2) == (1, {"s": b"one"})
