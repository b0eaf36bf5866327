"""detinfer.connection: the ServiceAccount folder named by DETINFER_SERVICE_ACCOUNT_DIR."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from detinfer import connection
from detinfer.local.pod_runner import local_command, operator_env


def test_the_named_folder_is_the_in_cluster_configuration(tmp_path: Path, monkeypatch):
    # load() sets the client library's default: put the old one back afterwards.
    monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)
    (tmp_path / "token").write_text("abc")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "namespace").write_text("detinfer-system\n")
    monkeypatch.setenv(connection.SERVICE_ACCOUNT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    assert connection.load() == "in-cluster"
    conf = client.Configuration.get_default_copy()
    assert conf.host == "https://127.0.0.1:6443"
    assert conf.ssl_ca_cert == str(tmp_path / "ca.crt")
    assert conf.get_api_key_with_prefix("BearerToken") == "bearer abc"
    assert connection.namespace() == "detinfer-system"


def test_a_named_folder_without_a_token_is_an_error_not_a_kubeconfig(tmp_path, monkeypatch):
    monkeypatch.setenv(connection.SERVICE_ACCOUNT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    with pytest.raises(connection.ServiceAccountError, match=str(tmp_path)):
        connection.load()


def test_the_operator_pod_runs_on_its_ip_without_a_kubeconfig(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/root/admin.kubeconfig")
    container = {"name": "operator", "command": ["detinfer"], "args": ["run", "--metrics-port=9"]}
    line = local_command(container, "operator", "127.1.0.3", tmp_path / "t")
    assert line[-4:] == ["run", "--metrics-port=9", "--metrics-address", "127.1.0.3"]
    env = operator_env(container, "https://127.0.0.1:32764", tmp_path, "detinfer-7d9-x2")
    assert "KUBECONFIG" not in env
    assert env["HOSTNAME"] == "detinfer-7d9-x2"  # the pod's name, as the kubelet sets it
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "32764"
    assert env[connection.SERVICE_ACCOUNT_DIR_ENV] == str(tmp_path)


def test_the_operators_client_keeps_a_connection_per_thread(tmp_path: Path, monkeypatch):
    from detinfer.controller import handlers
    from detinfer.controller.cluster import Cluster

    monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)
    (tmp_path / "token").write_text("abc")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv(connection.SERVICE_ACCOUNT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    threads = handlers.WORKERS + handlers.EVENT_THREADS
    cluster = Cluster.connect(connections=threads)
    assert cluster.api_client.configuration.connection_pool_maxsize == threads
    assert cluster.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] == threads
    # The children's watches share the configuration, with a pool of their own.
    watches = cluster.watch_client()
    assert watches.rest_client.pool_manager is not cluster.api_client.rest_client.pool_manager
