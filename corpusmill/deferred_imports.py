"""Package inits of dependencies that a corpusmill process does not need, run on first use.

lancedb (0.40) imports `lance_namespace`, which imports its request and response models
from the generated REST client `lance_namespace_urllib3_client`; that client's package
`__init__` also imports its whole API layer, a pydantic-validated class per REST operation:
about a second of every cold process on the 2-core machines (`python -X importtime -c
"import lancedb"`), for a REST namespace connection that a directory or `s3://` store never
makes. `defer_package_init` registers such a package without running its `__init__`, so
its submodules (the models) import as usual; the first attribute asked of the package
itself (a REST namespace after all) runs the `__init__` then, and from there on the
package is what it always was.

Applied when `corpusmill` is imported (its `__init__`), before anything imports lancedb.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType

# Packages whose __init__ waits for first use. Only what a measured cold process paid for.
DEFERRED = ("lance_namespace_urllib3_client",)

_lock = threading.Lock()


def defer_package_init(name: str) -> bool:
    """Register package `name` with its `__init__` not yet run; False if it is already
    imported or is not an installed package (nothing changes then)."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(attr: str):
        with _lock:
            if module.__dict__.pop("__getattr__", None) is not None:
                loader.exec_module(module)  # the package's own __init__, once
        return getattr(module, attr)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module
    return True


def defer_unused_inits() -> None:
    for name in DEFERRED:
        defer_package_init(name)


def is_deferred(module: ModuleType) -> bool:
    """True while `module`'s own __init__ has not run."""
    return "__getattr__" in module.__dict__
