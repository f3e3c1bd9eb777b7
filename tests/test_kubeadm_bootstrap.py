"""`python -m testbed up --bootstrap kubeadm` (testbed/kubeadm.py), checked without a cluster: the configs kubeadm
init and join read, the kubelet supervisor that stands in for kubeadm's systemd drop-in, the images of the static
pods, and which faults refuse to run on such a testbed. The lifecycle test brings one up for real."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from testbed import faults, kubeadm, net, pki, state
from testbed.errors import TestbedError


@pytest.fixture
def token(monkeypatch, tmp_path: Path) -> str:
    monkeypatch.setattr(kubeadm, "TOKEN_FILE", tmp_path / "kubeadm-token")
    return kubeadm._token()


def _docs(text: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(text)}


def test_init_config_is_the_testbed_as_kubeadm_makes_it(token: str) -> None:
    control = net.nodes(2)[0]
    docs = _docs(kubeadm.init_config(control, "v1.35.4"))
    assert set(docs) == {"InitConfiguration", "ClusterConfiguration", "KubeletConfiguration"}
    init, cluster, kubelet = docs["InitConfiguration"], docs["ClusterConfiguration"], docs["KubeletConfiguration"]
    assert {d["apiVersion"] for d in (init, cluster)} == {"kubeadm.k8s.io/v1beta4"}
    assert init["bootstrapTokens"][0]["token"] == token and token == kubeadm._token()   # made once, then kept
    assert init["localAPIEndpoint"] == {"advertiseAddress": control.ip, "bindPort": net.API_PORT}
    reg = init["nodeRegistration"]
    assert reg["name"] == control.name and reg["criSocket"] == kubeadm.CRI_SOCKET
    assert reg["ignorePreflightErrors"] == list(kubeadm.PREFLIGHT_IGNORES)
    extra = {a["name"]: a["value"] for a in reg["kubeletExtraArgs"]}
    assert extra["node-ip"] == control.ip and extra["cgroup-root"] == f"/{control.name}"
    # kubeadm's CoreDNS and kube-proxy add-ons are off: the testbed runs its own (testbed/kubeadm.py says why)
    assert cluster_of(docs)["dns"] == {"disabled": True} and cluster_of(docs)["proxy"] == {"disabled": True}
    # the testbed's ranges (198.18.0.0/15, never 10/8), the images built here
    assert cluster["networking"] == {"podSubnet": net.CLUSTER_CIDR, "serviceSubnet": net.SERVICE_CIDR,
                                     "dnsDomain": "cluster.local"}
    assert cluster["imageRepository"] == cluster["etcd"]["local"]["imageRepository"] == kubeadm.IMAGE_REPOSITORY
    assert cluster["etcd"]["local"]["imageTag"] == cluster["kubernetesVersion"] == "v1.35.4"
    assert cluster["controlPlaneEndpoint"] == f"{control.ip}:{net.API_PORT}"
    # the settings every node's kubelet shares; clusterDNS is where the testbed's CoreDNS Service is
    assert kubelet["cgroupDriver"] == "cgroupfs" and kubelet["failCgroupV1"] is False
    assert kubelet["clusterDNS"] == [net.DNS_IP] and kubelet["healthzBindAddress"] == "0.0.0.0"


def cluster_of(docs: dict[str, dict]) -> dict:
    return docs["ClusterConfiguration"]


def test_join_config_pins_the_ca_by_its_public_key(token: str, tmp_path: Path) -> None:
    pki.ensure_ca(tmp_path)
    worker, control = net.nodes(2)[1], net.nodes(2)[0]
    doc = _docs(kubeadm.join_config(worker, control, tmp_path / "ca.crt"))["JoinConfiguration"]
    boot = doc["discovery"]["bootstrapToken"]
    assert boot["apiServerEndpoint"] == f"{control.ip}:{net.API_PORT}" and boot["token"] == token
    spki = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert boot["caCertHashes"] == ["sha256:" + hashlib.sha256(spki).hexdigest()]
    # the same as openssl computes it (how kubeadm's docs tell a user to)
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(tmp_path / "ca.crt")],
                         capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True,
                         check=True).stdout
    assert boot["caCertHashes"][0] == "sha256:" + hashlib.sha256(der).hexdigest()
    assert doc["nodeRegistration"]["name"] == worker.name


def test_kubelet_unit_waits_for_kubeadm_then_runs_the_kubelet_with_its_flags(tmp_path: Path) -> None:
    """The supervisor script run for real with a stand-in kubelet and the paths moved under tmp_path."""
    root = tmp_path / "root"
    fake = tmp_path / "kubelet"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/argv\n")
    fake.chmod(0o755)
    script = kubeadm.kubelet_unit_script(fake).replace("/var/lib/kubelet", f"{root}/var/lib/kubelet").replace(
        "/etc/kubernetes", f"{root}/etc/kubernetes")
    (root / "var/lib/kubelet").mkdir(parents=True)
    (root / "etc/kubernetes").mkdir(parents=True)
    p = subprocess.Popen(["/bin/sh", "-c", script])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1.5)   # nothing written yet: it waits (the unit would restart the kubelet)
        (root / "var/lib/kubelet/config.yaml").write_text("kind: KubeletConfiguration\n")
        (root / "var/lib/kubelet/kubeadm-flags.env").write_text(
            'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock '
            '--node-ip=198.19.0.12"\n')
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(timeout=1.5)   # no kubeconfig of either kind yet (join writes the bootstrap one first)
        (root / "etc/kubernetes/bootstrap-kubelet.conf").write_text("apiVersion: v1\n")
        assert p.wait(timeout=10) == 0
    finally:
        p.kill()
    argv = (tmp_path / "argv").read_text().split()
    assert f"--config={root}/var/lib/kubelet/config.yaml" in argv
    assert f"--bootstrap-kubeconfig={root}/etc/kubernetes/bootstrap-kubelet.conf" in argv
    assert "--container-runtime-endpoint=unix:///run/containerd/containerd.sock" in argv
    assert "--node-ip=198.19.0.12" in argv


def test_control_plane_images_carry_the_command_on_path(tmp_path: Path) -> None:
    binary = tmp_path / "kube-apiserver"
    binary.write_bytes(b"\x7fELF not really")
    spec = kubeadm.image_spec("kube-apiserver", binary, "v1.35.4")
    assert spec.name == "localhost/clusterproof/kube-apiserver:v1.35.4"   # imageRepository/name:kubernetesVersion
    entries = spec.layers[0].entries
    assert entries["usr/local/bin/kube-apiserver"].source == binary
    assert any("/usr/local/bin" in e for e in spec.env)


def test_processes_only_faults_exist_and_refuse_on_kubeadm(monkeypatch) -> None:
    assert kubeadm_only_unknown() == set()
    monkeypatch.setattr(faults, "bootstrap_mode", lambda: "kubeadm")
    with pytest.raises(TestbedError, match="made for the testbed of processes") as exc:
        faults.inject("scheduler-stop")
    assert exc.value.code == 2


def kubeadm_only_unknown() -> set[str]:
    return set(faults.PROCESSES_ONLY) - set(faults.FAULTS)


def test_bootstrap_choice_is_checked(monkeypatch, tmp_path: Path) -> None:
    assert state.check_bootstrap("kubeadm") == "kubeadm"
    with pytest.raises(TestbedError, match="--bootstrap takes one of kubeadm, processes, not 'kind'") as exc:
        state.check_bootstrap("kind")
    assert exc.value.code == 2
    monkeypatch.setattr(state, "BOOTSTRAP_FILE", tmp_path / "bootstrap")
    monkeypatch.setattr(state, "STATE", tmp_path)
    monkeypatch.delenv("CLUSTERPROOF_TESTBED_BOOTSTRAP", raising=False)
    assert state.bootstrap_mode() == "kubeadm"          # nothing here yet: the default for the next up, as the course
    monkeypatch.setenv("CLUSTERPROOF_TESTBED_BOOTSTRAP", "processes")
    assert state.bootstrap_mode() == "processes"
    monkeypatch.setenv("CLUSTERPROOF_TESTBED_BOOTSTRAP", "kubeadm")
    assert state.api_server_url() == f"https://{net.nodes(1)[0].ip}:{net.API_PORT}"
    (tmp_path / "version").write_text("v1.35.4\n")
    assert state.bootstrap_mode() == "processes"        # a testbed from before --bootstrap: made of processes
    (tmp_path / "bootstrap").write_text("kubeadm\n")
    assert state.bootstrap_mode() == "kubeadm"
