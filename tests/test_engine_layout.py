"""The engine's layout rules: who may write a source's bookkeeping, which
way the engine's modules import, and where the defaults live."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from collectors.choices import SOURCE_TRANSITIONS, SourceState, may_move

ROOT = Path(__file__).resolve().parent.parent
APPS = ("collectors", "outputs", "alerts", "knowbe4sumo")
WRITERS = {"collectors/models.py", "collectors/lifecycle.py"}


def python_files():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def chain_names(node: ast.AST) -> list[str]:
    """The names along a call chain: Source.objects.filter(...).update -> [...]."""
    names = []
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Name):
            names.append(node.id)
            return names[::-1]
        else:
            return names[::-1]


def source_updates(path: Path) -> list[int]:
    """Lines of `Source.objects...update(`/`bulk_update(` calls in a file."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("update", "bulk_update", "update_or_create"):
            continue
        names = chain_names(node.func.value)
        if names[:2] == ["Source", "objects"]:
            lines.append(node.lineno)
    return lines


def test_it_only_models_and_lifecycle_update_a_sources_bookkeeping():
    found = {}
    for path in python_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel not in WRITERS and (lines := source_updates(path)):
            found[rel] = lines
    assert found == {}


def test_it_the_grep_finds_an_update_written_over_several_lines(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "Source.objects.filter(pk=1)\\\n    .exclude(state='x')\\\n"
        "    .update(cursor_page=2)\n"
    )
    assert source_updates(sample) == [1]
    assert source_updates(ROOT / "collectors" / "lifecycle.py")


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_it_the_engine_imports_downward_only():
    # pipeline -> readers -> daypages -> window/fetch/store/failures ->
    # context -> lifecycle -> models: nothing imports a stage above it.
    order = ["sqlite", "context", "window", "fetch", "store", "failures"]
    order += ["daypages"]
    order += ["readers", "pipeline"]
    engine = ROOT / "collectors" / "engine"
    for rank, name in enumerate(order):
        above = {f"collectors.engine.{n}" for n in order[rank + 1 :]}
        assert not imports_of(engine / f"{name}.py") & above, name
    for low in ("lifecycle.py", "models.py", "days.py", "choices.py"):
        assert not any(
            i.startswith("collectors.engine")
            for i in imports_of(ROOT / "collectors" / low)
        ), low


def test_it_every_state_move_is_in_the_table():
    assert not SOURCE_TRANSITIONS[SourceState.STOPPING]
    assert may_move(SourceState.PENDING, SourceState.STARTED)
    assert not may_move(SourceState.COLLECTING, SourceState.AUTHENTICATED)
    assert not may_move(SourceState.ERROR, SourceState.COLLECTING)
    assert set(SOURCE_TRANSITIONS) == set(SourceState.values)


@pytest.mark.django_db
def test_it_a_move_outside_the_table_is_refused(source):
    source.transition(SourceState.STOPPING, "Deleted by a user")
    assert not source.transition(SourceState.COLLECTING, "a stale worker")
    source.refresh_from_db()
    assert source.state == SourceState.STOPPING


def test_it_engine_defaults_live_only_in_settings():
    for path in python_files():
        text = path.read_text()
        if path.name == "settings.py":
            continue
        for name in (
            "COLLECTION_LEASE",
            "COLLECTION_RUN_BUDGET_SECONDS",
            "COLLECTION_SETTLE_DELAY",
            "COLLECTION_RETRY_WINDOW",
        ):
            assert f'getattr(settings, "{name}"' not in text, (path, name)


def callers_of(function: str) -> set[str]:
    """The files (outside tests) that call `function` by name or attribute."""
    found = set()
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and chain_names(node.func)[-1:] == [function]:
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_it_moves_pending_to_started_in_one_function_with_two_callers():
    # The dispatcher's claim (a task is queued) and the run's prepare (a task
    # runs without one: the `collect` command, a run after an edit).
    assert callers_of("mark_started") == {
        "collectors/lifecycle.py",
        "collectors/engine/pipeline.py",
    }
