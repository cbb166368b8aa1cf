"""Export: every task in a range with its history, as the API shows them, JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from relay.audit.export import CSV_HEADER
from relay.core.store import Store
from tests.helpers import auth, get_task, history, read_problem, relay_env, run_relay, submit_task

NewClient = Callable[..., Awaitable[dict[str, str]]]
JAN = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z")


async def export_text(api: TestClient, client: dict[str, str], query: str) -> str:
    resp = await api.get(f"/v1/tasks/export?{query}", headers=auth(client))
    assert resp.status == 200, await resp.text()
    return await resp.text()


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


async def place(store: Store, task_id: str, created_at: str) -> None:
    """Move a task's creation time (the tasks table is not append-only; history is)."""
    await store.pool.execute(
        "UPDATE tasks SET created_at = $2::text::timestamptz WHERE id = $1", task_id, created_at
    )


async def test_jsonl_has_each_task_as_the_api_shows_it_with_its_history(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    a = await new_client("svc-a")
    b = await new_client("svc-b")
    admin = await new_client(admin=True)
    tasks_a = [await submit_task(relay_app, a) for _ in range(3)]
    task_b = await submit_task(relay_app, b)
    await relay_app.post(f"/v1/tasks/{tasks_a[1]['id']}/cancel", headers=auth(a))

    own = jsonl(await export_text(relay_app, a, ""))
    assert [t["id"] for t in own] == [t["id"] for t in tasks_a]  # creation order
    for line in own:
        expected = await get_task(relay_app, a, line["id"])
        assert {k: v for k, v in line.items() if k != "history"} == expected
        assert line["client"] == "svc-a"
        assert line["history"] == await history(relay_app, a, line["id"])
    assert [e["type"] for e in own[1]["history"]] == ["task.queued", "task.cancel_requested"]

    everyone = jsonl(await export_text(relay_app, admin, "format=jsonl"))
    assert [(t["id"], t["client"]) for t in everyone] == [
        *[(t["id"], "svc-a") for t in tasks_a],
        (task_b["id"], "svc-b"),
    ]


async def test_the_range_is_created_after_inclusive_to_created_before_exclusive(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    client = await new_client()
    times = ["2025-12-31T23:59:59.999Z", JAN[0], "2026-01-31T23:59:59.999Z", JAN[1]]
    tasks = [await submit_task(relay_app, client) for _ in times]
    for task, at in zip(tasks, times, strict=True):
        await place(store, task["id"], at)
    january = jsonl(
        await export_text(relay_app, client, f"created_after={JAN[0]}&created_before={JAN[1]}")
    )
    assert [t["id"] for t in january] == [tasks[1]["id"], tasks[2]["id"]]
    later = jsonl(await export_text(relay_app, client, f"created_after={JAN[1]}"))
    assert [t["id"] for t in later] == [tasks[3]["id"]]


async def test_csv_has_one_row_per_history_entry_with_the_task_repeated(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    client = await new_client("svc-a")
    first = await submit_task(relay_app, client)
    await relay_app.post(f"/v1/tasks/{first['id']}/cancel", headers=auth(client))
    # A task upstream has not accepted yet has no history: one row, entry columns empty.
    second = {"id": "tsk_zzzzzzzzzzzzzzzzzzzzzzzzzz"}
    await store.pool.execute(
        "INSERT INTO tasks (id, client_id, client_name, model, input, status, metadata) "
        "SELECT $1, client_id, client_name, model, input, 'queued', '{\"k\": \"v,\\n\"}'"
        " FROM tasks",
        second["id"],
    )
    resp = await relay_app.get("/v1/tasks/export?format=csv", headers=auth(client))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(await resp.text())))
    assert tuple(rows[0]) == CSV_HEADER
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    entries = await history(relay_app, client, first["id"])
    assert [(r["task_id"], r["event_id"], r["event_type"]) for r in records] == [
        *[(first["id"], e["id"], e["type"]) for e in entries],
        (second["id"], "", ""),
    ]
    assert {r["client"] for r in records} == {"svc-a"}
    assert json.loads(records[-1]["metadata"]) == {"k": "v,\n"}
    assert (
        records[0]["event_seq"] == "1"
        and records[0]["event_created_at"] == entries[0]["created_at"]
    )


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("format=xml", "/query/format"),
        ("created_after=soon", "/query/created_after"),
        (f"created_after={JAN[1]}&created_before={JAN[0]}", "/query/created_before"),
    ],
)
async def test_bad_export_parameters_are_422_naming_the_field(
    relay_app: TestClient, new_client: NewClient, query: str, loc: str
) -> None:
    client = await new_client()
    body = await read_problem(
        await relay_app.get(f"/v1/tasks/export?{query}", headers=auth(client)), 422
    )
    assert loc in [e["loc"] for e in body["errors"]]


