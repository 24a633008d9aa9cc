"""The deferred package inits (corpusmill/deferred_imports.py): lancedb works without its
REST client's API layer, and the client is whole again on first use. Each check runs in a
fresh interpreter, since the point is what an import pulls in."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

from corpusmill.deferred_imports import defer_package_init, is_deferred

ROOT = Path(__file__).resolve().parents[2]


def _fresh(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lancedb_writes_and_searches_without_the_rest_client_api(tmp_path):
    found = _fresh(
        "import json, sys\n"
        "import corpusmill, lancedb, pyarrow as pa\n"
        f"db = lancedb.connect({str(tmp_path)!r})\n"
        "v = pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32(), 2))\n"
        "t = db.create_table('t', pa.table({'v': v, 'id': [1, 2]}))\n"
        "hit = t.search([1.0, 0.1]).limit(1).to_list()[0]['id']\n"
        "print(json.dumps({'hit': hit,\n"
        "    'api': 'lance_namespace_urllib3_client.api' in sys.modules,\n"
        "    'models': 'lance_namespace_urllib3_client.models' in sys.modules}))\n"
    )
    assert found == {"hit": 1, "api": False, "models": True}


def test_the_rest_client_is_whole_on_first_use():
    found = _fresh(
        "import json, sys\n"
        "import corpusmill, lancedb\n"
        "from lance_namespace_urllib3_client import ApiClient, Configuration\n"
        "from lance_namespace_urllib3_client.api.table_api import TableApi\n"
        "print(json.dumps({'client': ApiClient.__name__, 'api': TableApi.__name__,\n"
        "    'init_ran': 'ApiClient' in vars(sys.modules['lance_namespace_urllib3_client'])}))\n"
    )
    assert found == {"client": "ApiClient", "api": "TableApi", "init_ran": True}


def test_a_deferred_package_runs_its_init_once_on_first_attribute(tmp_path, monkeypatch):
    package = tmp_path / "deferred_pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("RUNS = []\nRUNS.append(1)\nVALUE = 42\n")
    (package / "sub" / "__init__.py").write_text("X = 'sub'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "deferred_pkg", raising=False)
    monkeypatch.delitem(sys.modules, "deferred_pkg.sub", raising=False)

    assert defer_package_init("deferred_pkg") is True
    module = sys.modules["deferred_pkg"]
    assert isinstance(module, types.ModuleType) and is_deferred(module)
    from deferred_pkg.sub import X  # a submodule imports without the package's __init__

    assert X == "sub" and is_deferred(module)
    assert module.VALUE == 42 and module.VALUE == 42 and module.RUNS == [1]
    assert not is_deferred(module)
    assert defer_package_init("deferred_pkg") is False  # already imported: left alone
    assert defer_package_init("no_such_package_here") is False


def test_lancedb_imports_with_the_override_marker_and_leaves_overrides_as_it_was():
    """Below Python 3.12 lancedb's methods are checked at import by `overrides.override`;
    under corpusmill they get the marker 3.12's `typing.override` is, and the `overrides`
    package keeps its checking decorator for anyone else."""
    found = _fresh(
        "import json\n"
        "import corpusmill, lancedb, lancedb.db, overrides, typing_extensions\n"
        "print(json.dumps({'marker': lancedb.db.override is typing_extensions.override,\n"
        "    'left_as_it_was': overrides.override.__module__,\n"
        "    'marked': getattr(lancedb.db.LanceDBConnection.open_table, '__override__', 0)}))\n"
    )
    assert found == {"marker": True, "left_as_it_was": "overrides.overrides", "marked": True}
