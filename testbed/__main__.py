"""python -m testbed up|down|status|env|fault: a real Kubernetes cluster on this machine."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import NoReturn

from .api import Testbed
from .errors import TestbedError
from .paths import DEFAULT_VERSION
from .state import BOOTSTRAPS, CNIS, check_node_count


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="Build (cached), start and wait until nodes are Ready and CoreDNS is available")
    up.add_argument("--version", default=DEFAULT_VERSION, help=f"Kubernetes version (default {DEFAULT_VERSION})")
    up.add_argument("--nodes", default=None, metavar="N",
                    help="number of nodes, 1 to 6 (default: the running testbed's, else 2); a testbed with another "
                         "count is taken down first")
    up.add_argument("--cni", default=None, choices=CNIS,
                    help="kube-router (an agent DaemonSet: routes and NetworkPolicy) or bridge (a config file per "
                         "node, no policy); default: the running testbed's, else kube-router; a testbed with another "
                         "CNI is taken down first")
    up.add_argument("--bootstrap", default=None, choices=BOOTSTRAPS,
                    help="kubeadm (kubeadm init on tb-node-1, join on the others; control plane as static pods) or "
                         "processes (each component started here; what the fault matrix runs on); default: the "
                         "running testbed's, else kubeadm; a testbed made the other way is taken down first")
    sub.add_parser("down", help="Stop everything the testbed started and remove its state")
    st = sub.add_parser("status", help="One line per component; exit 0 only when all are healthy")
    st.add_argument("--json", action="store_true", help="Print JSON instead")
    sub.add_parser("env", help="Print export lines for a shell (KUBECONFIG, SSH key)")
    f = sub.add_parser("fault", help="Break or heal a part of the testbed (for tests)")
    fs = f.add_subparsers(dest="action", required=True)
    for action in ("inject", "heal"):
        a = fs.add_parser(action)
        a.add_argument("name")
        a.add_argument("--node", default=None)
        if action == "inject":
            a.add_argument("--value", default=None)
    fs.add_parser("list", help="Known faults and the ones active now")
    m = fs.add_parser("matrix", help="Inject every fault the check catalog names, run the suite against each, and "
                                     "print one row per check: owner failed, unexpected failures")
    out = m.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="Print JSON instead")
    out.add_argument("--markdown", action="store_true", help="Print the README's table")
    m.add_argument("--fault", default=None, help="Only this fault (its name)")
    m.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per suite run (default 2)")
    m.add_argument("--from-json", nargs="+", metavar="FILE", default=None,
                   help="Run nothing: build the table from earlier --json outputs (the newest run of each fault)")
    return p


def _interrupt(*_: object) -> NoReturn:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    tb = Testbed(getattr(args, "version", DEFAULT_VERSION))
    if args.cmd == "up":
        # SIGTERM during up stops as cleanly as Ctrl-C (a later up or down finishes the job).
        signal.signal(signal.SIGTERM, _interrupt)
        tb.up(None if args.nodes is None else check_node_count(args.nodes), args.cni, args.bootstrap)
        print(f"export KUBECONFIG={tb.kubeconfig()}")
    elif args.cmd == "down":
        print(f"testbed: down in {tb.down():.1f}s")
    elif args.cmd == "status":
        st = tb.status()
        if args.json:
            print(json.dumps(st.to_json(), indent=1))
        else:
            if not st.components:
                print("testbed: not up (python -m testbed up)")
            for c in st.components:
                where = f"[{c.node}]" if c.node else ""
                print(f"{'ok  ' if c.healthy else 'FAIL'} {c.name}{where}: {c.detail}")
        return 0 if st.healthy else 1
    elif args.cmd == "env":
        for key, value in tb.env().items():
            print(f"export {key}={value}")
    elif args.action == "list":
        for fault in tb.faults():
            print(f"{fault.name:24} {fault.description}")
        for active in tb.active_faults():
            print(f"active: {active.name} {active.node or ''}")
    elif args.action == "matrix":
        return _matrix(tb, args)
    elif args.action == "inject":
        tb.inject(args.name, args.node, args.value)
    else:
        tb.heal(args.name, args.node)
    return 0


def _matrix(tb: Testbed, args: argparse.Namespace) -> int:
    import datetime as dt

    from . import matrix

    if args.from_json:
        try:
            docs = [json.loads(Path(f).read_text()) for f in args.from_json]
        except (OSError, ValueError) as exc:
            raise TestbedError(f"--from-json: {exc}", code=2) from None
        runs = matrix.load_runs(docs)
    else:
        runs = matrix.run_matrix(tb, args.fault, args.workers, log=lambda line: print(line, file=sys.stderr))
    table = matrix.rows(runs)
    if args.json:
        print(json.dumps(matrix.to_json(runs, table), indent=1))
    elif args.markdown:
        print(matrix.render_markdown(table, dt.date.today().isoformat()))
    else:
        print(matrix.render_text(table))
    ran = [r for r in table if r.owner_failed is not None]
    return 0 if ran and all(r.owner_failed and not r.unexpected for r in ran) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except TestbedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("testbed: interrupted; run `python -m testbed up` to finish or `python -m testbed down` to clean up",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
