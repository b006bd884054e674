"""The project's layout keeps its promises: dvc.yaml's deps of each stage are exactly its script
and the tokbin modules it imports, and tokbin's modules import one another without cycles.

Imports are read from the source (imports inside functions count: a stage may run them), so
a new import that dvc.yaml does not list fails here instead of leaving DVC unaware that a
change to that module changes the stage's output."""
from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

PACKAGES = ("tokbin", "stages")


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


FILES = module_files()


def imports_of(module: str) -> set[str]:
    """The project modules `module` imports, anywhere in its code except a package's lazy
    `__getattr__` (which imports only when that attribute is used)."""
    tree = ast.parse(FILES[module].read_text())
    tree.body = [node for node in tree.body
                 if not (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in found if name in FILES and name != module}


def closure(module: str) -> set[str]:
    """Every project module that importing `module` runs, its packages' __init__ included."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += imports_of(current) | ({current.rpartition(".")[0]} & FILES.keys())
    return seen


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_depends_on_exactly_its_script_and_the_modules_it_imports(name):
    stage = STAGES[name]
    words = shlex.split(stage["cmd"])
    assert words[:2] == ["python", "-m"], f"{name}: run its script as `python -m stages.<name>`"
    code = {str(FILES[m].relative_to(ROOT)) for m in closure(words[2])
            if m not in PACKAGES}  # tokbin/__init__.py imports nothing eagerly, stages' is empty
    declared = {dep for dep in stage["deps"] if dep.endswith(".py")}
    assert declared == code, (f"{name}: dvc.yaml lacks {sorted(code - declared)}, lists "
                              f"{sorted(declared - code)} it does not import")


def test_the_package_imports_nothing_eagerly_but_its_error_type():
    assert imports_of("tokbin") == {"tokbin.errors"}


def test_tokbin_modules_import_each_other_without_cycles():
    graph = {m: imports_of(m) for m in FILES if m.startswith("tokbin")}
    done, active = set(), []

    def visit(module: str) -> None:
        if module in active:
            cycle = active[active.index(module):] + [module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        active.append(module)
        for imported in graph[module]:
            visit(imported)
        active.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_stage_commands_name_their_outputs_as_dvc_yaml_declares_them():
    """Paths are declared once, in dvc.yaml: every path a stage's command names is one of its
    deps or outs (or the folder of an out: binarize's reports)."""
    for name, stage in STAGES.items():
        declared = set(stage["deps"]) | {next(iter(o)) if isinstance(o, dict) else o
                                         for key in ("outs", "metrics", "plots")
                                         for o in stage.get(key, [])}
        folders = {str(Path(path).parent) for path in declared}
        for word in shlex.split(stage["cmd"])[3:]:
            if not word.startswith("-"):
                assert word in declared | folders, f"{name}: {word} is not declared in dvc.yaml"
