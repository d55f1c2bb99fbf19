"""The rules the package's shape keeps: imports form a DAG, and every kind the code compares is documented."""

from __future__ import annotations

import ast
import importlib
import itertools
import re
import subprocess
import sys
from pathlib import Path

from distill import __version__
from distill.checks import FindingKind
from distill.loader import Rule
from distill.plan import ReasonKind
from distill.specs import PathKind
from distill.transports import TRANSPORTS

from helpers import REPO
from helpers.tree import Tree

PACKAGE = REPO / "distill"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every distill module `path` imports, at module level, inside functions or under TYPE_CHECKING."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in found if n == "distill" or n.startswith("distill.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {n for n in _imports(path, name) if n in modules and n != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path of module names, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                state[node] = 2
                stack.pop()
                continue
            nxt = pending.pop()
            if state.get(nxt) == 1:
                names = [n for n, _ in stack]
                return [*names[names.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, sorted(graph[nxt])))
    return None


def test_the_package_imports_form_a_dag() -> None:
    graph = _graph()
    assert len(graph) > 40, "the walk found too few modules to mean anything"
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    cycle = _cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert all(after in graph[before] for before, after in itertools.pairwise(cycle))
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_collectors_never_see_the_planner() -> None:
    graph = _graph()
    for collector in ("distill.runtime", "distill.system", "distill.pkgmeta", "distill.links", "distill.builder"):
        assert "distill.planner" not in graph[collector], collector


def test_each_transport_module_provides_what_its_row_promises() -> None:
    """The package docstring's contract: readers and writers by what the row allows, and nothing it does not."""
    for row in TRANSPORTS:
        module = importlib.import_module(row.module)
        promised = {
            "read_image": row.source and row.image,
            "read_view": row.source and not row.image,
            "write_image": row.destination and row.image,
            "write_plan": row.destination and not row.image,
        }
        for function, wanted in promised.items():
            assert callable(getattr(module, function, None)) is wanted, f"{row.name}: {row.module}.{function}"


def test_transport_modules_load_only_when_used() -> None:
    """Opening the pipeline loads the table and the dispatch, no transport module and no `requests`."""
    code = "import sys, distill.pipeline; print(sorted(m for m in sys.modules if m.startswith('distill.transports.') or m == 'requests'))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "['distill.transports.table']"


def _modules_at_exit(args: list[str], cwd: Path) -> tuple[int, set[str], str]:
    """Run `distill ARGS` through its entry point in a fresh interpreter: (exit code, every module loaded when
    it exited, stdout). The modules are written with repr, so the harness itself loads nothing more."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.__stderr__.write('MODULES ' + repr(sorted(sys.modules)) + '\\n'))\n"
        f"sys.argv = ['distill', *{args!r}]\n"
        "from distill.__main__ import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    line = next(line for line in result.stderr.splitlines() if line.startswith("MODULES "))
    return result.returncode, set(ast.literal_eval(line.removeprefix("MODULES "))), result.stdout


def _loaded(modules: set[str], *prefixes: str) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


# What a directory-to-directory run uses none of: the image machinery, the registry client and its
# credentials, the HTTP stack, the image transports, the terminal UI.
IMAGE_AND_REGISTRY = ("distill.oci", "distill.registry.auth", "distill.registry.client", "requests", "urllib3", "tarfile", "rich")


def test_a_rootfs_run_loads_no_image_or_registry_code(tree: Tree, tmp_path: Path) -> None:
    tree.app()
    code, modules, _ = _modules_at_exit(["/usr/bin/app", "--from", f"rootfs:{tree.root}", "--out", f"rootfs:{tmp_path / 'out'}"], tmp_path)
    assert code == 0 and (tmp_path / "out/usr/bin/app").is_file()
    assert "distill.planner" in modules and "distill.transports.rootfs" in modules  # the run did run
    assert _loaded(modules, *IMAGE_AND_REGISTRY) == []
    assert sorted(m for m in modules if m.startswith("distill.transports.")) == ["distill.transports.rootfs", "distill.transports.table"]
    assert "distill.builtin_index" in modules and _loaded(modules, "yaml") == []  # built-in fragments come pre-parsed


def test_help_loads_click_and_the_cli_only(tmp_path: Path) -> None:
    code, modules, out = _modules_at_exit(["--help"], tmp_path)
    assert code == 0 and "Commands:" in out and "explain" in out
    heavy = ("yaml", "elftools", "distill.planner", "distill.pipeline", "distill.profile", "distill.registry", *IMAGE_AND_REGISTRY)
    assert _loaded(modules, *heavy) == []


def test_version_is_answered_before_click_loads(tmp_path: Path) -> None:
    code, modules, out = _modules_at_exit(["--version"], tmp_path)
    assert (code, out) == (0, f"distill, version {__version__}\n")
    assert _loaded(modules, "click") == [] and sorted(m for m in modules if m.startswith("distill")) == ["distill", "distill.__main__"]


def _backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", text))


def _first_column(doc: str, header: str) -> set[str]:
    text = (REPO / "docs" / doc).read_text()
    rows = text[text.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    return {cell for row in rows for cell in _backticked(row.split("|")[1])}


def test_reason_kinds_are_documented_exactly() -> None:
    assert _first_column("cli.md", "| reason kind |") == {k.value for k in ReasonKind}


def test_finding_kinds_are_documented_exactly() -> None:
    assert _first_column("cli.md", "| finding kind |") == {k.value for k in FindingKind}


def test_loader_rules_are_documented_exactly() -> None:
    assert _first_column("loader.md", "| rule | what found the object |") == {r.value for r in Rule}


def test_path_kinds_are_documented_exactly() -> None:
    assert _first_column("profiles.md", "| kind | example | ships |") | {PathKind.SOURCE.value} == {k.value for k in PathKind}


def test_the_cli_docs_table_lists_every_transport_as_the_table_defines_it() -> None:
    text = (REPO / "docs" / "cli.md").read_text()
    rows = text[text.index("| syntax | `--from` / `--base` | `--out` |") :].split("\n\n", 1)[0].splitlines()[2:]
    documented = {}
    for row in rows:
        syntax, reads, writes = (cell.strip() for cell in row.split(" | ")[:3])
        name = re.match(r"\| `([a-z-]+):", syntax)
        assert name, row
        documented[name.group(1)] = (reads.startswith("yes"), bool(writes))
    assert documented == {t.name: (t.source, t.destination) for t in TRANSPORTS}
