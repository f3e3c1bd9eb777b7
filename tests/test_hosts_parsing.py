"""The host file parsers the checks rely on (pure functions; the real hosts are in test_hosts_ssh.py)."""
from __future__ import annotations

from clusterproof import linux


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


def test_cni_bridge_detection_uses_the_first_config():
    bridge = '{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"},{"type":"portmap"}]}'
    calico = '{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"calico"}]}'
    assert linux.cni_uses_bridge({"/etc/cni/net.d/10-b.conflist": bridge, "/etc/cni/net.d/20-c.conflist": calico})[0]
    assert linux.cni_uses_bridge({"/etc/cni/net.d/05-c.conflist": calico, "/etc/cni/net.d/10-b.conflist": bridge}) \
        == (False, "/etc/cni/net.d/05-c.conflist uses calico (no Linux bridge)")
    assert linux.cni_uses_bridge({"/etc/cni/net.d/10-flannel.conf": '{"type": "flannel"}'})[0] is True
    assert linux.cni_uses_bridge({}) == (None, "no CNI config in /etc/cni/net.d")
