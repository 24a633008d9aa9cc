"""Import-time work of dependencies that a corpusmill process does not need.

Package inits, run on first use instead.

lancedb (0.40) imports `lance_namespace`, which imports its request and response models
from the generated REST client `lance_namespace_urllib3_client`; that client's package
`__init__` also imports its whole API layer, a pydantic-validated class per REST operation:
about a second of every cold process on the 2-core machines (`python -X importtime -c
"import lancedb"`), for a REST namespace connection that a directory or `s3://` store never
makes. `defer_package_init` registers such a package without running its `__init__`, so
its submodules (the models) import as usual; the first attribute asked of the package
itself (a REST namespace after all) runs the `__init__` then, and from there on the
package is what it always was.

Checks of correct code. Below Python 3.12 lancedb marks its methods with the `overrides`
package's `@override` (from 3.12, `typing.override`): at each class definition it
disassembles the class body's bytecode to find the base classes and compares signatures,
about 0.3 s of CPU in every cold `import lancedb` here (user+system, medians of 7 alternated
processes) to re-check what lancedb's own tests check. lancedb's import runs with
`typing_extensions.override` in its place, the marker Python 3.12 gives it; the `overrides`
package is left as it was once the import is done.

Applied when `corpusmill` is imported (its `__init__`), before anything imports lancedb.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType

# Packages whose __init__ waits for first use. Only what a measured cold process paid for.
DEFERRED = ("lance_namespace_urllib3_client",)
# Packages imported with `typing.override`'s marker in place of `overrides.override`.
MARKER_OVERRIDE = ("lancedb",)

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
    if sys.version_info < (3, 12) and not any(
        isinstance(f, _MarkerOverrideFinder) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _MarkerOverrideFinder())


class _MarkerOverrideFinder(importlib.abc.MetaPathFinder):
    """Finds a `MARKER_OVERRIDE` package where the path finder does, with a loader that
    executes it (and so every submodule its import brings in) under the marker."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in MARKER_OVERRIDE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _MarkerOverrideLoader(spec.loader)
        return spec


class _MarkerOverrideLoader(importlib.abc.Loader):
    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str):  # resource readers and the like: the real loader's
        return getattr(self.inner, name)

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        try:
            import overrides
            from typing_extensions import override as marker
        except ImportError:  # nothing to swap: the import runs as it would
            self.inner.exec_module(module)
            return
        checking = overrides.override
        overrides.override = marker  # type: ignore[assignment]
        try:
            self.inner.exec_module(module)
        finally:
            overrides.override = checking


def is_deferred(module: ModuleType) -> bool:
    """True while `module`'s own __init__ has not run."""
    return "__getattr__" in module.__dict__