async def test_relay_export_writes_what_the_api_exports_with_a_progress_bar(
    relay_app: TestClient, new_client: NewClient, store: Store, database_url: str, tmp_path: Path
) -> None:
    a = await new_client("svc-a")
    b = await new_client("svc-b")
    admin = await new_client(admin=True)
    for client in (a, b, a):
        task = await submit_task(relay_app, client)
        await place(store, task["id"], "2026-01-15T12:00:00Z")
    outside = await submit_task(relay_app, a)
    await place(store, outside["id"], JAN[1])
    env = relay_env(RELAY_DATABASE_URL=database_url, RELAY_LOG_LEVEL="warning")
    query = f"created_after={JAN[0]}&created_before={JAN[1]}"
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"all.{fmt}"
        run = await run_relay(
            "export",
            "--since",
            "2026-01-01",
            "--until",
            "2026-02-01",
            "--out",
            str(out),
            "--format",
            fmt,
            env=env,
        )
        assert run.returncode == 0, run.stderr
        assert out.read_text() == await export_text(relay_app, admin, f"{query}&format={fmt}")
        assert "100%" in run.stderr and "3/3 tasks" in run.stderr
        assert not (tmp_path / f"all.{fmt}.partial").exists()
    out = tmp_path / "a.jsonl"
    run = await run_relay(
        "export",
        "--since",
        JAN[0],
        "--until",
        JAN[1],
        "--out",
        str(out),
        "--client",
        "svc-a",
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert out.read_text() == await export_text(relay_app, a, query)
    assert len(out.read_text().splitlines()) == 2


async def test_relay_export_refuses_an_unknown_client_and_leaves_no_file(
    database_url: str, tmp_path: Path
) -> None:
    env = relay_env(RELAY_DATABASE_URL=database_url, RELAY_LOG_LEVEL="warning")
    out = tmp_path / "x.jsonl"
    run = await run_relay("export", "--out", str(out), "--client", "nobody", env=env)
    assert run.returncode == 1
    assert "no client named 'nobody'" in run.stderr
    assert list(tmp_path.iterdir()) == []
    bad = await run_relay("export", "--out", str(out), "--since", "someday", env=env)
    assert bad.returncode == 2 and "--since" in bad.stderr


async def test_openapi_documents_the_audit_routes(relay_app: TestClient) -> None:
    doc = await (await relay_app.get("/openapi.json")).json()
    export = doc["paths"]["/v1/tasks/export"]["get"]
    assert set(export["responses"]["200"]["content"]) == {"application/x-ndjson", "text/csv"}
    assert {p["name"] for p in export["parameters"]} == {
        "created_after",
        "created_before",
        "format",
    }
    audit = doc["paths"]["/v1/audit-log"]["get"]
    assert "403" in audit["responses"]
    assert {"actor", "action", "resource_type", "resource_id", "from", "to", "cursor"} <= {
        p["name"] for p in audit["parameters"]
    }
    usage = doc["paths"]["/v1/usage"]["get"]
    assert {p["name"] for p in usage["parameters"]} == {"from", "to", "group_by"}
    assert usage["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/UsageReport"
    }
