"""The run's identity, shared by the xdist controller and its workers."""
from __future__ import annotations

import os
import socket
import time
import uuid

LABEL_OWNED = "clusterproof.io/owned"
LABEL_RUN = "clusterproof.io/run"
ANNOTATION_HOLDER = "clusterproof.io/holder"
STALE_AFTER_S = 3600


def new_run() -> dict[str, str]:
    return {"run": time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6],
            "holder": f"{socket.gethostname()}:{os.getpid()}"}


def get(config) -> dict[str, str]:
    """This run's id and holder: from the controller when under xdist."""
    wi = getattr(config, "workerinput", None)
    if wi and "clusterproof_run" in wi:
        return wi["clusterproof_run"]
    if not hasattr(config, "_clusterproof_run"):
        config._clusterproof_run = new_run()
    return config._clusterproof_run


def worker(config) -> str:
    """xdist's worker id (gw0, ...), or "main": the suite runs with or without xdist."""
    return getattr(config, "workerinput", {}).get("workerid", "main")


def holder_gone(holder: str) -> bool:
    """True when the run that holds an object was on this machine and its process is gone."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
