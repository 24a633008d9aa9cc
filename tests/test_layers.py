"""The layering the README draws, checked: the core knows nothing of the layers above it,
no module imports another that (directly or not) imports it back, and nothing but the
store (corpusmill/store/) opens a Lance dataset or writes a table.

    app/  (CLI, eval harness)  ->  definitions.py  ->  assets/ resources/ sensors/  ->  corpusmill/
    dagster_corpusmill/  (the Dagster instance's plug-ins: dagster.yaml)  ->  corpusmill/
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("corpusmill", "app", "assets", "resources", "sensors", "dagster_corpusmill")
ABOVE_THE_CORE = (
    "dagster",
    "assets",
    "resources",
    "sensors",
    "definitions",
    "app",
    "dagster_corpusmill",
)


def project_modules() -> dict[str, Path]:
    """Every module of the project, by dotted name (packages by their __init__)."""
    found = {"definitions": ROOT / "definitions.py"}
    for package in PROJECT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules that `path` imports anywhere in its body (function-level imports
    count: a lazy import that points the wrong way is still an arrow)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
    resolved = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles_anywhere_in_the_project():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_nothing_above_it_statically():
    graph = import_graph()
    upward = {
        name: sorted(t for t in targets if t.split(".")[0] in ABOVE_THE_CORE)
        for name, targets in graph.items()
        if name.split(".")[0] == "corpusmill"
    }
    assert {k: v for k, v in upward.items() if v} == {}
    # and the scan does see upward arrows where they are allowed, e.g. the CLI's
    assert "app.runs" in graph["app.cli"] and "resources" in graph["definitions"]


def test_importing_every_core_module_loads_no_dagster_and_no_wiring():
    """In a fresh interpreter, so nothing imported by another test can hide an arrow."""
    core = sorted(m for m in project_modules() if m.split(".")[0] == "corpusmill")
    script = (
        "import importlib, json, sys\n"
        f"for m in {core!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert len(core) > 30 and "corpusmill.model.encoder" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in ABOVE_THE_CORE) == []


# -- one writer: every write to a table goes through corpusmill/store/ --------------------

WRITER = "corpusmill.store"
# Lance's Python package (pylance) opens datasets, writes fragments and commits: only the
# store imports it. Of lancedb, the rest of the project may build query expressions and
# index configurations; connecting (and so reaching tables to write) is the store's.
LANCEDB_ALLOWED = ("lancedb.expr", "lancedb.index")
# Writes of a lancedb connection or table (a handle `Store.open` returns). `add`, `update`
# and `drop_columns` are writes too, but share their names with set, dict and pyarrow
# methods, so a name scan cannot tell them apart; the import rule above still keeps a
# module from connecting on its own.
WRITE_METHODS = {
    "create_table",
    "drop_table",
    "rename_table",
    "merge_insert",
    "delete",
    "add_columns",
    "alter_columns",
    "set_unenforced_primary_key",
    "create_index",
    "create_scalar_index",
    "create_fts_index",
    "optimize",
    "compact_files",
    "cleanup_old_versions",
    "restore",
}


def lance_writes(source: str) -> list[str]:
    """What in `source` opens a Lance dataset or writes a table itself, as `line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            if top == "lance" or (top == "lancedb" and not name.startswith(LANCEDB_ALLOWED)):
                found.append(f"{node.lineno}: import {name}")
        call = node.func if isinstance(node, ast.Call) else None
        if isinstance(call, ast.Attribute) and call.attr in WRITE_METHODS:
            found.append(f"{node.lineno}: .{call.attr}(...)")
    return found


def test_nothing_outside_the_store_opens_or_writes_a_lance_table():
    outside = {
        name: path
        for name, path in project_modules().items()
        if name != WRITER and not name.startswith(WRITER + ".")
    }
    assert len(outside) > 40 and "corpusmill.scale.worker" in outside
    offenders = {
        name: hits for name, path in outside.items() if (hits := lance_writes(path.read_text()))
    }
    assert offenders == {}


def test_the_writer_scan_finds_a_write():
    snippet = (
        "import lance\n"
        "from lance.fragment import write_fragments\n"
        "from lancedb.expr import col\n"
        "ds = lance.dataset(uri)\n"
        "table.merge_insert('chunk_id').execute(rows)\n"
        "rows.append(1)\n"
    )
    assert lance_writes(snippet) == [
        "1: import lance",
        "2: import lance.fragment",
        "5: .merge_insert(...)",
    ]
    # and the store itself is where these are found
    assert lance_writes((ROOT / "corpusmill" / "store" / "fragments.py").read_text())


# The process environment is read in one place: corpusmill/config.py (Settings.from_env,
# prepare_process). Tools, benchmarks and tests are not scanned (not in PROJECT_PACKAGES).
ENVIRONMENT = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
READS_THE_ENVIRONMENT = {"corpusmill.config"}


def environment_uses(source: str) -> list[str]:
    """`os.environ`, `os.getenv`, ... (and `from os import environ`) in `source`."""
    uses = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ENVIRONMENT
        ):
            uses.append((node.lineno, f"os.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            names = [a.name for a in node.names if a.name in ENVIRONMENT]
            uses += [(node.lineno, f"from os import {name}") for name in names]
    return [f"line {line}: {what}" for line, what in sorted(uses)]


def test_only_the_configuration_reads_the_environment():
    found = {
        name: uses
        for name, path in project_modules().items()
        if (uses := environment_uses(path.read_text()))
    }
    others = {n: u for n, u in found.items() if n not in READS_THE_ENVIRONMENT}
    assert others == {}, "read it in corpusmill/config.py (Settings) and pass it down"


def test_the_environment_scan_sees_every_form():
    source = (
        "import os\nfrom os import getenv\nos.environ['A']\nos.getenv('B')\nos.path.join('x')\n"
    )
    assert environment_uses(source) == [
        "line 2: from os import getenv",
        "line 3: os.environ",
        "line 4: os.getenv",
    ]


def test_only_definitions_py_makes_a_definitions_object():
    """`build_definitions` is the one builder: no other module constructs `Definitions`."""
    makers = set()
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called == "Definitions":
                    makers.add(name)
    assert makers == {"definitions"}
