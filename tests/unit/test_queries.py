"""Named queries: the .sql files and the code that calls them agree, and the loader is exact."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from relay.core.store import MIGRATION_QUERIES, QUERIES, Db, Query, load_queries

RELAY = Path(__file__).resolve().parents[2] / "relay"
DB_METHODS = {"fetch", "fetchrow", "fetchval", "execute", "stream"}


def named_query_calls() -> list[tuple[str, int, str, ast.Call]]:
    """(file, line, query name, call) for every Db method called with a literal query name."""
    calls = []
    for path in sorted(RELAY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in DB_METHODS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                name = node.args[0].value
                # Raw SQL (scratch databases, migration files) is not a query name.
                if re.fullmatch(r"\w+", name):
                    calls.append((path.relative_to(RELAY).as_posix(), node.lineno, name, node))
    return calls


def queries_for(file: str) -> dict[str, Query]:
    """core/store.py runs the migration bookkeeping; every other module runs queries.sql."""
    return MIGRATION_QUERIES if file == "core/store.py" else QUERIES


def test_every_query_name_used_in_relay_is_defined() -> None:
    undefined = [
        f"{file}:{line}: {name}"
        for file, line, name, _ in named_query_calls()
        if name not in queries_for(file)
    ]
    assert undefined == []


def test_every_defined_query_is_used_in_relay() -> None:
    used = {(queries_for(file) is QUERIES, name) for file, _, name, _ in named_query_calls()}
    unused = [name for name in QUERIES if (True, name) not in used]
    unused += [name for name in MIGRATION_QUERIES if (False, name) not in used]
    assert unused == []


def test_every_call_passes_exactly_the_query_parameters_by_keyword() -> None:
    wrong = []
    for file, line, name, call in named_query_calls():
        query = queries_for(file).get(name)
        if query is None:
            continue  # reported by the test above
        given = {k.arg for k in call.keywords}
        if isinstance(call.func, ast.Attribute) and call.func.attr == "stream":
            given.discard("prefetch")  # the cursor's batch size, not a query parameter
        if len(call.args) > 1 or None in given or given != set(query.params):
            wrong.append(f"{file}:{line}: {name} takes {sorted(query.params)}")
    assert wrong == []


def test_every_loaded_query_numbers_its_parameters_from_one() -> None:
    for query in [*QUERIES.values(), *MIGRATION_QUERIES.values()]:
        numbers = {int(n) for n in re.findall(r"\$(\d+)", query.sql)}
        assert numbers == set(range(1, len(query.params) + 1)), query.name


def write_sql(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "queries.sql"
    path.write_text(text)
    return path


def test_named_parameters_become_positional_in_order_of_first_use(tmp_path: Path) -> None:
    path = write_sql(
        tmp_path,
        "-- name: get_thing\n"
        "-- One thing, visible to :scope (this comment is left alone).\n"
        "SELECT * FROM things\n"
        "WHERE id = :id AND (:scope::bigint IS NULL OR client_id = :scope)\n"
        "  AND label <> 'a:b' AND payload::jsonb ->> 'k' = :id;\n"
        "\n"
        "-- name: no_params\n"
        "-- Nothing to bind.\n"
        "SELECT 1;\n",
    )
    queries = load_queries(path)
    assert queries["get_thing"] == Query(
        "get_thing",
        "-- One thing, visible to :scope (this comment is left alone).\n"
        "SELECT * FROM things\n"
        "WHERE id = $1 AND ($2::bigint IS NULL OR client_id = $2)\n"
        "  AND label <> 'a:b' AND payload::jsonb ->> 'k' = $1;",
        ("id", "scope"),
    )
    assert queries["no_params"] == Query("no_params", "-- Nothing to bind.\nSELECT 1;", ())


def test_arguments_are_ordered_by_parameter_number() -> None:
    query = Query.parse("q", "SELECT :b, :a, :b")
    assert query.sql == "SELECT $1, $2, $1"
    assert query.args({"a": "A", "b": "B"}) == ["B", "A"]


def test_positional_parameters_are_refused_at_load_time(tmp_path: Path) -> None:
    path = write_sql(tmp_path, "-- name: old_style\n-- Positional.\nSELECT $1;\n")
    with pytest.raises(ValueError, match=r"'old_style'.*\$1"):
        load_queries(path)


def test_a_query_defined_twice_is_refused(tmp_path: Path) -> None:
    path = write_sql(tmp_path, "-- name: twice\nSELECT 1;\n-- name: twice\nSELECT 2;\n")
    with pytest.raises(ValueError, match="'twice' is defined twice"):
        load_queries(path)


class RefusingExecutor:
    """Stands in for the pool only to prove a refused call never reaches the database."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the database was called ({name})")


async def test_a_missing_parameter_is_a_type_error_naming_query_and_parameter() -> None:
    db = Db(RefusingExecutor())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"'claim_due_polls' is missing parameter\(s\): lease_s"):
        await db.fetch("claim_due_polls", owner="me", batch_size=10)


async def test_an_unknown_parameter_is_a_type_error_naming_query_and_parameter() -> None:
    db = Db(RefusingExecutor())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"'get_task' got unknown parameter\(s\): client_id"):
        await db.fetchrow("get_task", id="tsk_1", scope=None, client_id=1)


async def test_a_parameter_may_be_called_name() -> None:
    # The query name is positional-only, so `name=` is free for the query's own parameter.
    db = Db(RefusingExecutor())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"'insert_client' is missing parameter\(s\): role"):
        await db.execute("insert_client", name="acme", signing_secret="s")
