"""The history hash chain: the canonical form docs/audit.md documents, and what verify finds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from relay.history.chain import (
    GENESIS,
    Checkpoint,
    Head,
    canonical_json,
    compare_with_checkpoint,
    entry_hash,
    heads_digest,
    normalise_json,
    verify_chains,
)

T0 = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)


def readme_recipe(entry: dict[str, Any], task_id: str, prev_hash: str) -> str:
    """The few lines of docs/audit.md, written out independently of relay.history.chain."""
    doc = dict(entry, task_id=task_id, prev_hash=prev_hash)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def api_entry(seq: int, **fields: Any) -> dict[str, Any]:
    """One entry as GET /v1/tasks/{id}/events shows it (without hash and prev_hash)."""
    return {
        "id": f"evt_{seq}",
        "seq": seq,
        "type": "task.queued",
        "from_status": None,
        "to_status": "queued",
        "source": "upstream",
        "upstream_event": None,
        "created_at": "2026-11-23T12:00:00.123Z",
        **fields,
    }


def test_entry_hash_is_the_documented_recipe() -> None:
    entry = api_entry(2, upstream_event={"é": [1, 2.5, None], "a": {"z": True, "b": "x\n"}})
    assert entry_hash("tsk_1", entry, GENESIS) == readme_recipe(entry, "tsk_1", GENESIS)
    # every shown field, the task and the previous hash are covered
    for change in ({"seq": 3}, {"type": "task.failed"}, {"created_at": "2026-11-23T12:00:00.124Z"},
                   {"upstream_event": {"é": [1, 2.5]}}, {"source": "relay"}):  # fmt: skip
        assert entry_hash("tsk_1", {**entry, **change}, GENESIS) != entry_hash(
            "tsk_1", entry, GENESIS
        )
    assert entry_hash("tsk_2", entry, GENESIS) != entry_hash("tsk_1", entry, GENESIS)
    assert entry_hash("tsk_1", entry, "1" * 64) != entry_hash("tsk_1", entry, GENESIS)


def test_canonical_json_sorts_keys_without_spaces_in_utf8() -> None:
    assert canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()


def test_floats_are_stored_as_they_read_back_from_jsonb() -> None:
    assert normalise_json({"x": [1e16, -0.0, 1.5, 1e23, 7]}) == {
        "x": [10000000000000000, 0.0, 1.5, 10**23, 7]
    }


def test_heads_digest_is_sha256_over_sorted_lines() -> None:
    heads = [Head("tsk_a", 3, "aa"), Head("tsk_b", 1, "bb")]
    expected = hashlib.sha256(b"tsk_a:3:aa\ntsk_b:1:bb\n").hexdigest()
    assert heads_digest(heads) == (2, expected)


def chain(task_id: str, count: int) -> list[dict[str, Any]]:
    """Stored rows of one valid chain."""
    rows, prev = [], GENESIS
    for seq in range(1, count + 1):
        shown = api_entry(seq)
        digest = entry_hash(task_id, shown, prev)
        rows.append({**shown, "task_id": task_id, "created_at": T0, "prev_hash": prev,
                     "hash": digest})  # fmt: skip
        prev = digest
    return rows


async def rows_of(rows: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for row in rows:
        yield row


async def test_valid_chains_verify() -> None:
    result = await verify_chains(rows_of(chain("tsk_a", 3) + chain("tsk_b", 2)), heads_at=T0)
    assert result.finding is None
    assert (result.tasks, result.entries) == (2, 5)
    assert [h.seq for h in result.heads] == [3, 2]


async def test_a_modified_entry_is_named() -> None:
    rows = chain("tsk_a", 3)
    rows[1]["to_status"] = "processing"
    finding = (await verify_chains(rows_of(rows))).finding
    assert finding is not None and (finding.task_id, finding.seq) == ("tsk_a", 2)
    assert "modified" in str(finding) and "evt_2" in str(finding)


async def test_a_removed_middle_entry_is_named() -> None:
    rows = chain("tsk_a", 3)
    del rows[1]
    finding = (await verify_chains(rows_of(rows))).finding
    assert finding is not None and (finding.task_id, finding.seq) == ("tsk_a", 3)
    assert "seq 2 was removed" in str(finding)


async def test_a_removed_last_entry_needs_a_checkpoint() -> None:
    full = await verify_chains(rows_of(chain("tsk_a", 3)), heads_at=T0)
    count, digest = heads_digest(full.heads)
    checkpoint = Checkpoint(T0, count, digest, tuple(full.heads))
    cut = await verify_chains(rows_of(chain("tsk_a", 3)[:2]), heads_at=T0)
    assert cut.finding is None
    finding = compare_with_checkpoint(checkpoint, cut.heads)
    assert finding is not None and (finding.task_id, finding.seq) == ("tsk_a", 3)
    assert "removed" in str(finding)
    # the digest alone still tells that something changed
    assert compare_with_checkpoint(Checkpoint(T0, count, digest), cut.heads) is not None


def test_checkpoint_parses_its_own_json_and_heads() -> None:
    checkpoint = Checkpoint(T0, 1, "ab", (Head("tsk_a", 2, "ff"),))
    text = json.dumps(checkpoint.as_json()) + "\ntsk_a:2:ff\n"
    assert Checkpoint.parse(text) == checkpoint
