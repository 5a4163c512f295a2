"""The layout's direction: core/ imports neither Ray nor vLLM (nor starts either), and each folder
imports only the folders below it: core <- engines <- actors / learner <- run <- ops."""
import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import selm_ray.core

PACKAGE = Path(selm_ray.core.__file__).parent.parent
PURE = sorted(m.name for m in pkgutil.walk_packages(selm_ray.core.__path__, "selm_ray.core."))
# what each folder may import from the project (besides itself)
ALLOWED = {"core": set(), "engines": {"core"}, "actors": {"core", "engines"},
           "learner": {"core", "engines", "actors"}, "run": {"core", "engines", "actors", "learner"},
           "ops": {"core", "engines", "actors", "learner", "run"}}


def test_core_imports_neither_ray_nor_vllm():
    assert "selm_ray.core.losses" in PURE and "selm_ray.core.config" in PURE
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in PURE)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'vllm', 'deepspeed'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pure modules pulled in: {out.stdout.strip()}"


def _project_imports(path: Path) -> set[str]:
    """The selm_ray folders a module imports (type-only imports included: no cycle of any kind)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            parts = name.split(".")
            if parts[0] == "selm_ray" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_folders_import_only_the_folders_below_them():
    bad = []
    for folder, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            extra = _project_imports(path) - allowed - {folder}
            if extra:
                bad.append(f"{path.relative_to(PACKAGE)} imports {sorted(extra)}")
    assert not bad, "\n".join(bad)
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert top == [], f"modules outside the role folders: {top}"


def _module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a import b`` counts b when b is a module)."""
    files = {".".join(("selm_ray",) + p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        edges = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom) and (node.module or "") in files:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(files)
                edges.update(subs or {node.module})
        edges.discard(mod)
    return graph


def test_no_import_cycle_of_any_kind():
    graph, state, cycles = _module_graph(), {}, []

    def visit(mod, stack):
        state[mod] = "open"
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert "selm_ray.run.controller" in graph and graph["selm_ray.run.controller"]
    assert not cycles, "\n".join(cycles)


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("selm_ray"):
                bad += [f"{path.relative_to(PACKAGE)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_")]
    assert not bad, "\n".join(bad)


def test_stats_and_scale_start_without_torch():
    """`selm-ray stats` / `scale` are a Ray driver and a few small modules: torch's import (seconds
    of CPU, many more on a machine busy with a run) stays out of them."""
    code = ("import sys\nimport selm_ray.ops.cli, selm_ray.ops.attach, selm_ray.core.livestats, selm_ray.actors.remote\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
