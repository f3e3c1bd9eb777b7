"""Swap: the kubelet (by default) refuses to run with swap on."""
from __future__ import annotations

import pytest

from clusterproof import linux
from clusterproof.checks import evidence, require


@pytest.mark.check("HOST-004")
def test_swap_off(node_host):
    r = node_host.run("cat /proc/swaps")
    evidence(f"{node_host.id}: cat /proc/swaps", r.evidence())
    active = linux.swaps_in_use(r.stdout)
    require(r.rc == 0 and not active, f"swap on {node_host.id}", "off (no area in /proc/swaps)",
            f"{len(active)} active swap area(s)" if r.rc == 0 else f"/proc/swaps unreadable: {r.stderr.strip()}",
            "swapoff -a && sed -i '/\\sswap\\s/ s/^[^#]/#&/' /etc/fstab", rows=active)
