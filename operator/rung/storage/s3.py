"""s3:// checkpoint store: a bucket and prefix on AWS S3 or any S3-compatible server
(MinIO, Ceph RGW, ...), through boto3.

Sealing and retention live in base.py; this file supplies the seven primitives. S3
makes each object write atomic (a PUT, or a multipart upload on completion, is wholly
visible or not at all) and listings strongly consistent, which is all the manifest-last
rule needs.

Settings come from boto3's usual environment: AWS_ENDPOINT_URL (RUNG_S3_ENDPOINT wins
over it), AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE (unset credentials fall to boto3's chain: config files,
web identity, instance metadata). `S3Store(env=...)` layers a mapping (a Secret's data)
over os.environ. Tuning, all optional:
  RUNG_S3_MULTIPART_THRESHOLD  bytes (suffixes K, M, G: powers of 1024), default 64M
  RUNG_S3_MULTIPART_CHUNKSIZE  part size, default 16M
  RUNG_S3_MAX_CONCURRENCY      parallel part uploads, default 8
  RUNG_S3_MAX_ATTEMPTS         tries per request (botocore "standard" retries), default 8
  RUNG_S3_CONNECT_TIMEOUT / RUNG_S3_READ_TIMEOUT  seconds, default 5 / 60
  RUNG_S3_ADDRESSING           path | virtual | auto; default path with a custom
                               endpoint (MinIO needs it), auto on AWS
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import ChainMap
from collections.abc import Mapping

from rung.errors import InputError
from rung.storage.base import URI_FIELD, CheckpointStore, StoreUnavailable

SECRET_FIELD = "spec.checkpoints.secretRef"
MiB = 1024 * 1024

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken",
               "ExpiredToken", "InvalidClientTokenId", "AuthorizationHeaderMalformed",
               "InvalidSecurity", "Forbidden", "403"}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                   "TooManyRequests", "ServiceUnavailable", "503", "XMinioServerNotInitialized"}


def _size(env, name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    m = re.fullmatch(r"(\d+)\s*([KMG]?)i?B?", raw, re.IGNORECASE)
    if not m:
        raise InputError(name, f"{raw!r} is not a size", "write bytes, or e.g. 64M, 1G")
    return int(m.group(1)) * 1024 ** " KMG".index(m.group(2).upper() or " ")


def _number(env, name: str, default: float, kind=float):
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InputError(name, f"{raw!r} is not a positive number", f"unset it, or e.g. {default}")
    return value


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/some/prefix; the prefix has no leading/trailing '/'."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(str(uri))
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InputError(URI_FIELD, f"{uri!r} has no valid bucket name",
                         "write s3://<bucket>/<prefix>, bucket in lowercase letters, digits, '.', '-'")
    segments = [s for s in unquote(parts.path).split("/") if s not in ("", ".")]
    if ".." in segments or parts.query or parts.fragment:
        raise InputError(URI_FIELD, f"{uri!r} has '..', a query or a fragment",
                         "write s3://<bucket>/<prefix> with a plain path")
    return bucket, "/".join(segments)


# One client per configuration: creating one costs ~50 ms, and the SDK opens the store
# on every load/save. Clients are thread-safe.
_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def _resolve_settings(env, endpoint_url, max_attempts, connect_timeout, read_timeout, addressing):
    """Every setting the client needs, read once, from `env` (the environment, or a
    Secret's data over it). Credentials left unset fall to boto3's own chain."""
    endpoint = (endpoint_url or env.get("RUNG_S3_ENDPOINT") or env.get("AWS_ENDPOINT_URL_S3")
                or env.get("AWS_ENDPOINT_URL") or None)
    addressing = addressing or env.get("RUNG_S3_ADDRESSING") or ("path" if endpoint else "auto")
    if addressing not in ("path", "virtual", "auto"):
        raise InputError("RUNG_S3_ADDRESSING", f"{addressing!r} is not path, virtual or auto",
                         "unset it (path is used with a custom endpoint)")
    return {
        "endpoint": endpoint, "addressing": addressing,
        # botocore reads AWS_DEFAULT_REGION only; AWS_REGION is what most tools document.
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        "access_key": env.get("AWS_ACCESS_KEY_ID") or None,
        "secret_key": env.get("AWS_SECRET_ACCESS_KEY") or None,
        "token": env.get("AWS_SESSION_TOKEN") or None,
        "profile": env.get("AWS_PROFILE") or None,
        "max_attempts": int(max_attempts or _number(env, "RUNG_S3_MAX_ATTEMPTS", 8, int)),
        "connect_timeout": float(connect_timeout or _number(env, "RUNG_S3_CONNECT_TIMEOUT", 5.0)),
        "read_timeout": float(read_timeout or _number(env, "RUNG_S3_READ_TIMEOUT", 60.0)),
    }


def _make_client(settings: dict):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise InputError(URI_FIELD, "s3:// stores need boto3, which is not installed",
                         "pip install boto3 (or use a file:// URI)") from None
    key = tuple(sorted(settings.items()))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            session = boto3.session.Session(
                aws_access_key_id=settings["access_key"], aws_secret_access_key=settings["secret_key"],
                aws_session_token=settings["token"], profile_name=settings["profile"])
            config = Config(
                region_name=settings["region"] or session.region_name or "us-east-1",
                retries={"mode": "standard", "max_attempts": settings["max_attempts"]},
                connect_timeout=settings["connect_timeout"],
                read_timeout=settings["read_timeout"],
                s3={"addressing_style": settings["addressing"]},
                max_pool_connections=32,
            )
            client = session.client("s3", endpoint_url=settings["endpoint"], config=config)
            client.meta.events.register_last("before-call.s3", _no_continue_for_empty_body)
            _clients[key] = client
        return client


def _no_continue_for_empty_body(params, **_):
    # botocore sends "Expect: 100-continue" even with an empty body; MinIO then answers
    # both 200 and a late "100 Continue", which the next request on that connection reads
    # as its own response and stalls until the read timeout (seen: 30 s per empty file).
    from botocore.utils import determine_content_length

    body = params.get("body")
    if params.get("headers", {}).get("Expect") and body is not None \
            and determine_content_length(body) == 0:
        del params["headers"]["Expect"]


class S3Store(CheckpointStore):
    """`env`: variables that win over os.environ (AWS_*, RUNG_S3_*), e.g. the data of the
    Secret named by spec.checkpoints.secretRef when the operator probes a Study's store
    (`from_secret`: then credential errors name that field; elsewhere, the variables)."""

    def __init__(self, bucket: str, prefix: str = "", *, env: Mapping[str, str] | None = None,
                 from_secret: bool = False,
                 endpoint_url: str | None = None,
                 multipart_threshold: int | None = None, multipart_chunksize: int | None = None,
                 max_concurrency: int | None = None, max_attempts: int | None = None,
                 connect_timeout: float | None = None, read_timeout: float | None = None,
                 addressing: str | None = None, client=None):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        env = ChainMap(dict(env or {}), os.environ)
        self.multipart_threshold = int(multipart_threshold or _size(env, "RUNG_S3_MULTIPART_THRESHOLD", 64 * MiB))
        self.multipart_chunksize = int(multipart_chunksize or _size(env, "RUNG_S3_MULTIPART_CHUNKSIZE", 16 * MiB))
        self.max_concurrency = int(max_concurrency or _number(env, "RUNG_S3_MAX_CONCURRENCY", 8, int))
        # Resolved now so a bad setting fails at open_store, not at the first save.
        self._settings = _resolve_settings(env, endpoint_url, max_attempts, connect_timeout,
                                           read_timeout, addressing)
        self._client = client  # created lazily: opening a store touches no network
        self._credentials = (SECRET_FIELD, "in the Secret it names") if from_secret else \
            ("AWS_ACCESS_KEY_ID", "in the environment (or a profile: AWS_PROFILE)")

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r})"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self):
        if self._client is None:
            self._client = _make_client(self._settings)
        return self._client

    @property
    def endpoint(self) -> str:
        if self._client is not None:
            return self._client.meta.endpoint_url
        return self._settings["endpoint"] or "the AWS S3 endpoint"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    # --- errors ------------------------------------------------------------------------
    def _unavailable(self, exc: BaseException, action: str, key: str) -> StoreUnavailable:
        """One line naming the cause, the field to fix and how, for any boto3 failure."""
        if isinstance(exc, InputError):  # already one line (e.g. boto3 missing)
            return exc
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        unreachable = (ConnectionError, HTTPClientError)  # refused, timed out, cut off
        # s3transfer may wrap the botocore error; the cause is further down the chain.
        err: BaseException | None = exc
        seen = set()
        while err is not None and not isinstance(err, (ClientError, *unreachable, NoCredentialsError,
                                                        PartialCredentialsError)):
            seen.add(id(err))
            nxt = err.__cause__ or err.__context__
            err = nxt if nxt is not None and id(nxt) not in seen else None
        err = err or exc
        where = f"s3://{self.bucket}/{self._key(key)}".rstrip("/")
        attempts = self._settings["max_attempts"]
        endpoint = self.endpoint
        field, place = self._credentials
        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            return StoreUnavailable(field, f"no complete S3 credentials to {action} {where}",
                                    f"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY {place}")
        if isinstance(err, unreachable):
            return StoreUnavailable(URI_FIELD, f"cannot reach S3 endpoint {endpoint} to {action} "
                                    f"{where} after {attempts} attempts ({type(err).__name__})",
                                    "check that the server is up and that AWS_ENDPOINT_URL / "
                                    "RUNG_S3_ENDPOINT points at it", transient=True)
        if isinstance(err, ClientError):
            body = err.response.get("Error", {})
            code = str(body.get("Code", "?"))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StoreUnavailable(URI_FIELD, f"bucket {self.bucket!r} does not exist at {endpoint}",
                                        f"create it (aws s3 mb s3://{self.bucket}) or name an "
                                        "existing bucket in the URI")
            if code in _AUTH_CODES or status == 403:
                return StoreUnavailable(field, f"{endpoint} refused the credentials to "
                                        f"{action} {where} ({code})",
                                        "put a valid AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                                        f"with access to bucket {self.bucket!r} {place}")
            if code in _THROTTLE_CODES or status in (429, 500, 502, 503, 504):
                return StoreUnavailable(URI_FIELD, f"{endpoint} still answered {code} to {action} "
                                        f"{where} after {attempts} attempts",
                                        "retry later; the server is overloaded or starting",
                                        transient=True)
            message = " ".join(str(body.get("Message", "")).split())[:200]
            return StoreUnavailable(URI_FIELD, f"{endpoint} refused to {action} {where}: "
                                    f"{code} {message}".rstrip(), "check the bucket's settings")
        return StoreUnavailable(URI_FIELD, f"could not {action} {where}: "
                                f"{type(err).__name__}: {' '.join(str(err).split())[:200]}",
                                "check the S3 settings (AWS_* variables)")

    @staticmethod
    def _code(exc: BaseException) -> str | None:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code"))
        return None

    def check(self) -> None:
        """Raise StoreUnavailable unless the bucket is reachable with these credentials."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1)
        except Exception as e:
            raise self._unavailable(e, "list", "") from e

    # --- the seven primitives ----------------------------------------------------------
    def _children(self, prefix: str) -> list[str]:
        base = self._key(prefix) + "/"
        names = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                names += [p["Prefix"][len(base):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        except Exception as e:
            raise self._unavailable(e, "list", prefix) from e
        return names

    def _get(self, key: str) -> bytes | None:
        # Missing means None (base.py then falls back); an unreachable store raises, so a
        # trial never silently starts over because S3 blinked. One streamed GET even for
        # large objects: on loopback with 2 cores it ran 4x faster than parallel ranged
        # GETs (Python threads contend for the GIL; MinIO needs the cores too).
        from botocore.exceptions import ResponseStreamingError

        k = self._key(key)
        for attempt in range(1, self._settings["max_attempts"] + 1):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read()
            except ResponseStreamingError as e:  # the body broke off: botocore does not retry that
                if attempt >= self._settings["max_attempts"]:
                    raise self._unavailable(e, "read", key) from e
            except Exception as e:
                if self._code(e) in _MISSING_KEY:
                    return None
                raise self._unavailable(e, "read", key) from e

    def _put(self, key: str, data: bytes) -> None:
        k = self._key(key)
        try:
            if len(data) < self.multipart_threshold:
                self.client.put_object(Bucket=self.bucket, Key=k, Body=data)
            else:
                from boto3.s3.transfer import TransferConfig

                config = TransferConfig(multipart_threshold=self.multipart_threshold,
                                        multipart_chunksize=self.multipart_chunksize,
                                        max_concurrency=self.max_concurrency)
                self.client.upload_fileobj(io.BytesIO(data), self.bucket, k, Config=config)
        except Exception as e:
            raise self._unavailable(e, "write", key) from e

    def _remove(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:
            if self._code(e) in _MISSING_KEY:
                return
            raise self._unavailable(e, "delete", key) from e

    def _remove_tree(self, prefix: str) -> None:
        # The trailing '/' matters: "ns/study" must not take "ns/study-2" with it.
        base = self._key(prefix) + "/"
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base)
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if not keys:
                    continue
                resp = self.client.delete_objects(Bucket=self.bucket,
                                                  Delete={"Objects": keys, "Quiet": True})
                failed = [e for e in resp.get("Errors", []) if e.get("Code") not in _MISSING_KEY]
                if failed:
                    from botocore.exceptions import ClientError
                    raise ClientError({"Error": failed[0]}, "DeleteObjects")
        except Exception as e:
            raise self._unavailable(e, "delete", prefix) from e

    def _sizes(self, prefix: str) -> dict[str, int]:
        base = self._key(prefix) + "/"
        sizes = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                sizes.update((o["Key"][len(base):], o["Size"]) for o in page.get("Contents", []))
        except Exception as e:
            raise self._unavailable(e, "list", prefix) from e
        return sizes

    def _abort_uploads(self, prefix: str) -> int:
        # Parts of an upload never completed are billed until it is aborted. The bucket's
        # uploads are listed with no Prefix and filtered here: MinIO answers a Prefix
        # only when it is one exact key (and, with none, lists the uploads it started
        # since it last restarted; it expires older ones itself after 24 h).
        base = self._key(prefix) + "/"
        count = 0
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket):
                for upload in page.get("Uploads", []):
                    if upload["Key"].startswith(base):
                        try:
                            self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                               UploadId=upload["UploadId"])
                            count += 1
                        except Exception as e:
                            if self._code(e) != "NoSuchUpload":  # aborted or completed meanwhile
                                raise
        except Exception as e:
            raise self._unavailable(e, "abort uploads under", prefix) from e
        return count
