"""The testbed as a Python object: what the CLI, the project's tests and the benchmarks call.

    tb = Testbed()
    tb.up()                                    # idempotent: about 1 s when everything runs
    with tb.fault("taint", node="tb-node-1"):  # healed on the way out, also when the body fails
        ...

There is one testbed per machine (fixed bridge, namespaces and ports), and its folders come from
the environment when the package is imported (CLUSTERPROOF_CACHE, CLUSTERPROOF_TESTBED_STATE), so that
processes it starts (the GPU plugin) agree with it; its node count is recorded by `up --nodes N`
(before the first, CLUSTERPROOF_TESTBED_NODES or 2). A Testbed is only a handle on it: make as many as you
like. Errors a user can fix raise TestbedError, whose `code` is the CLI's exit status.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import faults as _faults
from . import images as _images
from . import storage as _storage
from . import suite_image as _suite_image
from .faults import ActiveFault, FaultInfo
from .health import Component, NodeInfo, Status, status
from .paths import DEFAULT_VERSION
from .startup import up
from .state import ADMIN_KUBECONFIG, SSH_KEY
from .teardown import down

__all__ = ["ActiveFault", "Component", "FaultInfo", "NodeInfo", "Status", "Testbed"]


class Testbed:
    """The local testbed: up, down, status, where to connect, and faults to break it with."""

    __test__ = False  # not a pytest test class, though tests import it

    def __init__(self, version: str = DEFAULT_VERSION):
        self.version = version  # the Kubernetes version `up` builds and starts

    def up(self, nodes: int | None = None, cni: str | None = None, bootstrap: str | None = None) -> Status:
        """Build (cached) and start what is not running, heal recorded faults, wait until healthy; with NODES
        (1..6), a testbed of that many nodes, with CNI (kube-router or bridge) that CNI, with BOOTSTRAP (processes
        or kubeadm) made that way (one with another count, CNI or bootstrap is taken down first)."""
        return up(self.version, nodes, cni, bootstrap)

    def down(self) -> float:
        """Stop everything and remove every trace on the machine; returns the seconds it took."""
        return down()

    def status(self) -> Status:
        """Check every component now (a few seconds; changes nothing)."""
        return status()

    def kubeconfig(self) -> Path:
        """The cluster admin's kubeconfig."""
        return ADMIN_KUBECONFIG

    def ssh_key(self) -> Path:
        """The private key every node's sshd accepts for root."""
        return SSH_KEY

    def images(self) -> dict[str, str]:
        """Role -> image reference of what the nodes have imported (no registry: pull policy Never)."""
        return {"pause": _images.PAUSE, "probe": _images.PROBE, "hello-python": _images.HELLO,
                "coredns": _images.COREDNS,
                # the GPU probe runs on the probe image: it has python3, and no libcuda as on any CPU node
                "gpu-probe": _images.PROBE,
                # the suite itself, for nightly runs in the cluster (manifests/nightly), and the volumes' provisioner
                "suite": _suite_image.SUITE, "local-path-provisioner": _storage.LOCAL_PATH}

    def env(self) -> dict[str, str]:
        """What the suite needs to run against the testbed (`testbed env` prints it as export lines)."""
        return {"KUBECONFIG": str(self.kubeconfig()), "CLUSTERPROOF_SSH_KEY": str(self.ssh_key()),
                "CLUSTERPROOF_GPU_PROBE_IMAGE": self.images()["gpu-probe"]}

    def faults(self) -> list[FaultInfo]:
        """Every fault that can be injected, by name."""
        return _faults.catalog()

    def active_faults(self) -> list[ActiveFault]:
        """Faults injected and not healed yet (by anyone: the record is in the state folder)."""
        return _faults.active()

    def inject(self, fault: str, node: str | None = None, value: str | None = None) -> None:
        """Break something (see faults()); without a node, the fault's default node(s)."""
        _faults.inject(fault, node, value)

    def heal(self, fault: str | None = None, node: str | None = None) -> None:
        """Undo FAULT (every active fault without one) on NODE (everywhere without one)."""
        _faults.heal(fault, node)

    @contextmanager
    def fault(self, fault: str, node: str | None = None, value: str | None = None) -> Iterator[None]:
        """Inject FAULT for the body of a with block and heal it afterwards, whatever happens."""
        _faults.info(fault)  # an unknown name fails here, not again in the heal below
        try:
            self.inject(fault, node, value)
            yield
        finally:
            self.heal(fault, node)
