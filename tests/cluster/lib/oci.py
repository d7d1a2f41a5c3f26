#!/usr/bin/env python3
"""Write an OCI image layout, as one tar archive that `ctr images import` reads.

Layers are plain (uncompressed) tars, so a layer's digest is also its diff_id.
A layer is either an existing tar (--layer-tar) or a directory tarred here with
root ownership (--layer-dir). Standard library only.

    oci.py --out image.tar --name docker.io/library/x:tag \
        --layer-tar base.tar --layer-dir ./project --env PATH=/opt/venv/bin:/usr/bin \
        --cmd python3
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time

LAYER_MT = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MT = "application/vnd.oci.image.config.v1+json"
MANIFEST_MT = "application/vnd.oci.image.manifest.v1+json"
INDEX_MT = "application/vnd.oci.image.index.v1+json"


def sha256_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def tar_dir(src: str, dest: str) -> None:
    """Tar the contents of src (paths relative to it), owned by root, sorted."""

    def reset(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            if rel != ".":
                tf.add(root, arcname=rel, recursive=False, filter=reset)
            for name in sorted(files):
                p = os.path.join(root, name)
                tf.add(p, arcname=os.path.normpath(os.path.join(rel, name)), recursive=False, filter=reset)


def write_archive(out: str, name: str, layer_files: list[str], cfg: dict,
                  history: list[str] | None = None) -> dict:
    """Write the OCI layout archive `out` for the image `name`: the layer tars in order
    (bottom first) and the image config `cfg` (Env, Cmd, ...). Returns what main prints."""
    layers = [(p, *sha256_file(p)) for p in layer_files]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    history = history or ["rung tests/cluster/lib/oci.py"] * len(layers)
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [d for _, d, _ in layers]},
        "history": [{"created": created, "created_by": h} for h in history],
    }
    config_b = json.dumps(config, sort_keys=True).encode()
    config_d = "sha256:" + hashlib.sha256(config_b).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MT,
        "config": {"mediaType": CONFIG_MT, "digest": config_d, "size": len(config_b)},
        "layers": [{"mediaType": LAYER_MT, "digest": d, "size": s} for _, d, s in layers],
    }
    manifest_b = json.dumps(manifest, sort_keys=True).encode()
    manifest_d = "sha256:" + hashlib.sha256(manifest_b).hexdigest()
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MT,
        "manifests": [
            {
                "mediaType": MANIFEST_MT,
                "digest": manifest_d,
                "size": len(manifest_b),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }

    def add_bytes(tf: tarfile.TarFile, arcname: str, data: bytes) -> None:
        ti = tarfile.TarInfo(arcname)
        ti.size = len(data)
        ti.mtime = int(time.time())
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(data))

    tmp_out = out + ".tmp"
    with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tf:
        add_bytes(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tf, "index.json", json.dumps(index, sort_keys=True).encode())
        add_bytes(tf, "blobs/sha256/" + config_d.split(":")[1], config_b)
        add_bytes(tf, "blobs/sha256/" + manifest_d.split(":")[1], manifest_b)
        seen = set()
        for p, d, _ in layers:
            if d in seen:
                continue
            seen.add(d)
            ti = tf.gettarinfo(p, arcname="blobs/sha256/" + d.split(":")[1])
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            with open(p, "rb") as f:
                tf.addfile(ti, f)
    os.replace(tmp_out, out)
    return {"image": name, "manifest": manifest_d, "layers": [d for _, d, _ in layers]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output tar (OCI layout archive)")
    ap.add_argument("--name", required=True, help="full image reference, e.g. docker.io/library/rung-trial:dev")
    ap.add_argument("--layer-tar", action="append", default=[], dest="layers_tar")
    ap.add_argument("--layer-dir", action="append", default=[], dest="layers_dir")
    ap.add_argument("--entrypoint", action="append", default=None)
    ap.add_argument("--cmd", action="append", default=None)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--user", default="")
    ap.add_argument("--workdir", default="")
    ap.add_argument("--label", action="append", default=[])
    args = ap.parse_args(argv)

    out_dir = os.path.dirname(os.path.abspath(args.out))
    tmpdir = tempfile.mkdtemp(prefix="oci-", dir=out_dir)
    try:
        # Layer order: --layer-tar ones first (in order), then --layer-dir ones.
        layer_files = list(args.layers_tar)
        for i, d in enumerate(args.layers_dir):
            p = os.path.join(tmpdir, f"dirlayer{i}.tar")
            tar_dir(d, p)
            layer_files.append(p)
        cfg: dict = {"Env": list(args.env) or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
        if args.entrypoint:
            cfg["Entrypoint"] = args.entrypoint
        if args.cmd:
            cfg["Cmd"] = args.cmd
        if args.user:
            cfg["User"] = args.user
        if args.workdir:
            cfg["WorkingDir"] = args.workdir
        if args.label:
            cfg["Labels"] = dict(kv.split("=", 1) for kv in args.label)
        print(json.dumps(write_archive(args.out, args.name, layer_files, cfg)))
    finally:
        for f in os.listdir(tmpdir):
            os.unlink(os.path.join(tmpdir, f))
        os.rmdir(tmpdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
