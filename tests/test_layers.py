"""The layers of pfl_app: which module may import which.

Every import of every module (top-level or inside a function, relative or absolute) is
read with ``ast`` and checked against :data:`LAYERS` and :data:`SIDES`:

- a module imports only its own layer and the layers below it;
- the ClientApp side and the ServerApp side never import each other: what both need to
  agree on, the names in a message, is in :mod:`pfl_app.protocol`;
- :mod:`pfl_app.protocol` (and the package's ``__init__``, which runs before it) imports
  nothing from the package.

Importing ``a.b.c`` also runs ``a/b/__init__.py``, so an import counts as one of each
package on the way too. A new module must be given a layer here before this test passes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "pfl_app"
REPO = Path(__file__).resolve().parents[1]

# Bottom-up. An entry names a module, or a package and everything in it; a module belongs to
# its longest entry.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # The names a message carries, written by one side and read by the other.
    ("protocol", ("pfl_app.protocol",)),
    # Helpers that know neither the run config nor who runs them.
    ("base", (
        "pfl_app.accounting", "pfl_app.adapters", "pfl_app.compression", "pfl_app.checkpoint", "pfl_app.data",
        "pfl_app.methods", "pfl_app.models", "pfl_app.plugins", "pfl_app.precision", "pfl_app.privacy", "pfl_app.process_guard", "pfl_app.quiet", "pfl_app.records",
        "pfl_app.runlock", "pfl_app.tasks", "pfl_app.wireless",
    )),
    # The run config, checked against the partitioners' and link profiles' names.
    ("config", ("pfl_app.config",)),
    # What a run is made of, used by both sides: data assignment, the personalized model,
    # training, the RLHF machinery (the server prepares the reward models, the clients use
    # them), the results folder and the checks before a run.
    ("library", (
        "pfl_app.data.assignment", "pfl_app.models.personalized", "pfl_app.preflight",
        "pfl_app.results", "pfl_app.rlhf", "pfl_app.training",
    )),
    # The two sides, siblings (see SIDES): the ClientApp's handlers and mods; the strategies.
    ("sides", ("pfl_app.client", "pfl_app.faults", "pfl_app.strategies", "pfl_app.wireless.mod")),
    # The ServerApp's run, built on the strategies.
    ("server", ("pfl_app.server",)),
    # What drives or reads whole runs from outside Flower's apps.
    ("tools", (
        "pfl_app.__main__", "pfl_app.cli", "pfl_app.deploy", "pfl_app.experiments",
        "pfl_app.inference", "pfl_app.launch", "pfl_app.plots", "pfl_app.ray_cluster", "pfl_app.report",
        "pfl_app.verdict",
    )),
    # The Flower app entry points Flower loads (pyproject's [tool.flwr.app.components]).
    ("flower apps", ("client_app", "server_app")),
)

# Modules that run in the ClientApp, and in the ServerApp: neither side imports the other.
SIDES: dict[str, tuple[str, ...]] = {
    "client": ("pfl_app.client", "pfl_app.faults", "pfl_app.wireless.mod", "client_app"),
    "server": ("pfl_app.strategies", "pfl_app.server", "server_app"),
}

# Modules that may import nothing from the package.
LEAVES = ("pfl_app", "pfl_app.protocol")

Imports = dict[str, list[tuple[str, int]]]


def _within(module: str, entry: str) -> bool:
    return module == entry or module.startswith(entry + ".")


def _longest(module: str, entries: dict[str, str]) -> str | None:
    found = [e for e in entries if _within(module, e)]
    return entries[max(found, key=len)] if found else None


_LAYER_OF_ENTRY = {e: name for name, entries in LAYERS for e in entries}
_RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
_SIDE_OF_ENTRY = {e: side for side, entries in SIDES.items() for e in entries}


def layer_of(module: str) -> str | None:
    """The layer of ``module``: that of its longest entry in LAYERS; the package's own
    ``__init__`` is at the bottom (it runs before any of its modules)."""
    if module == PACKAGE:
        return LAYERS[0][0]
    return _longest(module, _LAYER_OF_ENTRY)


def side_of(module: str) -> str | None:
    """``"client"``, ``"server"``, or ``None`` for a module both sides may use."""
    return _longest(module, _SIDE_OF_ENTRY)


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, modules: set[str]) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of the package in ``source``.

    ``from x import y`` counts as an import of ``x.y`` when that is a module of ``modules``,
    else of ``x``; each package on the way to an imported module counts too (its
    ``__init__`` runs), except the package itself.
    """
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in modules else origin for a in node.names]
        else:
            continue
        for target in targets:
            if not _within(target, PACKAGE):
                continue
            parts = target.split(".")
            found.extend((".".join(parts[:i]), node.lineno) for i in range(2, len(parts) + 1))
    return sorted(set(found))


