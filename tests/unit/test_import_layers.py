"""The shape of certmq's imports and modules: no module imports itself back through others, each
layer imports only what lies below it, and no module grows past one concern (docs/architecture.md).

Every ``import`` of every module under ``src/certmq`` counts, those under ``if TYPE_CHECKING:``
and inside functions too: a reader follows them all.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import certmq

PACKAGE_ROOT = Path(certmq.__file__).parent

# Modules at the package root that import nothing of certmq: any layer may use them.
FOUNDATION = frozenset(
    {"certmq", "certmq.file_stamp", "certmq.stacked_transport", "certmq.invisible_characters"}
)

# The floor: the sans-io protocol, X.509 and TLS import only these (and the foundation).
MAY_IMPORT_ONLY = {
    "mqtt": frozenset({"mqtt"}),
    "pki": frozenset({"pki"}),
    "tls": frozenset({"tls", "pki", "mqtt"}),
}
# Above the floor: what each layer must not import. `app` composes the others with the parts of
# the running instance that join the broker and the registry (the decision audit, revocation
# enforcement, the auth mode switch, the server certificate in use, the instance control),
# `http_application` composes the API and the console, `cli` drives them: nothing below imports
# those.
COMPOSITION = frozenset(
    {
        "app",
        "auth_mode_switch",
        "decision_audit",
        "instance_control",
        "revocation_enforcement",
        "server_certificate_in_use",
        "http_application",
        "cli",
    }
)
# `cluster` (several nodes as one broker) sits beside the broker and may use it, the protocol and
# auth; nothing below it knows there is a cluster.
MUST_NOT_IMPORT = {
    "auth": frozenset({"broker", "cluster", "api", "console", "web"}) | COMPOSITION,
    "broker": frozenset({"registry", "cluster", "api", "console", "web"}) | COMPOSITION,
    "cluster": frozenset({"registry", "api", "console", "web"}) | COMPOSITION,
    "registry": frozenset({"broker", "cluster", "api", "console", "web"}) | COMPOSITION,
    "web": frozenset({"api", "console"}) | COMPOSITION,
    "api": frozenset({"console"}) | COMPOSITION,
    "console": frozenset({"api"}) | COMPOSITION,
}


def _module_names() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = ("certmq", *path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_names()


def _known_module(name: str) -> str:
    """The module ``name`` is, or the innermost package that holds it (``certmq.x.Y`` -> ``certmq.x``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> Iterator[tuple[str, int]]:
    """Each certmq module that ``module`` imports, with the line of the import."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(), package)


def _imports_in(source: str, package: str) -> Iterator[tuple[str, int]]:
    """Each certmq module that ``source``, a module of ``package``, imports, with its line."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "certmq" or alias.name.startswith("certmq."):
                    yield _known_module(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if base != "certmq" and not base.startswith("certmq."):
                continue
            for alias in node.names:
                yield _known_module(f"{base}.{alias.name}"), node.lineno


def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: line of its first import}."""
    graph: dict[str, dict[str, int]] = {}
    for module in MODULES:
        edges: dict[str, int] = {}
        for imported, line in _imports(module):
            if imported != module:
                edges.setdefault(imported, line)
        graph[module] = edges
    return graph


GRAPH = _graph()


def _layer(module: str) -> str:
    """``certmq.broker.core`` -> ``broker``; a module at the package root is its own layer."""
    return module.split(".")[1] if "." in module else ""


def _within(module: str, layers: frozenset[str]) -> bool:
    dotted = module.removeprefix("certmq.")
    return any(dotted == layer or dotted.startswith(f"{layer}.") for layer in layers)


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each group of modules that import one another (Tarjan's components)."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                lowest[module] = min(lowest[module], lowest[imported])
            elif imported in on_stack:
                lowest[module] = min(lowest[module], index[imported])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                components.append(component)

    for module in graph:
        if module not in index:
            visit(module)
    return [_one_cycle(graph, set(component)) for component in components]


def _one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A path from the first module of ``component`` back to itself, within the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        module = frontier.pop(0)
        for imported in graph[module]:
            if imported == start:
                return [*paths[module], start]
            if imported in component and imported not in paths:
                paths[imported] = [*paths[module], imported]
                frontier.append(imported)
    raise AssertionError(f"no cycle through {start}")


def _where(importer: str, imported: str) -> str:
    path = MODULES[importer].relative_to(PACKAGE_ROOT.parent)
    return f"{path}:{GRAPH[importer][imported]} imports {imported}"


def test_no_module_imports_itself_back() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import loops:\n" + "\n".join(
        " -> ".join(cycle) + "\n    " + "\n    ".join(_where(a, b) for a, b in itertools.pairwise(cycle))
        for cycle in cycles
    )


def test_each_layer_imports_only_what_lies_below_it() -> None:
    violations = []
    for module, edges in GRAPH.items():
        layer = _layer(module)
        for imported in edges:
            if imported in FOUNDATION or _layer(imported) == layer:
                continue
            if layer in MAY_IMPORT_ONLY:
                refused = not _within(imported, MAY_IMPORT_ONLY[layer])
            else:
                refused = _within(imported, MUST_NOT_IMPORT.get(layer, frozenset()))
            if refused:
                violations.append(_where(module, imported))
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_the_foundation_imports_nothing_of_certmq() -> None:
    imports = [_where(module, imported) for module in FOUNDATION for imported in GRAPH[module]]
    assert not imports, "\n".join(imports)


def test_the_parser_sees_every_kind_of_import() -> None:
    source = """
import json
from typing import TYPE_CHECKING
import certmq.mqtt.topics
from certmq.mqtt import packets
from certmq.mqtt.errors import MQTTError
from . import parameters
from ..errors import ApiError

if TYPE_CHECKING:
    from certmq.auth.identity import Identity

def later():
    from certmq.tls.context import ServerContexts
"""
    assert sorted(_imports_in(source, "certmq.api.rpc")) == [
        ("certmq.api.errors", 8),  # relative, two levels up
        ("certmq.api.rpc.parameters", 7),  # relative
        ("certmq.auth.identity", 11),  # under TYPE_CHECKING
        ("certmq.mqtt.errors", 6),
        ("certmq.mqtt.packets", 5),  # a module, named as a package's attribute
        ("certmq.mqtt.topics", 4),
        ("certmq.tls.context", 14),  # inside a function
    ]


# A module a reader can hold in mind at once: past this, it holds more than one concern.
MAX_MODULE_LINES = 700


def test_no_module_is_over_the_size_of_one_concern() -> None:
    sizes = {
        str(path.relative_to(PACKAGE_ROOT.parent)): len(path.read_text().splitlines())
        for path in MODULES.values()
    }
    assert not {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
