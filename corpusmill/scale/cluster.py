"""Connect to a Ray cluster, or start a private local one that only loopback can reach.

Ray's processes (GCS, raylet, workers, the runtime-env agent) listen on every interface
even with `_node_ip_address="127.0.0.1"` (checked with `ss -ltnp` on ray 2.60: `*:port`
for gcs_server, raylet and each worker). A local cluster is therefore only started inside
a private network namespace, whose sole interface is `lo` (`unshare --net` as root, with
`lo` brought up: `make scale-demo` and the Ray tests do this; see `tools/netns.py`).
Outside one, set CORPUSMILL_RAY_ADDRESS to a cluster you run (KubeRay in production).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from corpusmill.errors import ConfigError


def in_private_network() -> bool:
    """True when this process sees no interface but loopback."""
    return {name for _index, name in socket.if_nameindex()} <= {"lo"}


@contextlib.contextmanager
def ray_cluster(
    address: str = "", num_cpus: int | None = None, runtime_env: dict | None = None
) -> Iterator[None]:
    """Ray, initialised for the block: `address` ("" = a private local cluster);
    `runtime_env`: Ray's, for the job's workers (env_vars, py_modules, ...)."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already holds a cluster
        yield
        return
    kwargs: dict = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
        "runtime_env": runtime_env,
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        if not in_private_network():
            raise ConfigError(
                "a local Ray cluster listens on every interface, so corpusmill starts one "
                "only in a private network namespace: run under `unshare --net` with lo up "
                "(python -m tools.netns -- <command>, as root), or set CORPUSMILL_RAY_ADDRESS "
                "to a running cluster"
            )
        ray.init(num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1", **kwargs)
    try:
        yield
    finally:
        ray.shutdown()
