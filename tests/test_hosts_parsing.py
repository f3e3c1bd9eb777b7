"""The host file parsers the checks rely on (pure functions; the real hosts are in test_hosts_ssh.py)."""
from __future__ import annotations

import pytest

from clusterproof import hosts, linux


def test_sysctl_later_file_wins_and_etc_masks_same_name():
    files = {
        "/usr/lib/sysctl.d/50-default.conf": "net.ipv4.ip_forward = 0\n",
        "/usr/lib/sysctl.d/99-k8s.conf": "net.ipv4.ip_forward = 0\n",
        "/etc/sysctl.d/99-k8s.conf": "# comment\nnet/ipv4/ip_forward=1\n",
    }
    got = linux.persisted_sysctls(files)["net.ipv4.ip_forward"]
    assert (got.value, got.path) == ("1", "/etc/sysctl.d/99-k8s.conf")


def test_sysctl_conf_is_read_last():
    files = {"/etc/sysctl.d/99-k8s.conf": "net.ipv4.ip_forward = 1\n", "/etc/sysctl.conf": "net.ipv4.ip_forward=0\n"}
    assert linux.persisted_sysctls(files)["net.ipv4.ip_forward"].value == "0"


def test_dump_round_trip():
    text = f"{linux.FILE_MARK}/etc/a.conf\nx = 1\n\n{linux.FILE_MARK}/etc/b.conf\ny = 2\n"
    assert linux.split_dump(text) == {"/etc/a.conf": "x = 1\n\n", "/etc/b.conf": "y = 2\n"}


def test_modules_listed_with_comments():
    files = {"/etc/modules-load.d/k8s.conf": "# k8s\noverlay\nbr_netfilter # bridge\n"}
    assert set(linux.persisted_modules(files)) == {"overlay", "br_netfilter"}


def test_fstab_swap_entries_ignore_comments_and_noauto():
    fstab = ("# /swap none swap sw 0 0\n/dev/vda / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n"
             "/s2 none swap noauto 0 0\n")
    assert linux.active_swap_entries(fstab) == ["/swap.img none swap sw 0 0"]


def test_proc_swaps_header_only_means_off():
    assert linux.swaps_in_use("Filename Type Size Used Priority\n") == []
    assert len(linux.swaps_in_use("Filename Type Size Used Priority\n/swap.img file 10 0 -2\n")) == 1


def test_listening_ports_from_proc_net_tcp():
    text = ("  sl  local_address rem_address   st\n"
            "   0: 00000000:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1\n"
            "   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000 0 0 2\n")
    assert linux.listening_ports(text) == {10250}


BRIDGE = '{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge","bridge":"cni0"},{"type":"portmap"}]}'
CALICO = '{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"calico"},{"type":"bandwidth"}]}'
NET_D = "/etc/cni/net.d/"


def test_cni_bridge_detection_uses_the_first_config():
    assert linux.cni_uses_bridge({NET_D + "10-b.conflist": BRIDGE, NET_D + "20-c.conflist": CALICO}) \
        == (True, "/etc/cni/net.d/10-b.conflist uses the bridge plugin (a Linux bridge)")
    assert linux.cni_uses_bridge({}) == (None, "no CNI config in /etc/cni/net.d")


def test_cni_bridge_detection_skips_an_invalid_first_config():
    """The runtime loads the first VALID file by name: a broken 05-* does not hide the bridge in 10-*."""
    bridged, why = linux.cni_uses_bridge({NET_D + "05-broken.conf": "{not json",
                                          NET_D + "07-empty.conflist": '{"name": "x", "plugins": []}',
                                          NET_D + "10-b.conflist": BRIDGE})
    assert bridged is True and why.startswith("/etc/cni/net.d/10-b.conflist uses the bridge plugin")
    assert "05-broken.conf: not valid JSON" in why and "07-empty.conflist: names no plugin type" in why


def test_cni_bridge_detection_ignores_a_bridge_config_after_the_loaded_one():
    """Calico sorts first and is valid: the later bridge file is never loaded, so pods are not bridged."""
    assert linux.cni_uses_bridge({NET_D + "05-c.conflist": CALICO, NET_D + "10-b.conflist": BRIDGE,
                                  NET_D + "99-loopback.conf": '{"type": "loopback"}'}) \
        == (False, "/etc/cni/net.d/05-c.conflist uses calico, bandwidth (no Linux bridge)")


@pytest.mark.parametrize(("name", "text"), [
    ("10-flannel.conflist", '{"name":"cbr0","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,'
                            '"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}'),
    ("10-flannel.conf", '{"name": "cbr0", "type": "flannel"}'),
    ("10-kuberouter.conflist", '{"name":"kubernetes","plugins":[{"type":"bridge","bridge":"kube-bridge",'
                               '"isDefaultGateway":true,"ipam":{"type":"host-local"}}]}'),
    ("10-weave.conflist", '{"name":"weave","plugins":[{"type":"weave-net","hairpinMode":true},'
                          '{"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}'),
], ids=["flannel", "flannel-conf", "kube-router", "weave"])
def test_cni_bridge_based_plugins(name, text):
    bridged, why = linux.cni_uses_bridge({NET_D + name: text})
    assert bridged is True and why.startswith(NET_D + name) and "(a Linux bridge)" in why


@pytest.mark.parametrize("plugin", ["calico", "cilium-cni", "ptp", "antrea", "ovn-k8s-cni-overlay", "macvlan"])
def test_cni_plugins_without_a_linux_bridge(plugin):
    assert linux.cni_uses_bridge({NET_D + "10-x.conflist": f'{{"name":"x","plugins":[{{"type":"{plugin}"}}]}}'})[0] \
        is False


def test_cni_bridge_detection_without_a_loadable_config():
    bridged, why = linux.cni_uses_bridge({NET_D + "10-broken.conflist": "{"})
    assert bridged is None and why.startswith("no CNI config in /etc/cni/net.d that the runtime can load (")
    assert "10-broken.conflist: not valid JSON" in why


class _ShellHost(hosts.Host):
    """A host whose commands run in a local sh (what SSH or the probe pod would run), counting round trips."""

    def __init__(self) -> None:
        super().__init__(hosts.HostSpec("local://test", "ssh"))
        self.calls = 0

    def _exec(self, script: str, timeout: float) -> tuple[int, str, str]:
        import subprocess

        self.calls += 1
        p = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=timeout, check=False)
        return p.returncode, p.stdout, p.stderr


def test_file_types_ask_every_path_in_one_round_trip(tmp_path) -> None:
    import socket

    sock_path = tmp_path / "rt.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    paths = [str(sock_path), str(tmp_path / "file"), str(tmp_path), str(tmp_path / "dangling"),
             str(tmp_path / "missing dir/with space")]
    host = _ShellHost()
    try:
        got = host.file_types(paths)
        calls = host.calls
        one_by_one = {p: host.file_type(p) for p in paths}
    finally:
        s.close()
    assert got == dict(zip(paths, ["socket", "regular", "directory", "symlink-dangling", "missing"]))
    assert calls == 1 and got == one_by_one   # one round trip, and the same answers as the one-path form
