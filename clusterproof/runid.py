"""The run's identity, shared by the xdist controller and its workers."""
from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import pytest

LABEL_OWNED = "clusterproof.io/owned"
LABEL_RUN = "clusterproof.io/run"
ANNOTATION_HOLDER = "clusterproof.io/holder"
STALE_AFTER_S = 3600
# The run's id in config.stash: one per process, or the controller's under xdist (workerinput).
RUN_KEY = pytest.StashKey[dict[str, str]]()


def new_run() -> dict[str, str]:
    return {"run": time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6],
            "holder": f"{socket.gethostname()}:{os.getpid()}"}


def get(config: Any) -> dict[str, str]:
    """This run's id and holder: from the controller when under xdist."""
    wi = getattr(config, "workerinput", None)
    if wi and "clusterproof_run" in wi:
        return wi["clusterproof_run"]
    if RUN_KEY not in config.stash:
        config.stash[RUN_KEY] = new_run()
    return config.stash[RUN_KEY]


def worker(config: Any) -> str:
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