def package_sources(root: Path = REPO) -> dict[str, tuple[str, bool]]:
    """``module -> (source, is a package)`` for every module of the package and the two apps."""
    files = sorted((root / PACKAGE).rglob("*.py")) + [root / "client_app.py", root / "server_app.py"]
    return {module_name(f, root): (f.read_text(encoding="utf-8"), f.name == "__init__.py") for f in files}


def import_graph(sources: dict[str, tuple[str, bool]], modules: set[str] | None = None) -> Imports:
    modules = set(sources) if modules is None else modules
    return {m: imports_of(src, m, pkg, modules) for m, (src, pkg) in sources.items()}


def problems(graph: Imports) -> list[str]:
    """Every import in ``graph`` that breaks a rule, in words."""
    out = []
    for module, targets in sorted(graph.items()):
        layer, side = layer_of(module), side_of(module)
        for target, line in targets:
            where = f"{module}:{line}: {module} ({layer}) imports {target}"
            if target == module:
                continue
            if module in LEAVES:
                out.append(f"{where}, but {module} may import nothing from {PACKAGE}")
                continue
            target_layer, target_side = layer_of(target), side_of(target)
            if layer is None or target_layer is None:
                continue  # reported by test_every_module_has_a_layer
            if _RANK[target_layer] > _RANK[layer]:
                out.append(f"{where} ({target_layer}), a higher layer")
            if side and target_side and side != target_side:
                out.append(f"{where}: the {side} side imports the {target_side} side; "
                           f"share what both need through {PACKAGE}.protocol")
    return out


@pytest.fixture(scope="module")
def graph() -> Imports:
    return import_graph(package_sources())


def test_every_module_has_a_layer(graph):
    unplaced = sorted(m for m in graph if layer_of(m) is None)
    assert not unplaced, f"give these modules a layer in tests/test_layers.py: LAYERS: {unplaced}"


def test_no_import_runs_up_the_layers_or_across_the_sides(graph):
    found = problems(graph)
    assert not found, "\n".join(found)


def test_protocol_imports_nothing_from_the_package(graph):
    assert graph["pfl_app.protocol"] == []
    assert graph[PACKAGE] == []  # runs before the protocol is imported


def test_both_sides_import_the_protocol(graph):
    # What the issue asked for: each side reads the message names from the protocol.
    users = {m for m, targets in graph.items() if any(t == "pfl_app.protocol" for t, _ in targets)}
    for side, entries in SIDES.items():
        assert any(side_of(m) == side for m in users), side


@pytest.mark.parametrize(
    "module, source, expected",
    [
        # A helper that reaches up to the client, inside a function.
        ("pfl_app.records", "def f():\n    from .client import state\n", "pfl_app.client.state (sides), a higher layer"),
        # The two imports this test was written to remove.
        ("pfl_app.strategies.base", "from ..wireless.mod import MASK_KEY\n", "the server side imports the client side"),
        ("pfl_app.client.rlhf_tuning", "from ..strategies.rlhf_base import LAST_ROUND_KEY\n",
         "the client side imports the server side"),
        # The parent package counts: importing pfl_app.client.context runs pfl_app/client/__init__.py.
        ("pfl_app.config", "import pfl_app.client.context as c\n", "imports pfl_app.client (sides), a higher layer"),
        ("pfl_app.protocol", "from . import records\n", "may import nothing from pfl_app"),
        ("pfl_app", "from .protocol import RUN_DIR_KEY\n", "may import nothing from pfl_app"),
        ("server_app", "from pfl_app.client import handlers\n", "the server side imports the client side"),
    ],
)
def test_the_check_reports_a_violation(module, source, expected):
    modules = set(package_sources())
    fake = {module: imports_of(source, module, module == PACKAGE, modules)}
    found = problems(fake)
    assert any(expected in p for p in found), found


