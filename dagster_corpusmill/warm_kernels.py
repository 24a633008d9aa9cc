"""Imported last by the warm run server (launcher.PRELOAD): builds the oneDNN kernels of
the product shapes earlier runs recorded on this machine, so that every run forked after
it starts with them (corpusmill/model/kernel_shapes.py says why and how).

An import, because importing modules is all `multiprocessing`'s fork server can be told
to do before it forks. It never stops the server: a failure only leaves runs to build
their own kernels, as they did before. Afterwards corpusmill's modules are dropped again,
so each run still imports the project's code fresh (launcher.py).
"""

import sys
import time

started = time.perf_counter()
products = 0
try:
    from corpusmill.config import Settings
    from corpusmill.model.kernel_shapes import warm_recorded

    products = warm_recorded(Settings.from_env().cache_dir)
except Exception as exc:  # noqa: BLE001 (the server must start whatever happens here)
    print(f"corpusmill: no kernels warmed in the run server: {exc!r}", file=sys.stderr)
finally:
    for name in [n for n in sys.modules if n == "corpusmill" or n.startswith("corpusmill.")]:
        del sys.modules[name]

seconds = round(time.perf_counter() - started, 3)
