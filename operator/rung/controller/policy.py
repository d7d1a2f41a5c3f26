"""What a Study may ask of the cluster, as the operator's admin allows it.

Whoever may create a Study must gain no power they did not already have: the operator
creates pods and reads Secrets for them. So by default a Study cannot make its trials
privileged or put them on the node's network, cannot mount a node path of its choosing
(`file://` checkpoints go under the operator's own checkpoint root), and can inject only
Secrets its namespace has labelled for Rung. A Study that asks for more is refused with
a condition and starts no pod.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Callable

from rung.api import Study
from rung.errors import InputError
from rung.storage import file_path

ADMIN = "ask the operator's admin (Helm value studyPolicy.{})"


class NotAllowed(InputError):
    """The spec is valid, but this operator does not let Studies do it."""


@dataclass(frozen=True)
class StudyPolicy:
    allow_privileged: bool = False
    allow_host_network: bool = False
    allow_host_path: bool = False              # file:// checkpoints outside the operator's root
    secret_label: tuple[str, str] | None = ("rung.dev/credentials", "true")   # None: any Secret


def parse_label(text: str) -> tuple[str, str] | None:
    """`--secret-label KEY=VALUE` ("" or "-": any Secret of the namespace may be used)."""
    if text in ("", "-"):
        return None
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InputError("--secret-label", f"{text!r} is not KEY=VALUE", "write e.g. rung.dev/credentials=true")
    return key, value


def checkpoint_path(study: Study, root: str, policy: StudyPolicy) -> str:
    """The root a Study's checkpoints go under: its own URI if it has one and may use it,
    else the operator's root. Raises NotAllowed for a node path outside the root."""
    uri = study.spec.checkpoints.uri
    if not uri:
        return root
    if uri.startswith("file://") and not policy.allow_host_path and not under(uri, root):
        where = f"the operator's checkpoint root {root}" if root.startswith("file://") else "a node path"
        raise NotAllowed("spec.checkpoints.uri", f"{uri} is a node path outside {where}",
                         f"leave it out (the operator's store is used) or use s3://; or {ADMIN.format('allowHostPath')}")
    return uri


def check(study: Study, policy: StudyPolicy, secret_labels: Callable[[str], dict | None]) -> None:
    """Raise NotAllowed for the first thing the Study asks that the policy does not allow.
    `secret_labels(name)` gives a Secret's labels in the Study's namespace (None: no such
    Secret; the store's probe then says so)."""
    trial = study.spec.trial
    if trial.privileged and not policy.allow_privileged:
        raise NotAllowed("spec.trial.privileged", "privileged trial containers are not allowed here",
                         f"remove it, or {ADMIN.format('allowPrivileged')}")
    if trial.host_network and not policy.allow_host_network:
        raise NotAllowed("spec.trial.hostNetwork", "trial pods on the node's network are not allowed here",
                         f"remove it, or {ADMIN.format('allowHostNetwork')}")
    secret = study.spec.checkpoints.secret_ref
    if secret and policy.secret_label is not None:
        labels = secret_labels(secret)
        key, value = policy.secret_label
        if labels is not None and labels.get(key) != value:
            raise NotAllowed("spec.checkpoints.secretRef", f"Secret {secret!r} is not labelled {key}={value}, "
                             "so Studies may not use it",
                             f"label it if it is meant for Studies: kubectl label secret {secret} {key}={value}")


def under(uri: str, root: str) -> bool:
    """Whether a file:// URI names the root or a path inside it ('..' resolved first)."""
    if not (uri.startswith("file://") and root.startswith("file://")):
        return False
    path, base = (posixpath.normpath(file_path(u)) for u in (uri, root))
    return path == base or path.startswith(base.rstrip("/") + "/")
