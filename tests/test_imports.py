"""The import graph of src/mtdnn: no module imports itself back through others (a cycle, not even
through the imports only for type checkers), none takes another module's private names, the training
layer does not reach up to the public API, and an import inside a function is of an optional
dependency or says why it is there."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "mtdnn"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, known: dict[str, Path], *,
             for_type_checkers: bool = False) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of the package's own modules,
    at module level or inside functions; imports only for type checkers (``if TYPE_CHECKING:``)
    with ``for_type_checkers``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set() if for_type_checkers else {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and ast.unparse(node.test).endswith("TYPE_CHECKING") for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                if sub in known:                      # from package import module
                    out.append((sub, [], node.lineno))
                elif base in known:
                    out.append((base, [a.name], node.lineno))
    return out


def _graph(for_type_checkers: bool = False) -> dict[str, set[str]]:
    known = _modules()
    return {m: {target for target, _, _ in _imports(m, p, known, for_type_checkers=for_type_checkers)
                if target != m} for m, p in known.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_the_package():
    graph = _graph()
    assert len(graph) > 50 and "mtdnn.training.loop" in graph  # the walk saw the package
    assert _cycles(graph) == []


def test_no_import_cycles_even_for_type_checkers():
    """The kinds name what they read of a task in ``kinds/specs.py`` and take the records of
    ``records.py``, so even the imports a type checker follows form no cycle."""
    assert _cycles(_graph(for_type_checkers=True)) == []


def test_no_private_names_imported_across_modules():
    known = _modules()
    private = [f"{p.relative_to(SRC)}:{line} takes {names} from {target}"
               for m, p in known.items() for target, names, line in _imports(m, p, known)
               if any(n.startswith("_") and not n.startswith("__") for n in names)]
    assert not private, private


def test_the_training_layer_does_not_import_the_public_api():
    graph = _graph()
    up = sorted(m for m, targets in graph.items()
                if m.startswith(("mtdnn.training", "mtdnn.model", "mtdnn.data")) and "mtdnn.api" in targets)
    assert not up, up


# Imports a function may hold without a comment: the optional extras (pyproject.toml) and the
# dependencies imported only by the commands that use them.
OPTIONAL_IMPORTS = {"onnx", "onnxruntime", "onnxscript", "fastapi", "uvicorn", "httpx", "peft", "matplotlib",
                    "pyarrow", "datasets", "seqeval"}


def _unexplained_imports(source: str) -> list[tuple[int, str]]:
    """(line, text) of each import inside a function that is neither of an optional dependency nor
    explained by a comment on its line or a comment line (or ``try:  # ...``) just above it."""
    lines = source.splitlines()
    comments = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}

    def explained(n: int) -> bool:
        above = lines[n - 2].strip() if n >= 2 else ""
        return n in comments or (n - 1 in comments and (above.startswith("#") or above.startswith("try:")))

    found: dict[int, str] = {}
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                tops = {"mtdnn" if node.level else (node.module or "").split(".")[0]}
            else:
                continue
            if not tops <= OPTIONAL_IMPORTS and not explained(node.lineno):
                found[node.lineno] = lines[node.lineno - 1].strip()
    return sorted(found.items())


def test_the_import_check_finds_an_unexplained_import():
    source = ("def f():\n    import json\n    import peft\n    import torch  # a reason\n"
              "    # a reason\n    from .x import y\n    try:  # a reason\n        import yaml\n"
              "    except ImportError:\n        pass\n    x = 1  # not about the import\n    import os\n")
    assert _unexplained_imports(source) == [(2, "import json"), (12, "import os")]


def test_imports_inside_functions_are_optional_or_explained():
    """Imports go at module level; a function keeps only an optional dependency's import, or one
    whose comment says why (the start-up time of a light command, a one-line error where a package
    is missing, a cycle between modules)."""
    offenders = [f"{path.relative_to(SRC)}:{n}: {text}" for path in sorted(PACKAGE.rglob("*.py"))
                 for n, text in _unexplained_imports(path.read_text(encoding="utf-8"))]
    assert not offenders, "imports inside functions with no reason given:\n" + "\n".join(offenders)
