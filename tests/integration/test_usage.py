"""Usage and cost: counts by status and cost sums, equal to the tasks' own values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from tests.helpers import auth, get_json, read_problem, submit_task

NewClient = Callable[..., Awaitable[dict[str, str]]]
STATUSES = ("queued", "processing", "succeeded", "failed", "cancelled")


async def all_tasks(api: TestClient, client: dict[str, str]) -> list[dict]:
    page = await get_json(api, client, "/v1/tasks?limit=200")
    assert page["next_cursor"] is None
    return page["data"]


def expected(tasks: list[dict]) -> dict:
    return {
        "tasks": len(tasks),
        "by_status": {s: sum(t["status"] == s for t in tasks) for s in STATUSES},
        "cost_estimate": pytest.approx(sum(t["cost_estimate"] or 0 for t in tasks)),
        "cost_actual": pytest.approx(sum(t["cost_actual"] or 0 for t in tasks)),
    }


async def seed(api: TestClient, store: Store, client: dict[str, str], finished: list[tuple]):
    """One task per (status, cost_actual, created_at); costs as upstream would report them."""
    for status, cost_actual, created_at in finished:
        task = await submit_task(api, client)
        await store.pool.execute(
            "UPDATE tasks SET status = $2, cost_actual = $3, "
            "created_at = $4::text::timestamptz WHERE id = $1",
            task["id"],
            status,
            cost_actual,
            created_at,
        )


@pytest.fixture
async def two_clients(relay_app: TestClient, new_client: NewClient, store: Store) -> tuple:
    a = await new_client("svc-a")
    b = await new_client("svc-b")
    await seed(
        relay_app,
        store,
        a,
        [
            ("succeeded", 0.5, "2026-01-01T10:00:00Z"),
            ("failed", None, "2026-01-01T23:59:59.999Z"),
            ("succeeded", 0.25, "2026-01-02T00:00:00Z"),
            ("queued", None, "2026-01-03T08:00:00Z"),
        ],
    )
    await seed(
        relay_app,
        store,
        b,
        [
            ("cancelled", 0.125, "2026-01-02T12:00:00Z"),
            ("succeeded", 1.5, "2026-01-02T13:00:00Z"),
        ],
    )
    return a, b


async def test_a_clients_usage_sums_equal_its_tasks_own_values(
    relay_app: TestClient, two_clients: tuple
) -> None:
    a, _ = two_clients
    tasks = await all_tasks(relay_app, a)
    report = await get_json(relay_app, a, "/v1/usage?group_by=day")
    assert report["group_by"] == "day"
    assert report["total"] == expected(tasks)
    by_day = {g["key"]: g for g in report["data"]}
    assert list(by_day) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    for day, group in by_day.items():
        assert {k: v for k, v in group.items() if k != "key"} == expected(
            [t for t in tasks if t["created_at"].startswith(day)]
        )
    assert by_day["2026-01-01"]["by_status"]["failed"] == 1
    assert by_day["2026-01-02"]["cost_actual"] == pytest.approx(0.25)


async def test_an_admin_sees_everyones_usage_by_client_and_model(
    relay_app: TestClient, new_client: NewClient, two_clients: tuple
) -> None:
    a, b = two_clients
    admin = await new_client(admin=True)
    tasks = {"svc-a": await all_tasks(relay_app, a), "svc-b": await all_tasks(relay_app, b)}
    report = await get_json(relay_app, admin, "/v1/usage?group_by=client")
    assert [g["key"] for g in report["data"]] == ["svc-a", "svc-b"]
    for group in report["data"]:
        assert {k: v for k, v in group.items() if k != "key"} == expected(tasks[group["key"]])
    everything = tasks["svc-a"] + tasks["svc-b"]
    assert report["total"] == expected(everything)
    by_model = await get_json(relay_app, admin, "/v1/usage?group_by=model")
    assert [g["key"] for g in by_model["data"]] == ["kling-video-o1"]
    assert by_model["total"] == expected(everything)


async def test_a_client_grouping_by_client_sees_only_itself(
    relay_app: TestClient, two_clients: tuple
) -> None:
    _, b = two_clients
    report = await get_json(relay_app, b, "/v1/usage?group_by=client")
    assert [g["key"] for g in report["data"]] == ["svc-b"]
    assert report["total"] == expected(await all_tasks(relay_app, b))


async def test_the_range_is_from_inclusive_to_exclusive(
    relay_app: TestClient, two_clients: tuple
) -> None:
    a, _ = two_clients
    report = await get_json(
        relay_app, a, "/v1/usage?from=2026-01-01T23:59:59.999Z&to=2026-01-03T08:00:00Z"
    )
    assert report["total"]["tasks"] == 2
    assert report["total"]["by_status"] == {
        "queued": 0,
        "processing": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 0,
    }
    assert report["total"]["cost_actual"] == pytest.approx(0.25)
    empty = await get_json(relay_app, a, "/v1/usage?from=2030-01-01")
    assert empty["data"] == [] and empty["total"]["tasks"] == 0


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("group_by=week", "/query/group_by"),
        ("from=later", "/query/from"),
        ("from=2026-01-02&to=2026-01-01", "/query/to"),
    ],
)
async def test_bad_usage_parameters_are_422_naming_the_field(
    relay_app: TestClient, new_client: NewClient, query: str, loc: str
) -> None:
    client = await new_client()
    body = await read_problem(await relay_app.get(f"/v1/usage?{query}", headers=auth(client)), 422)
    assert loc in [e["loc"] for e in body["errors"]]
