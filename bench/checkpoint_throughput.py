"""s3:// checkpoint store: save and load throughput against a local MinIO.

Peer in the same run: a plain boto3 `upload_file` / `download_file` of the same bytes
(what `aws s3 cp` does: 8 MiB parts, 10 threads), from and to a file on tmpfs, so the
peer pays no disk. Rung's store works from memory but also hashes (sha256 on save and on
load), writes a manifest, lists and reads it back on load: the ratio is that overhead.

Starts MinIO with tests/s3/minio-up unless AWS_ENDPOINT_URL is already set.
Run: python bench/checkpoint_throughput.py [--sizes 100M,1G] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1000 * 1000


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def ensure_minio() -> None:
    if os.environ.get("AWS_ENDPOINT_URL"):
        return
    out = subprocess.run([ROOT / "tests/s3/minio-up"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            os.environ[name] = value


def fs_of(path: str) -> str:
    out = subprocess.run(["df", "--output=fstype,source", path], capture_output=True, text=True,
                         check=True)
    fstype, source = out.stdout.splitlines()[-1].split()
    return f"{path} ({fstype} on {source})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100M", help="comma-separated, e.g. 100M,1G (1G: ~3 GB RAM)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the median is shown")
    ap.add_argument("--bucket", default="rung")
    args = ap.parse_args()

    ensure_minio()
    import boto3
    import numpy as np
    from botocore.config import Config
    from rung.storage import open_store

    client = boto3.client("s3", region_name=os.environ.get("AWS_REGION", "us-east-1"),
                          config=Config(s3={"addressing_style": "path"}))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = open_store(f"s3://{args.bucket}/{prefix}")
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    work = Path(tempfile.mkdtemp(prefix="rung-bench-", dir=shm))
    s3_dir = os.environ.get("RUNG_S3_DIR", "/tmp/rung-s3")
    rows, sha_rates = [], []
    try:
        for size in (parse_size(s) for s in args.sizes.split(",")):
            data = np.random.default_rng(0).bytes(size)  # incompressible, like weights
            src, dst = work / "src.bin", work / "dst.bin"
            src.write_bytes(data)
            times = {k: [] for k in ("save", "load", "upload_file", "download_file")}
            for i in range(args.repeat):
                key, trial = f"{prefix}/peer/{i}.bin", f"t/{i}"
                # Alternate who goes first, so a warm cache favours neither.
                for who in ("rung", "peer") if i % 2 == 0 else ("peer", "rung"):
                    t0 = time.perf_counter()
                    if who == "rung":
                        store.save(trial, 1, {"state.bin": data})
                        t1 = time.perf_counter()
                        loaded = store.load_latest(trial)
                        t2 = time.perf_counter()
                        assert loaded[1]["state.bin"] == data
                        del loaded
                        store.delete(trial)
                        times["save"].append(t1 - t0)
                        times["load"].append(t2 - t1)
                    else:
                        client.upload_file(str(src), args.bucket, key)
                        t1 = time.perf_counter()
                        client.download_file(args.bucket, key, str(dst))
                        t2 = time.perf_counter()
                        assert dst.stat().st_size == size
                        dst.unlink()
                        client.delete_object(Bucket=args.bucket, Key=key)
                        times["upload_file"].append(t1 - t0)
                        times["download_file"].append(t2 - t1)
            t0 = time.perf_counter()
            hashlib.sha256(data).digest()
            sha_rates.append(size / MB / (time.perf_counter() - t0))
            med = {k: statistics.median(v) for k, v in times.items()}
            for op, peer in (("save", "upload_file"), ("load", "download_file")):
                ours, theirs = size / MB / med[op], size / MB / med[peer]
                rows.append((f"{size / MB:,.0f} MB", op, ours, peer, theirs, ours / theirs))
            src.unlink()
            print(f"done {size / MB:,.0f} MB", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        store.delete("t")

    print(f"MinIO data: {fs_of(s3_dir) if os.path.exists(s3_dir) else s3_dir}; "
          f"peer's files: {fs_of(str(work.parent))}; median of {args.repeat} runs; "
          f"{os.cpu_count()} cores\n")
    print("| state | rung op | rung MB/s | boto3 peer | peer MB/s | rung / peer |")
    print("|---|---|---:|---|---:|---:|")
    for state, op, ours, peer, theirs, ratio in rows:
        print(f"| {state} | {op} | {ours:,.0f} | {peer} | {theirs:,.0f} | {ratio:.2f} |")
    print(f"\nsha256 alone (the manifest's checksum, computed on save and again on load): "
          f"{statistics.median(sha_rates):,.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
