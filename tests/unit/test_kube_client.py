"""The API client comes from the kubeconfig KUBECONFIG names when it is made, not when the
client library was imported (test fixtures and tools set it later)."""

import pytest

from rung.kube.api import api_client

pytestmark = pytest.mark.unit

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:16999", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_the_client_reads_the_kubeconfig_named_now(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert api_client().configuration.host == "https://127.0.0.1:16999"
