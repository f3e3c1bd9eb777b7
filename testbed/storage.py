"""The testbed's storage: rancher's local-path-provisioner, built from its Go module, as the default StorageClass.

A PersistentVolumeClaim (the nightly reports' volume) gets a hostPath volume in
/opt/local-path-provisioner on the node its first pod is scheduled to; that folder is node-private
(a bind in the node's mount namespace, testbed/node.py), as a real node's disk is. The helper pods
that create and delete a volume's folder run the probe image (busybox), so nothing is pulled.
"""
from __future__ import annotations

import hashlib
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from . import images, net
from .images import ImageSpec
from .kube import kubectl
from .paths import LOCAL_PATH_VERSION
from .state import PKI

LOCAL_PATH = f"localhost/clusterproof/local-path-provisioner:{LOCAL_PATH_VERSION}"
NAMESPACE = "local-path-storage"
STORAGE_CLASS = "local-path"
VOLUME_ROOT = "/opt/local-path-provisioner"
HASH_ANNOTATION = "clusterproof.io/manifest-sha256"

CONFIG = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [VOLUME_ROOT]}]}
HELPER_POD = f"""apiVersion: v1
kind: Pod
metadata:
  name: helper-pod
spec:
  priorityClassName: system-node-critical
  tolerations:
    - key: node.kubernetes.io/disk-pressure
      operator: Exists
      effect: NoSchedule
  containers:
    - name: helper-pod
      image: {images.PROBE}
      imagePullPolicy: IfNotPresent
"""
SETUP = '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n'
TEARDOWN = '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n'


def image_spec(bin_dir: Path) -> ImageSpec:
    """The provisioner's image: its static binary and the few files every image has."""
    binary = bin_dir / "local-path-provisioner"
    layer = images._single_binary_layer("local-path-provisioner", binary)
    return ImageSpec(LOCAL_PATH, [layer], entrypoint=["/local-path-provisioner"])


def manifest() -> str:
    """Upstream's deploy/local-path-storage.yaml (v0.0.30) with local images and the default-class annotation."""
    docs: list[dict] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "local-path-provisioner-service-account", "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "local-path-provisioner-role", "namespace": NAMESPACE},
         "rules": [{"apiGroups": [""], "resources": ["pods"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "local-path-provisioner-role"},
         "rules": [
             {"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"],
              "verbs": ["get", "list", "watch"]},
             {"apiGroups": [""], "resources": ["persistentvolumes"],
              "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
             {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
             {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "local-path-provisioner-bind", "namespace": NAMESPACE},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "local-path-provisioner-role"},
         "subjects": [{"kind": "ServiceAccount", "name": "local-path-provisioner-service-account",
                       "namespace": NAMESPACE}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "local-path-provisioner-bind"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "local-path-provisioner-role"},
         "subjects": [{"kind": "ServiceAccount", "name": "local-path-provisioner-service-account",
                       "namespace": NAMESPACE}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": NAMESPACE},
         "data": {"config.json": json.dumps(CONFIG, indent=1), "setup": SETUP, "teardown": TEARDOWN,
                  "helperPod.yaml": HELPER_POD}},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer",
         "reclaimPolicy": "Delete"},
    ]
    deployment: dict = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "local-path-provisioner", "namespace": NAMESPACE},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "local-path-provisioner"}},
                 "template": {"metadata": {"labels": {"app": "local-path-provisioner"}}, "spec": {
                     "serviceAccountName": "local-path-provisioner-service-account",
                     "containers": [{
                         "name": "local-path-provisioner", "image": LOCAL_PATH, "imagePullPolicy": "IfNotPresent",
                         "command": ["/local-path-provisioner", "--debug", "start", "--config",
                                     "/etc/config/config.json"],
                         "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config/"}],
                         "env": [{"name": "POD_NAMESPACE",
                                  "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                 {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"},
                                 {"name": "HELPER_IMAGE", "value": images.PROBE}],
                         "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                     "volumes": [{"name": "config-volume", "configMap": {"name": "local-path-config"}}]}}},
    }
    docs.append(deployment)
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()
    deployment["metadata"]["annotations"] = {HASH_ANNOTATION: digest}
    return "\n---\n".join(json.dumps(d, sort_keys=True) for d in docs) + "\n"


def _applied_digest() -> str | None:
    """The manifest digest on the running Deployment (an HTTPS GET: cheaper than starting kubectl)."""
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    ctx.load_cert_chain(str(PKI / "admin.crt"), str(PKI / "admin.key"))
    url = (f"https://127.0.0.1:{net.API_PORT}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/"
           "local-path-provisioner")
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            doc = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return (doc.get("metadata", {}).get("annotations") or {}).get(HASH_ANNOTATION)


def deploy() -> bool:
    """Apply the provisioner and its StorageClass unless this very manifest runs already; True when applied."""
    text = manifest()
    want = next(json.loads(d) for d in text.split("\n---\n") if '"kind": "Deployment"' in d)
    if _applied_digest() == want["metadata"]["annotations"][HASH_ANNOTATION]:
        return False
    kubectl("apply", "-f", "-", input=text)
    return True
