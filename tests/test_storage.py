"""The testbed's local-path provisioner manifest (no cluster): local images only, the default StorageClass,
volumes under the node-private folder, and a digest that changes with the manifest."""
from __future__ import annotations

import json

import yaml

from testbed import images, node, storage


def docs() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(storage.manifest()) if d}


def test_every_image_is_one_the_testbed_builds() -> None:
    d = docs()
    container = d[("Deployment", "local-path-provisioner")]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == storage.LOCAL_PATH and storage.LOCAL_PATH.startswith("localhost/clusterproof/")
    helper = yaml.safe_load(d[("ConfigMap", "local-path-config")]["data"]["helperPod.yaml"])
    assert helper["spec"]["containers"][0]["image"] == images.PROBE


def test_default_storage_class_and_node_private_volumes() -> None:
    d = docs()
    sc = d[("StorageClass", storage.STORAGE_CLASS)]
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer" and sc["reclaimPolicy"] == "Delete"
    config = json.loads(d[("ConfigMap", "local-path-config")]["data"]["config.json"])
    assert config["nodePathMap"][0]["paths"] == [storage.VOLUME_ROOT]
    assert storage.VOLUME_ROOT in node.NODE_BINDS  # each node's own folder, bound in its mount namespace


def test_manifest_digest_is_stable_and_follows_changes(monkeypatch) -> None:
    def digest() -> str:
        return docs()[("Deployment", "local-path-provisioner")]["metadata"]["annotations"][storage.HASH_ANNOTATION]

    first = digest()
    assert digest() == first
    monkeypatch.setattr(storage, "SETUP", storage.SETUP + "# changed\n")
    assert digest() != first
