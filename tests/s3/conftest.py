"""A real MinIO for the s3:// store tests: built from the Go module proxy (cached),
started once per session on loopback with its own state dir and port, stopped at the end.

RUNG_S3_TEST_PORT / RUNG_S3_TEST_DIR pick another port / state dir; RUNG_MINIO names a
prebuilt binary (skips tests/s3/build-minio).
"""

import os
import subprocess
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BUCKET = "rung"


class MinIO:
    def __init__(self):
        self.env = dict(os.environ,
                        RUNG_S3_DIR=os.environ.get("RUNG_S3_TEST_DIR", "/tmp/rung-s3-pytest"),
                        RUNG_S3_PORT=os.environ.get("RUNG_S3_TEST_PORT", "9125"),
                        RUNG_S3_BUCKET=BUCKET)
        self.env.pop("RUNG_S3_EXTRA_ADDRESS", None)
        self.aws: dict[str, str] = {}

    def up(self) -> dict[str, str]:
        out = subprocess.run([HERE / "minio-up"], env=self.env, capture_output=True, text=True,
                             timeout=3600, check=False)
        if out.returncode:
            raise RuntimeError(f"tests/s3/minio-up failed:\n{out.stderr[-3000:]}")
        self.aws = dict(line.removeprefix("export ").split("=", 1)
                        for line in out.stdout.splitlines() if line.startswith("export "))
        return self.aws

    def down(self) -> None:
        subprocess.run([HERE / "minio-down"], env=self.env, check=True, timeout=60)


@pytest.fixture(scope="session")
def minio():
    server = MinIO()
    # The build (first run only: minutes on 2 cores) has its own lock and cache.
    build = subprocess.run([HERE / "build-minio"], capture_output=True, text=True, timeout=3600,
                           check=False)
    if build.returncode:
        pytest.fail(f"tests/s3/build-minio failed:\n{build.stderr[-3000:]}")
    server.env.setdefault("RUNG_MINIO", build.stdout.strip())
    server.up()
    yield server
    server.down()


@pytest.fixture
def aws_env(minio, monkeypatch):
    """This MinIO's AWS_* settings in os.environ, fast retries, nothing else S3 set."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "RUNG_S3_")):
            monkeypatch.delenv(name)
    for name, value in minio.aws.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RUNG_S3_MAX_ATTEMPTS", "3")
    return dict(minio.aws, RUNG_S3_MAX_ATTEMPTS="3")


@pytest.fixture
def root_uri(aws_env):
    """A fresh prefix in the bucket for each test."""
    return f"s3://{BUCKET}/pytest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def cut_off_upload():
    """cut_off_upload(store, key) begins a multipart upload and sends one part, never
    completing it (a pod killed mid-upload); returns a check: is it still listed?"""
    def start(store, key):
        k, client = store._key(key), store.client
        upload = client.create_multipart_upload(Bucket=store.bucket, Key=k)["UploadId"]
        client.upload_part(Bucket=store.bucket, Key=k, UploadId=upload, PartNumber=1, Body=b"part")

        def listed() -> bool:  # MinIO lists a key's uploads only when asked for that exact key
            uploads = client.list_multipart_uploads(Bucket=store.bucket, Prefix=k).get("Uploads", [])
            return any(u["UploadId"] == upload for u in uploads)
        return listed
    return start
