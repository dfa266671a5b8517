"""Imports point down only: engine <- harness <- evaluation <- experiments, read from the sources' ASTs."""

import ast

import pytest

import engine
from tests.conftest import ROOT

PROJECT = ("engine", "harness", "evaluation", "models", "losses", "experiments", "bench", "tests")
# package -> the project packages it must never import
FORBIDDEN = {
    "engine": set(PROJECT) - {"engine"},
    "models": set(PROJECT) - {"models"},
    "losses": set(PROJECT) - {"losses", "engine"},
    "harness": {"evaluation", "models", "losses", "experiments", "bench", "tests"},
    "evaluation": {"experiments", "bench", "tests"},
    "bench": {"experiments", "tests"},
}


def _sources(*packages):
    for package in packages:
        yield from sorted((ROOT / package).rglob("*.py"))


def _imported(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) of every import statement, lazy ones inside functions too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_above_it(package):
    bad = []
    for path in _sources(package):
        for module, _ in _imported(ast.parse(path.read_text())):
            if module.split(".")[0] in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not bad, "\n".join(bad)


def test_an_entry_point_uses_another_only_through_its_main():
    """Library code lives in harness/ or evaluation/: an experiment may run another (its main), no more."""
    bad = []
    for path in _sources("experiments"):
        tree = ast.parse(path.read_text())
        aliases = set()
        for module, names in _imported(tree):
            if module.startswith("experiments."):
                bad.append(f"{path.name} imports from {module}")
            elif module == "experiments":
                aliases |= set(names)
        for node in ast.walk(tree):
            is_other = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            if is_other and node.value.id in aliases and node.attr != "main":
                bad.append(f"{path.name} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def _engine_names(tree: ast.AST) -> set[str]:
    """Every engine name a file reaches: `from engine[.x] import n`, `engine.n`, `engine.x.n`."""
    names = set()
    for module, imported in _imported(tree):
        if module == "engine":  # `from engine import state` names a module, not an export
            names |= set(imported) - _SUBMODULES
        elif module.startswith("engine."):
            names |= set(imported)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if isinstance(base, ast.Name) and base.id == "engine":
            chain.reverse()  # engine.a.b -> [a, b]; engine.state alone is a module, not a name
            if chain[0] not in _SUBMODULES:
                names.add(chain[0])
            elif len(chain) > 1:
                names.add(chain[1])
    return names


_SUBMODULES = {p.stem for p in (ROOT / "engine").glob("*.py")}


def test_engine_all_covers_every_engine_name_used_outside_the_engine():
    used = {}
    for path in _sources(*(p for p in PROJECT if p != "engine")):
        for name in _engine_names(ast.parse(path.read_text())):
            used.setdefault(name, path.relative_to(ROOT))
    exported = set(engine.__all__) | {"__all__"}
    missing = {name: str(where) for name, where in used.items() if name not in exported}
    assert not missing, missing
    assert all(hasattr(engine, name) for name in engine.__all__)
