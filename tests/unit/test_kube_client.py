"""The API client comes from the kubeconfig KUBECONFIG names when it is made, not when the
client library was imported (test fixtures and tools set it later)."""

import pytest

from rung.kube.api import Kube, api_client

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


def test_the_operators_client_keeps_a_connection_for_each_of_its_threads(tmp_path, monkeypatch):
    """Fewer kept connections than threads calling at once: a TLS handshake per extra call."""
    from rung.controller.study import OperatorConfig
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = OperatorConfig("img", "file:///c", workers=16, api_concurrency=8)
    kept = api_client(config.connections).rest_client.pool_manager.connection_pool_kw["maxsize"]
    assert kept == config.connections >= 16 + 8 + 2


class RecordingApi:
    """An ApiClient stand-in: remembers each call's URL and Accept header, answers an empty
    list, and an empty watch that stops the informers (one list and one watch each)."""

    def __init__(self):
        self.stop, self.calls = None, []   # stop: the operator's stop flag

    def call_api(self, url, method, header_params, query_params, **kwargs):
        watching = ("watch", "true") in query_params
        self.calls.append((url, "watch" if watching else "list", header_params["Accept"]))
        if watching:
            self.stop.set()
        return type("Response", (), {"data": b'{"items": [], "metadata": {"resourceVersion": "7"}}',
                                     "stream": lambda self, **kw: iter(()), "release_conn": lambda self: None})()


def test_the_operators_trial_watch_asks_the_server_for_metadata_only_after_its_first_list_and_its_pod_watch_for_whole_pods():
    from rung.controller.manager import Controller
    from rung.controller.study import OperatorConfig

    api = RecordingApi()
    controller = Controller(Kube(api), OperatorConfig(trial_image="t", checkpoint_root="file:///tmp/c"))
    api.stop, api.calls = controller.stopping, []   # the calls from here on: the informers'
    for informer in controller.informers:   # each one's own list-then-watch, in this thread
        controller.stopping.clear()
        informer._run()
    metadata = "application/json;as=PartialObjectMetadata{};g=meta.k8s.io;v=v1"
    assert sorted(api.calls) == [("/api/v1/pods", "list", "application/json"),
                                 ("/api/v1/pods", "watch", "application/json"),
                                 ("/apis/rung.dev/v1alpha1/trials", "list", "application/json"),   # for first loads
                                 ("/apis/rung.dev/v1alpha1/trials", "watch", metadata.format(""))]
    api.calls = []
    controller.stopping.clear()
    controller.informers[-1]._run()   # a list again (say its version was too old): names and versions only
    assert api.calls[0] == ("/apis/rung.dev/v1alpha1/trials", "list", metadata.format("List"))
