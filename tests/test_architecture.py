"""The package's shape, read from its source with ``ast``: imports run one way (imports inside
functions counted), no private name crosses a module, core modules stay small, and registry names
are looked up only where a Plan is resolved. docs/architecture.md describes the layers."""

import ast
import pathlib
import subprocess
import sys
import textwrap

import pytest

import vibench

PACKAGE = pathlib.Path(vibench.__file__).parent

# Fit's methods delegate to the free functions of the modules that consume a Fit: the one place
# an import runs against the grain, and only inside those methods.
DELEGATIONS = {("vibench.result", target) for target in ("vibench.diagnostics", "vibench.export", "vibench.checkpoint")}
CORE_LIMIT = 350  # lines; the widgets and the ready-made models are not core
LOOKUPS = {"get_guide", "get_objective", "get_method"}


def _modules() -> dict:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _imports(module: str):
    """``(target module, imported name or None, inside a function)`` for each vibench import."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    tree = ast.parse(path.read_text())
    functions = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for node in ast.walk(fn)}
    for node in ast.walk(tree):
        inside = id(node) in functions
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            if not base.startswith("vibench"):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full, None, inside) if full in MODULES else (base, alias.name, inside)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("vibench"):
                    yield alias.name, None, inside


def _graph() -> dict:
    graph = {module: set() for module in MODULES}
    for module in MODULES:
        for target, _, _ in _imports(module):
            if target != module and (module, target) not in DELEGATIONS:
                graph[module].add(target)
    return graph


def _cycle(graph: dict):
    """One import cycle as a list of modules, or None."""
    state, path = {}, []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[module] = "done"
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_imports_run_one_way():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()))}"


def test_the_cycle_check_finds_a_cycle():
    # The check itself can fail: a graph with a back edge has a cycle.
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_against_the_grain_only_inside_fits_methods():
    for module, target in DELEGATIONS:
        for found, _, inside in _imports(module):
            if found == target:
                assert inside, f"{module} imports {target} at module level: only Fit's methods may, lazily"


def test_no_private_name_crosses_a_module():
    crossing = [(module, target, name) for module in MODULES for target, name, _ in _imports(module)
                if name is not None and name.startswith("_") and not name.startswith("__")]
    assert not crossing, f"private names imported across modules: {crossing}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith(("vibench.widgets", "vibench.models"))))
def test_core_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= CORE_LIMIT, f"{module} has {lines} lines; split it by concept (the limit is {CORE_LIMIT})"


def test_names_are_looked_up_only_where_a_plan_is_resolved():
    callers = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in LOOKUPS:
                    callers.add(module)
    assert callers == {"vibench.plan"}, f"registry lookups outside vibench.plan: {sorted(callers - {'vibench.plan'})}"


# What a user's session does after importing both, in either order: a NumPyro model with a factor
# site, evaluated through vibench. ArviZ 1.x's arviz-base, imported before numpyro, leaves a lazy
# placeholder module that breaks numpyro.factor once numpyro.distributions is imported through it.
FACTOR_CHECK = """
import numpyro
import numpyro.distributions as dist
import jax.numpy as jnp

def model():
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.factor("penalty", -mu**2)

lp = float(vibench.Model.from_numpyro(model).log_density(jnp.array([0.5])))
assert abs(lp - (-0.5 * 0.25 - 0.5 * jnp.log(2 * jnp.pi) - 0.25)) < 1e-5, lp
print("ok")
"""

IMPORT_ORDERS = {
    "ArviZ first": "import arviz\nimport vibench\n",
    # vibench alone loads no ArviZ: it imports it inside the functions that need it.
    "vibench first": "import vibench\nimport sys\nassert not [m for m in sys.modules if m.startswith('arviz')]\nimport arviz\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("order", sorted(IMPORT_ORDERS))
def test_numpyro_factor_works_whichever_of_arviz_and_vibench_is_imported_first(order):
    code = IMPORT_ORDERS[order] + textwrap.dedent(FACTOR_CHECK)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
