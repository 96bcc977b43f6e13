"""The package's import layering (ARCHITECTURE.md): the rules between folders hold and no import cycle exists.

Every module of src/dinov3_hf is parsed with `ast`; imports at any depth (module level, inside functions, under
`if TYPE_CHECKING`) count, relative and absolute. A module's edges go to what it names and, as Python executes them
first, to the `__init__` of every package on the way there that is not already one of the module's own parents
(those are being imported when the module runs). So `from ..convert.vit import f` in `models/x.py` depends on
`convert/__init__.py` and everything that re-exports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "dinov3_hf"
TOP_LEVEL = "dinov3_hf"

# layer -> layers it must not reach, directly or through other modules (first name below the package), as in
# ARCHITECTURE.md. `registration` and `cli` sit on top; `ssl` and `pipelines` use the models; `convert` translates
# between the models and foreign layouts, `export` beside it turns the models into deployment formats; `models` and
# `processing` stand side by side on `common`.
_TOP = ("cli", "registration")
_ABOVE_CONVERT = (*_TOP, "ssl", "pipelines", "pretrained_models", "data", "metrics", "viz", "dense")
FORBIDDEN = {
    "common": (*_ABOVE_CONVERT, "convert", "export", "models", "processing"),
    "models": (*_ABOVE_CONVERT, "convert", "export", "processing"),
    "processing": (*_ABOVE_CONVERT, "convert", "export", "models"),
    "convert": (*_ABOVE_CONVERT, "export"),
    "export": (*_ABOVE_CONVERT, "convert", "processing"),
    "pipelines": (*_TOP, "ssl", "convert"),
    "ssl": (*_TOP, "pipelines"),
    "data": (*_TOP, "ssl"),
    "metrics": (*_TOP, "ssl"),
    "dense": (*_TOP, "ssl", "pipelines", "convert", "export", "data", "metrics"),
}


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the package folder `root` (`pkg/__init__.py` is `pkg`)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _named_targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: dict) -> list[str]:
    """The modules an import statement names: `from a import b` names `a.b` if that is a module, else `a`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = name if is_package else name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it depends on at import or call time (see the module docstring)."""
    modules = module_files(root)
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own_parents = set(_parents(name))
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _named_targets(node, name, name in packages, modules):
                if target != root.name and not target.startswith(root.name + "."):
                    continue  # another distribution
                assert target in modules, f"{path}: cannot resolve the import of {target}"
                edges.add(target)
                edges.update(p for p in _parents(target) if p in packages and p not in own_parents)
        edges.discard(name)
        graph[name] = edges
    return graph


def _layer(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from `start` -> the module that imports it on one shortest path."""
    via, frontier = {start: ""}, [start]
    while frontier:
        nxt = []
        for module in frontier:
            for target in sorted(graph[module]):
                if target not in via:
                    via[target] = module
                    nxt.append(target)
        frontier = nxt
    return via


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Shortest `a -> b -> c` import chain from each module of a layer to each layer it must not reach."""
    found = []
    for module in sorted(graph):
        via = reachable(graph, module)
        reached = set()
        for target in via:  # breadth-first order: the first module of a layer has the shortest chain
            layer = _layer(target)
            if layer in FORBIDDEN.get(_layer(module), ()) and layer not in reached:
                reached.add(layer)
                chain = [target]
                while via[chain[-1]]:
                    chain.append(via[chain[-1]])
                found.append(" -> ".join(reversed(chain)))
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE_ROOT)


def test_the_graph_sees_the_package(graph):
    """Sanity: the parser finds the known edges, including re-exports and function-level imports."""
    assert len(graph) > 50
    assert "dinov3_hf.models.pretrained" in graph["dinov3_hf.models.vit.modeling"]
    assert "dinov3_hf.models.vit" in graph["dinov3_hf.convert.checkpoints"]  # through the package re-export
    assert "dinov3_hf.models.vit.modeling" in graph["dinov3_hf.models.vit"]
    assert "dinov3_hf.convert" in graph["dinov3_hf.registration"]
    assert "dinov3_hf.pipelines" in graph["dinov3_hf.cli"]  # imported inside a function


def test_layers_import_only_downwards(graph):
    assert layer_violations(graph) == []


def test_no_import_cycles(graph):
    assert import_cycles(graph) == []


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, source in files.items():
        path = root / "dinov3_hf" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "dinov3_hf"


# The layout before the layering was fixed, in miniature: `models/` loads foreign layouts by calling into `convert/`
# inside a method, and `processing/` takes the normalisation table from `models/`.
_OLD_LAYOUT = {
    "__init__.py": "from .models.vit import Model\nfrom .processing import Processor\n",
    "common.py": "NORMALIZATION = {}\n",
    "models/__init__.py": "",
    "models/pretrained.py": (
        "class Base:\n    @classmethod\n    def from_pretrained(cls, path):\n"
        "        from ..convert import load_model\n        return load_model(path)\n"
    ),
    "models/vit/__init__.py": "from .modeling import Model\n",
    "models/vit/modeling.py": "from ..pretrained import Base\nclass Model(Base):\n    pass\n",
    "processing/__init__.py": "from .image import Processor\n",
    "processing/image.py": "from ..models.pretrained import Base\nclass Processor:\n    pass\n",
    "convert/__init__.py": "from .checkpoints import load_model\n",
    "convert/checkpoints.py": "from ..models.vit import Model\nfrom .. import processing\ndef load_model(p):\n    pass\n",
}


def test_checker_finds_the_old_layout(tmp_path):
    graph = import_graph(_write_package(tmp_path, _OLD_LAYOUT))
    violations = layer_violations(graph)
    assert "dinov3_hf.models.pretrained -> dinov3_hf.convert" in violations
    assert "dinov3_hf.processing.image -> dinov3_hf.models" in violations  # models/__init__ runs first
    assert import_cycles(graph) == [[
        "dinov3_hf.convert", "dinov3_hf.convert.checkpoints", "dinov3_hf.models.pretrained", "dinov3_hf.models.vit",
        "dinov3_hf.models.vit.modeling", "dinov3_hf.processing", "dinov3_hf.processing.image",
    ]]


def test_checker_counts_package_inits_on_the_way(tmp_path):
    """`from ..b.y import f` runs `b/__init__.py` first; a cycle through that re-export is a cycle."""
    root = _write_package(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/x.py": "def g():\n    from ..b.y import f\n",
        "b/__init__.py": "from .z import h\n",
        "b/y.py": "def f():\n    pass\n",
        "b/z.py": "from ..a.x import g\nh = g\n",
    })
    graph = import_graph(root)
    assert graph["dinov3_hf.a.x"] == {"dinov3_hf.b", "dinov3_hf.b.y"}
    assert import_cycles(graph) == [["dinov3_hf.a.x", "dinov3_hf.b", "dinov3_hf.b.z"]]
    # the same import without the re-export in b/__init__.py is no cycle, and a module's own parents are no edges
    (root / "b" / "__init__.py").write_text("")
    graph = import_graph(root)
    assert import_cycles(graph) == [] and graph["dinov3_hf.b.z"] == {"dinov3_hf.a.x", "dinov3_hf.a"}
