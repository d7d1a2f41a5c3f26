"""The file:// checkpoint store: sealing, fall-back past damage, canonical step names."""

import json
import math
import shutil

import pytest

from rung.errors import InputError
from rung.storage import FileStore, format_step, open_store, parse_step, split_trial_uri, trial_uri

pytestmark = pytest.mark.unit

P = "ns/study/study-0"


@pytest.fixture
def store(tmp_path):
    return open_store(tmp_path.as_uri())


def step_dir(store, step):
    return store.root / P / format_step(step)


def test_save_seals_with_manifest_and_loads(store):
    store.save(P, 3, {"state.pkl": b"abc", "extra.bin": b""})
    manifest = json.loads((step_dir(store, 3) / "MANIFEST.json").read_text())
    assert manifest["step"] == 3 and manifest["created"] > 0
    assert manifest["files"]["state.pkl"]["size"] == 3
    assert len(manifest["files"]["state.pkl"]["sha256"]) == 64
    assert store.load_latest(P) == (3, {"state.pkl": b"abc", "extra.bin": b""})
    assert not [p for p in store.root.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_highest_step_wins_numerically_not_lexically(store):
    for step in (1, 3, 9, 27, 2.5):
        store.save(P, step, {"s": str(step).encode()})
    assert store.list_steps(P) == [1, 2.5, 3, 9, 27]
    assert store.load_latest(P)[0] == 27


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_corrupt_file_falls_back_to_previous_sealed(store, damage):
    store.save(P, 1, {"s": b"one"})
    store.save(P, 3, {"s": b"three"})
    f = step_dir(store, 3) / "s"
    if damage == "flip":
        f.write_bytes(b"thrEe")  # same size, wrong checksum
    elif damage == "truncate":
        f.write_bytes(b"thr")
    else:
        f.unlink()
    skipped = []
    assert store.load_latest(P, skipped=lambda where, why: skipped.append((where, why))) == (1, {"s": b"one"})
    assert skipped == [(str(step_dir(store, 3)), "s is missing or fails its checksum")]   # said, with its path


def test_a_checkpoint_loads_only_for_the_configuration_that_wrote_it(store):
    from rung.storage.base import owner_of
    mine, other = owner_of({"lr": 0.0114}), owner_of({"lr": 0.00188})
    assert owner_of({"a": 1, "b": 2}) == owner_of({"b": 2, "a": 1}) and mine != other
    store.save(P, 1, {"s": b"mine"}, owner=mine)
    store.save(P, 3, {"s": b"theirs"}, owner=other)
    skipped = []
    assert store.load_latest(P, owner=mine, skipped=lambda where, why: skipped.append(why)) == (1, {"s": b"mine"})
    assert skipped == ["written by another configuration (or run) than this trial's"]
    assert store.load_latest(P, owner=owner_of({"lr": 0.5})) is None


def test_unsealed_and_unmanifested_dirs_are_ignored(store):
    store.save(P, 1, {"s": b"one"})
    unsealed = step_dir(store, 9)
    unsealed.mkdir()
    (unsealed / "s").write_bytes(b"half-written")
    store.save(P, 3, {"s": b"three"})
    (step_dir(store, 3) / "MANIFEST.json").unlink()
    assert store.list_steps(P) == [1]
    assert store.load_latest(P) == (1, {"s": b"one"})


def test_bad_or_misplaced_manifest_is_ignored(store):
    store.save(P, 1, {"s": b"one"})
    store.save(P, 3, {"s": b"three"})
    (step_dir(store, 3) / "MANIFEST.json").write_text("{not json")
    shutil.copytree(step_dir(store, 1), step_dir(store, 5))  # manifest says step 1, dir says 5
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
    # A re-save that died after unsealing and rewriting a file: never resumed.
    (step_dir(store, 3) / "MANIFEST.json").unlink()
    (step_dir(store, 3) / "s").write_bytes(b"newer")
    assert store.load_latest(P) == (1, {"s": b"one"})


def test_missing_and_delete(store):
    assert store.load_latest(P) is None and store.list_steps(P) == []
    store.save(P, 1, {"s": b"one"})
    store.save("ns/study/study-1", 1, {"s": b"x"})
    store.delete(P)
    store.delete(P)  # idempotent
    assert store.load_latest(P) is None
    assert store.list_steps("ns/study/study-1") == [1]


def test_canonical_step_names():
    assert [format_step(s) for s in (3, 3.0, 2.5, 0, 0.1, 81)] == ["3", "3", "2.5", "0", "0.1", "81"]
    for s in (3, 2.5, 0.1, 1 / 3, 1e-7, 729):
        assert parse_step(format_step(s)) == s
    assert parse_step("3.0") is None and parse_step("03") is None and parse_step("x") is None
    for bad in (-1, math.nan, math.inf):
        with pytest.raises(InputError):
            format_step(bad)


@pytest.mark.parametrize("prefix,files", [("../escape", {"s": b""}), ("", {"s": b""}),
                                          (P, {"a/b": b""}), (P, {"MANIFEST.json": b""}),
                                          (P, {".hidden": b""})])
def test_bad_keys_are_refused(store, prefix, files):
    with pytest.raises(InputError):
        store.save(prefix, 1, files)


def test_uris(tmp_path):
    assert isinstance(open_store(tmp_path.as_uri()), FileStore)
    assert repr(open_store("s3://bucket/prefix")) == "S3Store('s3://bucket/prefix')"  # no network
    for bad in ("http://x/y", "file://relative/path", "/no/scheme", "s3://Bad_Bucket/x", "s3://bucket/../x"):
        with pytest.raises(InputError, match="checkpoints.uri"):
            open_store(bad)


def test_trial_uri_round_trip(tmp_path):
    uri = trial_uri(tmp_path.as_uri() + "/", "default", "mlp", "u1", "mlp-3")
    assert uri == tmp_path.as_uri() + "/default/mlp/u1/mlp-3"
    store, prefix = split_trial_uri(uri)
    store.save(prefix, 2, {"s": b"x"})
    assert (tmp_path / "default/mlp/u1/mlp-3/2/MANIFEST.json").exists()
    root = open_store(tmp_path.as_uri())
    assert root.load_latest("default/mlp/u1/mlp-3") == (2, {"s": b"x"})
    for bad in (("../x", "u1", "t"), ("mlp", "", "t"), ("mlp", "u1", "..")):
        with pytest.raises(InputError):
            trial_uri(tmp_path.as_uri(), "default", *bad)


# --- retention and cut-off writes ------------------------------------------------------------

def state_reads(store, monkeypatch):
    """A function listing the keys, other than manifests, the store reads from now on."""
    reads, get = [], store._get

    def counting_get(key):
        reads.append(key)
        return get(key)
    monkeypatch.setattr(store, "_get", counting_get)
    return lambda: [k for k in reads if not k.endswith("/MANIFEST.json")]


def test_manifest_records_metrics(store):
    store.save(P, 1, {"s": b"x"})
    store.save(P, 3, {"s": b"x"}, metrics={"val_loss": 0.25, "acc": 1, "bad": math.inf})
    assert "metrics" not in json.loads((step_dir(store, 1) / "MANIFEST.json").read_text())
    manifest = json.loads((step_dir(store, 3) / "MANIFEST.json").read_text())
    assert manifest["metrics"] == {"val_loss": 0.25, "acc": 1}  # strict JSON: no Infinity


@pytest.mark.parametrize("goal,best", [("minimize", 3), ("maximize", 9)])
def test_prune_keeps_latest_and_best_by_manifest_metrics(store, monkeypatch, goal, best):
    for step, acc in ((1, 0.5), (3, 0.1), (9, 0.9), (27, 0.4)):
        store.save(P, step, {"s": str(step).encode()}, metrics={"acc": acc})
    store.save(P, 2, {"s": b"old"})                     # an old manifest: no metrics, unranked
    (step_dir(store, 81)).mkdir()
    (step_dir(store, 81) / "s").write_bytes(b"in progress")  # unsealed, above the latest
    reads = state_reads(store, monkeypatch)
    removed = store.prune(P, keep_best=1, objective="acc", goal=goal)
    assert reads() == []                                 # decided from manifests and a listing
    assert store.list_steps(P) == sorted({best, 27}) and (step_dir(store, 81) / "s").exists()
    assert removed == sorted({1, 2, 3, 9} - {best})
    assert store.prune(P, keep_best=1, objective="acc", goal=goal) == []  # nothing left to do


def test_prune_does_not_count_a_checkpoint_with_a_wrong_size_as_latest(store, monkeypatch):
    for step in (1, 3, 9):
        store.save(P, step, {"s": str(step).encode()})
    (step_dir(store, 9) / "s").write_bytes(b"rot")       # the newest sealed one is damaged
    reads = state_reads(store, monkeypatch)
    assert store.prune(P) == [1] and reads() == []
    assert store.load_latest(P) == (3, {"s": b"3"})


def test_prune_refuses_what_it_cannot_rank(store):
    store.save(P, 1, {"s": b"x"}, metrics={"loss": 1})
    with pytest.raises(InputError, match="goal"):
        store.prune(P, goal="lowest")
    with pytest.raises(InputError, match="objective"):
        store.prune(P, keep_best=1)
    assert store.prune(P, keep_best=1, objective="loss") == []


def test_abort_incomplete_removes_leftover_temp_files(store):
    store.save(P, 1, {"s": b"x"})
    store.save(P + "0", 1, {"s": b"x"})                  # a sibling sharing the name's start
    for trial in (P, P + "0"):
        (store.root / trial / "1" / ".s.0123abcd.tmp").write_bytes(b"cut off")
    (step_dir(store, 3)).mkdir()
    (step_dir(store, 3) / ".state.pkl.feed.tmp").write_bytes(b"cut off")
    assert store.abort_incomplete(P) == 2
    assert not list((store.root / P).rglob(".*")) and store.load_latest(P) == (1, {"s": b"x"})
    assert (store.root / (P + "0") / "1" / ".s.0123abcd.tmp").exists()
    assert store.abort_incomplete(P) == 0