def test_the_check_passes_allowed_imports():
    modules = set(package_sources())
    allowed = {
        "pfl_app.strategies.base": "from ..protocol import ARRAYS_KEY\nfrom ..records import message_bytes\n",
        "pfl_app.wireless.mod": "from ..client.context import run_config\nfrom .channel import transmit\n",
        "pfl_app.inference": "from .strategies import STRATEGIES\nfrom .client.state import client_dir\n",
        "pfl_app.models.personalized": "def f():\n    from ..rlhf.warmup import warmed_policy\n",
    }
    fake = {m: imports_of(src, m, False, modules) for m, src in allowed.items()}
    assert all(fake.values())  # every fake import was seen
    assert problems(fake) == []


def test_protocol_names_agree_with_flower_and_each_other():
    import inspect

    from flwr.serverapp.strategy import FedAvg

    from pfl_app import protocol

    # Flower's FedAvg names the records and the weighing metric itself; ours must match.
    defaults = {k: p.default for k, p in inspect.signature(FedAvg.__init__).parameters.items()}
    assert defaults["arrayrecord_key"] == protocol.ARRAYS_KEY
    assert defaults["configrecord_key"] == protocol.CONFIG_KEY
    assert defaults["weighted_by_key"] == protocol.NUM_EXAMPLES_KEY
    records = [protocol.ARRAYS_KEY, protocol.CONFIG_KEY, protocol.METRICS_KEY, protocol.CLIENT_KEY,
               protocol.WIRELESS_KEY, protocol.WIRELESS_STATUS_KEY, protocol.WIRELESS_MASK_KEY]
    assert len(set(records)) == len(records)
    # The byte counts leave out exactly the channel's records.
    simulated = [r for r in records if r.startswith(protocol.SIMULATION_PREFIX)]
    assert simulated == [protocol.WIRELESS_KEY, protocol.WIRELESS_STATUS_KEY, protocol.WIRELESS_MASK_KEY]
    config_keys = [v for k, v in vars(protocol).items()
                   if k in ("SERVER_ROUND_KEY", "RUN_DIR_KEY", "SHARED_GROUPS_KEY", "TRAINED_GROUPS_KEY",
                            "POOLED_DATA_KEY", "PROXIMAL_MU_KEY", "PREFERENCE_KEY", "START_FROM_KEY",
                            "LAST_ROUND_KEY")]
    assert len(set(config_keys)) == len(config_keys) == 9


def test_old_names_still_import():
    # The constants moved to pfl_app.protocol; the names other code imported stay where they were.
    from pfl_app import protocol
    from pfl_app.client.task_tuning import ARRAYS_KEY, CLIENT_KEY, CONFIG_KEY, METRICS_KEY
    from pfl_app.records import SIMULATION_PREFIX
    from pfl_app.rlhf.client_setup import SAFETY_WEIGHT_NODE_KEY
    from pfl_app.strategies.pfit import REWARD_KEY
    from pfl_app.strategies.rlhf_base import LAST_ROUND_KEY, PREFERENCE_KEY, START_FROM_KEY
    from pfl_app.wireless.mod import MASK_KEY, OUTCOMES, STATUS_KEY, WIRELESS_KEY

    assert (ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, CLIENT_KEY) == ("arrays", "config", "metrics", "client")
    assert (WIRELESS_KEY, STATUS_KEY, MASK_KEY, SIMULATION_PREFIX) == (
        "wireless", "wireless-status", "wireless-mask", "wireless")
    assert OUTCOMES == ("delivered", "partial", "lost")
    assert (PREFERENCE_KEY, LAST_ROUND_KEY, START_FROM_KEY, REWARD_KEY) == (
        "preference", "last-round", "start-from", "train-reward")
    assert SAFETY_WEIGHT_NODE_KEY == protocol.SAFETY_WEIGHT_NODE_KEY == "safety-weight"


def test_bench_scripts_import_the_installed_package_without_editing_sys_path(project_dir):
    # `pip install -e .` puts pfl_app on the path; a script that edits sys.path would hide a
    # broken install and import whatever copy sits beside it.
    offenders = [p.name for p in sorted((project_dir / "bench").glob("*.py")) if "sys.path" in p.read_text()]
    assert offenders == []
