#!/usr/bin/env python3
"""Build an image from a Dockerfile without a Docker engine, as an OCI layout archive.

It reads the Dockerfile's instructions and runs them itself:
  FROM        a stand-in built from Debian's archive (nothing can be pulled here; see BASES)
  RUN         in a chroot over an overlay of the layers so far; the overlay's upper dir
              becomes the layer (deletions become OCI whiteouts)
  COPY        files from the build context (honouring .dockerignore) into a new layer
  WORKDIR     creates the directory (a layer) when it is missing
  ENV, USER, ENTRYPOINT, CMD   go into the image config
Anything else (ARG, ADD, COPY --from, variable expansion, ...) is refused with the line.

Each layer is cached under CACHE/layers/<key>, where the key hashes the previous key,
the instruction and its inputs (the copied files' contents): a code change rebuilds only
the layers from the first COPY it touches. Must run as root (mount, chroot).

    dockerfile.py --file Dockerfile --context . --name docker.io/library/x:1 \
        --cache ~/.cache/rung/image --base-rootfs ~/.cache/rung/image/base-bookworm --out x.oci.tar
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oci import write_archive  # noqa: E402

SUPPORTED = ("FROM", "ENV", "WORKDIR", "COPY", "RUN", "USER", "ENTRYPOINT", "CMD")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# FROM images and the stand-ins the harness builds for them over the debootstrap base
# (`--base-rootfs`: Debian bookworm minbase + python3 + python3-venv). python:3.11-slim:
# bookworm's python3 is 3.11; a venv on /opt/venv, first on PATH, gives `python` and
# `pip` as the official image does (it has them in /usr/local instead).
_PY_SLIM = {
    "run": ["python3 -m venv /opt/venv"],
    "env": {"PATH": "/opt/venv/bin:" + DEFAULT_PATH, "VIRTUAL_ENV": "/opt/venv", "LANG": "C.UTF-8"},
    "cmd": ["python3"],
}
BASES = {"python:3.11-slim": _PY_SLIM, "docker.io/library/python:3.11-slim": _PY_SLIM}

# Build-time settings passed to RUN, as Docker passes its predefined proxy ARGs.
PASS_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
            "http_proxy", "https_proxy", "no_proxy")


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[dockerfile] {msg if len(msg) < 140 else msg[:100] + ' ... ' + msg[-30:]}", file=sys.stderr, flush=True)


def sha(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# ------------------------------------------------------------------ parsing
def parse(text: str, where: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments); continuation lines joined, comments dropped."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):   # comment lines inside a continuation are skipped
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, args = buf.partition(" ")
        instr = word.upper()
        if instr not in SUPPORTED:
            raise BuildError(f"{where}:{start}: {word} is not supported by this builder "
                             f"(only {', '.join(SUPPORTED)})")
        args = args.strip()
        if instr not in ("RUN", "ENTRYPOINT", "CMD") and "$" in args:
            raise BuildError(f"{where}:{start}: variable expansion is not supported: {buf}")
        out.append((start, instr, args))
        buf = ""
    if buf:
        raise BuildError(f"{where}: the file ends inside a continued line")
    return out


def command(args: str) -> list[str]:
    """RUN/ENTRYPOINT/CMD: exec form (JSON array) or shell form."""
    if args.startswith("["):
        value = json.loads(args)
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise BuildError(f"not a JSON array of strings: {args}")
        return value
    return ["/bin/sh", "-c", args]


def env_pairs(args: str) -> list[tuple[str, str]]:
    words = shlex.split(args)
    if words and "=" not in words[0]:           # legacy form: ENV KEY value with spaces
        return [(words[0], args.split(None, 1)[1] if len(words) > 1 else "")]
    pairs = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq:
            raise BuildError(f"ENV: expected KEY=VALUE, got {w!r}")
        pairs.append((key, value))
    return pairs


# ------------------------------------------------------------------ the build context
class Context:
    def __init__(self, root: Path):
        self.root = root
        ignore = root / ".dockerignore"
        self.patterns = []
        if ignore.exists():
            for line in ignore.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("!"):
                    raise BuildError(".dockerignore: exceptions (!) are not supported")
                self.patterns.append(line.strip("/"))

    def ignored(self, rel: str) -> bool:
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            for p in self.patterns:
                if fnmatch.fnmatchcase(prefix, p) or (p.startswith("**/") and fnmatch.fnmatchcase(prefix, p[3:])) \
                        or (p.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], p[3:])):
                    return True
        return False

    def files(self, src: str) -> list[tuple[str, Path]]:
        """(path relative to src, absolute path) of every file and dir under src, sorted."""
        if any(c in src for c in "*?["):
            raise BuildError(f"COPY: wildcards are not supported ({src})")
        path = (self.root / src).resolve()
        if self.root.resolve() not in (path, *path.parents):
            raise BuildError(f"COPY: {src} is outside the build context")
        rel0 = os.path.relpath(path, self.root)
        if not path.exists() or self.ignored(rel0):
            raise BuildError(f"COPY: {src} does not exist in the build context {self.root}")
        if not path.is_dir():
            return [("", path)]
        out = []
        for dirpath, dirs, names in os.walk(path):
            dirs.sort()
            for name in sorted(dirs + names):
                p = Path(dirpath) / name
                rel = os.path.relpath(p, path)
                if not self.ignored(os.path.join(rel0, rel)):
                    out.append((rel, p))
            dirs[:] = [d for d in dirs if not self.ignored(os.path.join(rel0, os.path.relpath(Path(dirpath) / d, path)))]
        return out


def digest_files(files: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for rel, p in files:
        st = p.lstat()
        h.update(f"{rel}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(b"L" + os.readlink(p).encode())
        elif stat.S_ISREG(st.st_mode):
            h.update(b"F" + hashlib.sha256(p.read_bytes()).digest())
        else:
            h.update(b"D")
    return h.hexdigest()


# ------------------------------------------------------------------ layers
@dataclass
class Image:
    lowers: list[Path] = field(default_factory=list)    # layer dirs in overlay form, bottom first
    tars: list[Path] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    workdir: str = "/"
    user: str = ""
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None

    def lookup(self, path: str) -> os.stat_result | None:
        """Stat of `path` in the image so far (topmost layer that has it), None if absent
        or deleted (a whiteout of it or of a parent, or an opaque parent, above)."""
        parts = [p for p in path.split("/") if p]
        for d in reversed(self.lowers):
            for i in range(1, len(parts) + 1):
                try:
                    st = (d / "/".join(parts[:i])).lstat()
                except (FileNotFoundError, NotADirectoryError):
                    break
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None
                if i == len(parts):
                    return st
                if _xattr(str(d / "/".join(parts[:i])), "trusted.overlay.opaque") == b"y":
                    try:
                        return (d / "/".join(parts)).lstat()
                    except (FileNotFoundError, NotADirectoryError):
                        return None
        return os.lstat(self.lowers[0]) if not parts else None


def to_tar(diff: Path, dest: Path) -> None:
    """An overlay upper dir as an OCI layer: whiteout devices become .wh.<name>, opaque
    directories get .wh..wh..opq; owners are kept numerically."""
    def add_marker(tf: tarfile.TarFile, arcname: str) -> None:
        ti = tarfile.TarInfo(arcname)
        ti.mtime = int(time.time())
        tf.addfile(ti)

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        for root, dirs, files in os.walk(diff):
            dirs.sort()
            rel_root = os.path.relpath(root, diff)
            for name in sorted(dirs + files):
                p = os.path.join(root, name)
                arc = os.path.normpath(os.path.join(rel_root, name))
                st = os.lstat(p)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    add_marker(tf, os.path.join(os.path.dirname(arc), ".wh." + name))
                    continue
                ti = tf.gettarinfo(p, arcname=arc)
                ti.uname = ti.gname = ""
                if ti.isreg():
                    with open(p, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
                if stat.S_ISDIR(st.st_mode):
                    for attr in ("trusted.overlay.redirect", "trusted.overlay.metacopy"):
                        if _xattr(p, attr) is not None:
                            raise BuildError(f"overlay feature {attr} on {arc}: mount with redirect_dir=off")
                    if _xattr(p, "trusted.overlay.opaque") == b"y":
                        add_marker(tf, os.path.join(arc, ".wh..wh..opq"))


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


class Builder:
    def __init__(self, cache: Path, context: Context, base_rootfs: Path):
        self.cache, self.context, self.base_rootfs = cache, context, base_rootfs
        (cache / "layers").mkdir(parents=True, exist_ok=True)

    def layer(self, img: Image, key: str, what: str, make) -> None:
        """Add the cached layer `key` to img, making it with make(diff_dir) when missing."""
        d = self.cache / "layers" / key[:24]
        if not (d / ".done").exists():
            t0 = time.monotonic()
            log(f"{what}: building layer {key[:12]}")
            shutil.rmtree(d, ignore_errors=True)
            (d / "diff").mkdir(parents=True)
            make(d)
            to_tar(d / "diff", d / "layer.tar")
            shutil.rmtree(d / "work", ignore_errors=True)
            (d / ".done").write_text(what + "\n")
            log(f"{what}: done in {time.monotonic() - t0:.0f} s")
        else:
            log(f"{what}: cached {key[:12]}")
        os.utime(d)   # most recently used (prune keeps the newest)
        img.lowers.append(d / "diff")
        img.tars.append(d / "layer.tar")
        img.history.append(what)
        img.keys.append(key[:24])

    # ---- FROM
    def from_(self, ref: str) -> tuple[Image, str]:
        spec = BASES.get(ref)
        if spec is None:
            raise BuildError(f"FROM {ref}: no local stand-in for this image (known: {', '.join(BASES)})")
        img = Image(lowers=[self.base_rootfs / "rootfs"], tars=[self.base_rootfs / "layer.tar"],
                    history=["debootstrap bookworm minbase + python3, python3-venv"], keys=["base"])
        done = self.base_rootfs / ".done"
        key = sha("base", str(self.base_rootfs), str(done.stat().st_mtime_ns))
        img.env = {"PATH": DEFAULT_PATH}
        for script in spec["run"]:
            key = sha(key, "RUN", script)
            self.layer(img, key, f"FROM {ref}: RUN {script}", lambda d, s=script: self.run(img, d, ["/bin/sh", "-c", s]))
        img.env.update(spec["env"])
        img.cmd = list(spec["cmd"])
        return img, sha(key, json.dumps(spec, sort_keys=True))

    # ---- RUN
    def run(self, img: Image, d: Path, argv: list[str]) -> None:
        upper, work, merged = d / "diff", d / "work", d / "merged"
        work.mkdir(); merged.mkdir()
        lowers = ":".join(str(p) for p in reversed(img.lowers))
        mounts = []

        def mount(*args: str, target: Path) -> None:
            subprocess.run(["mount", *args, str(target)], check=True)
            mounts.append(target)

        try:
            mount("-t", "overlay", "overlay", "-o", f"lowerdir={lowers},upperdir={upper},workdir={work}",
                  target=merged)
            mount("-t", "proc", "proc", target=merged / "proc")
            mount("--bind", "/dev", target=merged / "dev")
            # Scratch for the build only (never in the layer): the host's CA bundle, so pip
            # verifies the registry, and its resolver (Docker mounts resolv.conf the same way).
            mount("-t", "tmpfs", "tmpfs", target=merged / "run")
            ca = os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
            shutil.copy(ca, merged / "run" / "host-ca.crt")
            if (merged / "etc/resolv.conf").is_file() and Path("/etc/resolv.conf").exists():
                mount("-o", "bind,ro", "/etc/resolv.conf", target=merged / "etc/resolv.conf")
            env = {"HOME": "/root", **img.env, "PIP_CERT": "/run/host-ca.crt", "SSL_CERT_FILE": "/run/host-ca.crt"}
            env.update({k: os.environ[k] for k in PASS_ENV if k in os.environ})
            uid, gid = self.user_ids(img.user, merged)

            def enter() -> None:
                os.chroot(merged)
                os.chdir(img.workdir)
                if gid is not None:
                    os.setgroups([])
                    os.setgid(gid)
                if uid is not None:
                    os.setuid(uid)

            logf = d / "run.log"
            with open(logf, "w") as out:
                done = subprocess.run(argv, env=env, preexec_fn=enter, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = logf.read_text()[-3000:]
                raise BuildError(f"RUN {' '.join(argv)} exited with {done.returncode} (log {logf}):\n{tail}")
        finally:
            for m in reversed(mounts):
                subprocess.run(["umount", "-l", str(m)], check=False)
            shutil.rmtree(merged, ignore_errors=True)

    @staticmethod
    def user_ids(user: str, root: Path) -> tuple[int | None, int | None]:
        if not user:
            return None, None
        name, _, group = user.partition(":")
        if not name.isdigit() or (group and not group.isdigit()):
            raise BuildError(f"USER {user}: only numeric uid[:gid] is supported before a RUN")
        return int(name), int(group) if group else int(name)

    # ---- COPY
    def copy(self, img: Image, d: Path, sources: list[tuple[str, list[tuple[str, Path]]]], dest: str,
             into_dir: bool) -> None:
        """Docker's rules: a directory's contents go into dest; a file goes to dest, or into
        it when dest ends with / (or is a directory, or there are several sources)."""
        diff = d / "diff"
        for src, files in sources:
            if len(files) == 1 and files[0][0] == "":
                target = os.path.join(dest, os.path.basename(src)) if into_dir or self.is_dir(img, dest) else dest
                self.mkparents(img, diff, os.path.dirname(target))
                self.put(files[0][1], diff / target.lstrip("/"))
                continue
            self.mkparents(img, diff, dest)
            for rel, p in files:
                self.put(p, diff / dest.lstrip("/") / rel)

    def is_dir(self, img: Image, path: str) -> bool:
        st = img.lookup(path)
        return bool(st and stat.S_ISDIR(st.st_mode))

    def mkparents(self, img: Image, diff: Path, path: str) -> None:
        """Create path and its parents in the layer, with the image's metadata where they
        exist already (else root 0755), so the layer does not change them."""
        parts = [p for p in path.split("/") if p]
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            target = diff / sub.lstrip("/")
            if target.is_dir():
                continue
            st = img.lookup(sub)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise BuildError(f"{sub} exists in the image and is not a directory")
            target.mkdir()
            os.chmod(target, stat.S_IMODE(st.st_mode) if st else 0o755)
            os.chown(target, st.st_uid if st else 0, st.st_gid if st else 0)

    @staticmethod
    def put(src: Path, target: Path) -> None:
        st = src.lstat()
        if stat.S_ISDIR(st.st_mode):
            target.mkdir(exist_ok=True)
            os.chmod(target, stat.S_IMODE(st.st_mode))
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)
        os.lchown(target, 0, 0)   # COPY without --chown: owned by root


def build(dockerfile: Path, context: Path, name: str, cache: Path, base_rootfs: Path, out: Path) -> dict:
    where = str(dockerfile)
    steps = parse(dockerfile.read_text(), where)
    if not steps or steps[0][1] != "FROM":
        raise BuildError(f"{where}: the first instruction must be FROM")
    b = Builder(cache, Context(context), base_rootfs)
    img, key = None, ""
    for n, instr, args in steps:
        text = f"{instr} {args}"
        try:
            if instr == "FROM":
                if img is not None:
                    raise BuildError("multi-stage builds are not supported")
                if len(args.split()) != 1:
                    raise BuildError("FROM takes one image (no AS, no --platform)")
                img, key = b.from_(args)
                continue
            key = sha(key, text)
            if instr == "ENV":
                img.env.update(env_pairs(args))
            elif instr == "USER":
                img.user = args
            elif instr == "ENTRYPOINT":
                img.entrypoint = command(args)
                img.cmd = None   # Docker resets CMD inherited from the base when ENTRYPOINT is set
            elif instr == "CMD":
                img.cmd = command(args)
            elif instr == "WORKDIR":
                path = os.path.normpath(os.path.join(img.workdir, args))
                if not b.is_dir(img, path):
                    b.layer(img, key, text, lambda d, p=path: b.mkparents(img, d / "diff", p))
                img.workdir = path
            elif instr == "RUN":
                # The key covers the env, user and workdir too: they are in the chain of keys.
                b.layer(img, key, text, lambda d, a=command(args): b.run(img, d, a))
            elif instr == "COPY":
                words = json.loads(args) if args.startswith("[") else shlex.split(args)
                if any(w.startswith("--") for w in words) or len(words) < 2:
                    raise BuildError("COPY takes SRC... DEST (no flags such as --from or --chown)")
                *srcs, dest = words
                into_dir = dest.endswith("/") or dest == "." or len(srcs) > 1
                dest = os.path.normpath(os.path.join(img.workdir, dest))
                sources = [(s, b.context.files(s)) for s in srcs]
                key = sha(key, *(digest_files(f) for _, f in sources))
                b.layer(img, key, text, lambda d, s=sources, t=dest, i=into_dir: b.copy(img, d, s, t, i))
        except BuildError as e:
            raise BuildError(f"{where}:{n}: {text}: {e}") from None
    cfg: dict = {"Env": [f"{k}={v}" for k, v in img.env.items()], "WorkingDir": img.workdir}
    if img.user:
        cfg["User"] = img.user
    if img.entrypoint:
        cfg["Entrypoint"] = img.entrypoint
    if img.cmd:
        cfg["Cmd"] = img.cmd
    # The archive is rewritten only when a layer or the config changed.
    final = sha(key, name, json.dumps(cfg, sort_keys=True), *img.keys)
    meta = Path(str(out) + ".json")
    if out.exists() and meta.exists() and json.loads(meta.read_text()).get("key") == final:
        log(f"{name}: archive {out} is up to date")
        return json.loads(meta.read_text())
    t0 = time.monotonic()
    result = write_archive(str(out), name, [str(t) for t in img.tars], cfg, img.history)
    result.update(key=final, layer_keys=img.keys)
    meta.write_text(json.dumps(result))
    log(f"{name}: archive {out} written in {time.monotonic() - t0:.0f} s")
    return result


def prune(cache: Path, keep: set[str]) -> None:
    """Remove cached layers no image built since uses (refs/*.json list what each uses)."""
    for d in (cache / "layers").iterdir():
        if d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", required=True, type=Path, help="the Dockerfile")
    ap.add_argument("--context", required=True, type=Path, help="the build context (repository root)")
    ap.add_argument("--name", required=True, help="image reference, e.g. docker.io/library/rung-trial:0.1.0")
    ap.add_argument("--cache", required=True, type=Path, help="layer cache folder")
    ap.add_argument("--base-rootfs", required=True, type=Path, help="debootstrap base: rootfs/, layer.tar, .done")
    ap.add_argument("--out", required=True, type=Path, help="the OCI layout archive to write")
    ap.add_argument("--prune", action="store_true", help="then drop layers no image in CACHE/refs uses")
    args = ap.parse_args(argv)
    try:
        result = build(args.file, args.context, args.name, args.cache, args.base_rootfs, args.out)
    except BuildError as e:
        print(f"dockerfile.py: error: {e}", file=sys.stderr)
        return 1
    refs = args.cache / "refs"
    refs.mkdir(exist_ok=True)
    (refs / (sha(args.name)[:16] + ".json")).write_text(json.dumps(result))
    if args.prune:
        keep = {k for f in refs.glob("*.json") for k in json.loads(f.read_text()).get("layer_keys", [])}
        prune(args.cache, keep)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
