"""Named timeouts in one place; `--timeout-scale` multiplies all of them."""
from __future__ import annotations

_BASE = {
    "api": 10.0,             # one API request
    "connect": 10.0,         # first contact with the API server
    "exec": 30.0,            # one command in a pod or over SSH
    "ssh_connect": 8.0,      # opening an SSH session
    "pod_start": 90.0,       # a probe pod from a local image to Running
    "rollout": 180.0,        # a Deployment to all replicas ready
    "namespace_delete": 120.0,
    "endpoints": 60.0,
    "probe": 10.0,           # one network probe (max-time)
    "probe_connect": 2.0,    # one network probe (connect-timeout)
    "daemonset": 120.0,
    "policy": 10.0,          # a NetworkPolicy created to show on the data path (CNI-006 polls this long)
}
_scale = 1.0


def set_scale(scale: float) -> None:
    """Scale every named timeout (slow clusters, loaded CI machines)."""
    global _scale
    if scale <= 0:
        raise ValueError("timeout scale must be positive")
    _scale = scale


def scaled(seconds: float) -> float:
    """Any duration under the run's --timeout-scale."""
    return seconds * _scale


def get(name: str) -> float:
    """The named timeout in seconds, scaled."""
    return _BASE[name] * _scale
