"""Run a command in a private network namespace whose only interface is loopback.

A local Ray cluster listens on every interface (see corpusmill/scale/cluster.py); inside
`unshare --net` with `lo` up, every interface is loopback, so nothing outside the machine
(or in the host's other namespaces) can reach it, and it can reach nothing but itself.
Needs root (CI and these machines run as root). Servers the command needs, like the local
S3 server, must start inside too: the host's 127.0.0.1 is not this namespace's.

    python -m tools.netns -- python -m tools.scale_demo
"""

from __future__ import annotations

import os
import shutil
import sys


def netns_argv(argv: list[str]) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    return [unshare, "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise SystemExit("usage: python -m tools.netns -- COMMAND [ARGS...]")
    full = netns_argv(argv)
    os.execvp(full[0], full)


if __name__ == "__main__":
    main()
