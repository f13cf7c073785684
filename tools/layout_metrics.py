"""Layout figures of the Python package, for before/after comparisons of a restructuring.

Prints: top-level modules of python/spectra, imports inside functions, the five longest
functions and the import cycles among spectra's modules (strongly connected components of the
graph of every import, including those inside functions, but not those under ``if TYPE_CHECKING``).

    python tools/layout_metrics.py [python/spectra]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def main(argv: list[str]) -> None:
    root = Path(argv[1] if len(argv) > 1 else "python/spectra").resolve()
    files = sorted(root.rglob("*.py"))
    top_level = [p for p in files if p.parent == root]
    nested_imports = 0
    functions: list[tuple[int, str]] = []
    graph: dict[str, set[str]] = {}
    names = {_module_name(root, p) for p in files}
    for path in files:
        module = _module_name(root, path)
        tree = ast.parse(path.read_text(), filename=str(path))
        graph.setdefault(module, set())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = node.end_lineno - node.lineno + 1
                functions.append((span, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        nested_imports += 1
        type_checking = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)
        }
        for inner in ast.walk(tree):  # every import, also those inside functions (as import-linter sees them)
            if id(inner) not in type_checking:
                if isinstance(inner, ast.Import):
                    targets = [alias.name for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    base = _resolve(module, path.name == "__init__.py", inner)
                    targets = [base] + [f"{base}.{alias.name}" for alias in inner.names]
                else:
                    continue
                graph[module].update(t for t in targets if t in names and t != module)
    # Tarjan's strongly connected components: every component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    print(f"modules: {len(files)} files, {len(top_level)} at the top level")
    print(f"imports inside functions: {nested_imports}")
    print("five longest functions:")
    for span, where in sorted(functions, reverse=True)[:5]:
        print(f"  {span:4d} lines  {where}")
    print(f"import cycles: {len(cycles)}")
    for component in cycles:
        print(f"  {len(component)} modules: {', '.join(component)}")


if __name__ == "__main__":
    main(sys.argv)
