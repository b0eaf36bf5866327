"""How `detinfer run` finds the API server: in a pod, its ServiceAccount; elsewhere, a kubeconfig.

In a pod the kubelet mounts the ServiceAccount's token, the cluster's CA and the namespace at
/var/run/secrets/kubernetes.io/serviceaccount and sets KUBERNETES_SERVICE_HOST and
KUBERNETES_SERVICE_PORT (https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/).
`DETINFER_SERVICE_ACCOUNT_DIR` names another folder of the same three files; it is what the
local pod runner (detinfer.local.pod_runner) sets, since a local process cannot have that path.
When it is set, the in-cluster configuration is the only one: a missing file or variable is an
error, never a fall-back to a kubeconfig that may hold an administrator's credentials.

Both of the operator's clients use it: its own (detinfer.controller.cluster) and kopf's, through
the login handler below (kopf's own in-cluster login reads only the standard path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.config.incluster_config import InClusterConfigLoader

SERVICE_ACCOUNT_DIR_ENV = "DETINFER_SERVICE_ACCOUNT_DIR"
STANDARD_SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ServiceAccountError(Exception):
    """The in-cluster configuration named by DETINFER_SERVICE_ACCOUNT_DIR cannot be used."""


def service_account_dir() -> Path | None:
    """The folder given by DETINFER_SERVICE_ACCOUNT_DIR, if that variable is set."""
    value = os.environ.get(SERVICE_ACCOUNT_DIR_ENV)
    return Path(value) if value else None


def load() -> str:
    """Configure the client library's default Configuration; say which source was used:
    'in-cluster' (a ServiceAccount) or 'kubeconfig'."""
    explicit = service_account_dir()
    folder = explicit or STANDARD_SERVICE_ACCOUNT_DIR
    loader = InClusterConfigLoader(
        token_filename=str(folder / "token"), cert_filename=str(folder / "ca.crt")
    )
    try:
        loader.load_and_set()
    except config.ConfigException as exc:
        if explicit is not None:
            raise ServiceAccountError(f"{SERVICE_ACCOUNT_DIR_ENV}={explicit}: {exc}") from None
        config.load_kube_config()
        return "kubeconfig"
    return "in-cluster"


def namespace() -> str | None:
    """The pod's namespace from the ServiceAccount folder, if there is one."""
    path = (service_account_dir() or STANDARD_SERVICE_ACCOUNT_DIR) / "namespace"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def kopf_login(**_: Any) -> Any:
    """kopf's credentials, from the same source as the operator's own client."""
    import kopf

    load()
    conf = client.Configuration.get_default_copy()
    header = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        username=conf.username or None,
        password=conf.password or None,
        scheme=scheme,
        token=token,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
        default_namespace=namespace(),
    )
