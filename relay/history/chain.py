"""Tamper evidence for task history: hash chains, their verification and checkpoints.

Every history entry carries `hash` = sha256 over the canonical JSON of what
`GET /v1/tasks/{id}/events` shows for it, its task id and `prev_hash` (the previous entry's
hash; 64 zeros for the first). Anyone can recompute a chain from the API output. A
checkpoint (the digest over every task's last entry, the "heads") is published outside
the database, so a removed last entry, or a rewritten chain, shows too.
The canonical form is written down in docs/audit.md ("The hash chain"); change both together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from relay.core.payloads import iso
from relay.core.store import Db

# prev_hash of the first entry of every chain.
GENESIS = "0" * 64
# The fields of an entry the hash covers, besides task_id and prev_hash: every field the
# API shows for it.
SHOWN_FIELDS = (
    "id", "seq", "type", "from_status", "to_status", "source", "upstream_event", "created_at",
)  # fmt: skip
# Python prints floats from 1e16 up with an exponent; Postgres stores the number exactly and
# hands it back as an integer. Such floats are stored as the integer they are.
_EXACT_INTEGER_FLOAT = 1e16


def normalise_json(value: Any) -> Any:
    """`value` as it reads back from a jsonb column, so a hash taken now matches later."""
    if isinstance(value, float):
        if value == 0:
            return 0.0  # jsonb has no negative zero
        if value.is_integer() and abs(value) >= _EXACT_INTEGER_FLOAT:
            return int(Decimal(repr(value)))
        return value
    if isinstance(value, dict):
        return {key: normalise_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise_json(item) for item in value]
    return value


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (non-ASCII not escaped): the bytes that are hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(task_id: str, entry: Mapping[str, Any], prev_hash: str) -> str:
    """The hash of one entry as the API shows it (`created_at` the ISO string)."""
    document = {name: entry[name] for name in SHOWN_FIELDS}
    document.update(task_id=task_id, prev_hash=prev_hash)
    return hashlib.sha256(canonical_json(document)).hexdigest()


def shown_time(value: datetime) -> datetime:
    """A time as the API shows it (milliseconds), so the stored and hashed times agree."""
    return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Head:
    """The last entry of one task's chain."""

    task_id: str
    seq: int
    hash: str

    def line(self) -> str:
        """`task_id:seq:hash`, the line the checkpoint digest is taken over."""
        return f"{self.task_id}:{self.seq}:{self.hash}"


def heads_digest(heads: Iterable[Head]) -> tuple[int, str]:
    """(count, sha256 hex) over `task_id:seq:hash\\n` lines, heads sorted by task id."""
    digest = hashlib.sha256()
    count = 0
    for head in heads:
        digest.update(head.line().encode() + b"\n")
        count += 1
    return count, digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """The digest over every chain head whose entry was created at or before `at`."""

    at: datetime
    heads: int
    digest: str
    # the heads themselves, when known (a heads file): lets verify name the task at fault
    listing: tuple[Head, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        """The small JSON the log line and `relay audit checkpoint` print."""
        return {"at": iso(self.at), "heads": self.heads, "digest": self.digest}

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """A checkpoint JSON, optionally followed by its `task_id:seq:hash` lines.

        Raises ValueError saying what is wrong.
        """
        first, _, rest = text.strip().partition("\n")
        try:
            data = json.loads(first)
            at = datetime.fromisoformat(data["at"].replace("Z", "+00:00"))
            heads, digest = int(data["heads"]), str(data["digest"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                'expected {"at": "<ISO time>", "heads": N, "digest": "<hex>"}'
            ) from exc
        listing = None
        if rest.strip():
            listing = tuple(_parse_head(line) for line in rest.split() if line)
        return cls(at, heads, digest, listing)


def _parse_head(line: str) -> Head:
    task_id, seq, hash_ = line.rsplit(":", 2)
    return Head(task_id, int(seq), hash_)


@dataclass
class Finding:
    """The first entry that does not match: which task, which entry, what is wrong."""

    task_id: str | None
    entry_id: str | None
    seq: int | None
    problem: str

    def __str__(self) -> str:
        if self.task_id is None:
            return self.problem
        where = f"task {self.task_id}"
        if self.entry_id is not None:
            where += f" entry {self.entry_id} (seq {self.seq})"
        elif self.seq is not None:
            where += f" entry seq {self.seq}"
        return f"{where}: {self.problem}"


@dataclass
class Verification:
    """What `relay audit verify` found."""

    tasks: int = 0
    entries: int = 0
    finding: Finding | None = None
    heads: list[Head] = field(default_factory=list)


def _check_entry(
    row: Mapping[str, Any], expected_prev: str, previous_seq: int | None
) -> Finding | None:
    """Whether one stored entry continues its chain and matches its own content."""
    task_id, seq = row["task_id"], row["seq"]
    if row["prev_hash"] != expected_prev:
        if previous_seq is None and expected_prev == GENESIS:
            problem = "the task's first entry does not start the chain (entries before it removed)"
        elif previous_seq is not None and seq != previous_seq + 1:
            problem = (
                f"prev_hash does not match entry seq {previous_seq}: "
                f"entry seq {previous_seq + 1} was removed"
            )
        else:
            problem = "prev_hash does not match the previous entry (an entry inserted or removed)"
        return Finding(task_id, row["id"], seq, problem)
    shown = {name: row[name] for name in SHOWN_FIELDS}
    shown["created_at"] = iso(row["created_at"])
    if entry_hash(task_id, shown, row["prev_hash"]) != row["hash"]:
        return Finding(task_id, row["id"], seq, "hash does not match the entry (modified)")
    return None


async def verify_chains(
    rows: AsyncIterator[Mapping[str, Any]], *, heads_at: datetime | None = None
) -> Verification:
    """Walk entries ordered by task id (bytewise) then seq; stop at the first mismatch.

    With `heads_at`, also collect each task's head as of that time (for a checkpoint).
    """
    result = Verification()
    task_id: str | None = None
    expected_prev = GENESIS
    previous_seq: int | None = None
    head: Head | None = None
    async for row in rows:
        if row["task_id"] != task_id:
            if head is not None:
                result.heads.append(head)
            task_id, expected_prev, previous_seq, head = row["task_id"], GENESIS, None, None
            result.tasks += 1
        result.entries += 1
        finding = _check_entry(row, expected_prev, previous_seq)
        if finding is not None:
            result.finding = finding
            return result
        expected_prev, previous_seq = row["hash"], row["seq"]
        if heads_at is not None and row["created_at"] <= heads_at:
            head = Head(row["task_id"], row["seq"], row["hash"])
    if head is not None:
        result.heads.append(head)
    return result


def compare_with_checkpoint(checkpoint: Checkpoint, heads: list[Head]) -> Finding | None:
    """Whether the heads as of the checkpoint's time are the ones it saw; names what differs."""
    count, digest = heads_digest(heads)
    if (count, digest) == (checkpoint.heads, checkpoint.digest):
        return None
    if checkpoint.listing is not None:
        now = {h.task_id: h for h in heads}
        for then in checkpoint.listing:
            current = now.pop(then.task_id, None)
            if current is None:
                return Finding(then.task_id, None, then.seq, "every entry of the task removed")
            if current.seq < then.seq:
                return Finding(
                    then.task_id,
                    None,
                    then.seq,
                    f"removed (the chain now ends at seq {current.seq})",
                )
            if current != then:
                return Finding(
                    then.task_id, None, then.seq, "differs from the checkpoint's head (rewritten)"
                )
        for extra in now.values():
            return Finding(extra.task_id, None, extra.seq, "inserted before the checkpoint's time")
    return Finding(
        None,
        None,
        None,
        f"the chain heads as of {iso(checkpoint.at)} do not match the checkpoint "
        f"({count} heads, digest {digest}; the checkpoint has {checkpoint.heads}, "
        f"{checkpoint.digest}); a checkpoint with its heads listing names the task",
    )


async def _history_rows(db: Db, since: datetime | None) -> AsyncIterator[Mapping[str, Any]]:
    async for row in db.stream("audit_history", since=since):
        yield row


async def verify(
    db: Db, *, since: datetime | None = None, checkpoint: Checkpoint | None = None
) -> Verification:
    """Recompute every chain (of tasks created since `since`), then compare the heads as of
    the checkpoint's time with it. `result.finding` is the first mismatch, or None."""
    heads_at = checkpoint.at if checkpoint is not None else None
    result = await verify_chains(_history_rows(db, since), heads_at=heads_at)
    if result.finding is None and checkpoint is not None:
        result.finding = compare_with_checkpoint(checkpoint, result.heads)
        if result.finding is not None and result.finding.task_id is None:
            # A digest alone cannot say which task; the task's own entry counter may.
            suspect = await db.fetchrow("audit_seq_suspect")
            if suspect is not None:
                result.finding.problem += (
                    f"; task {suspect['task_id']} counts {suspect['event_seq']} entries "
                    f"but its chain ends at seq {suspect['last_seq']}"
                )
    return result


async def take_checkpoint(db: Db, at: datetime) -> Checkpoint:
    """The digest over every task's head as of `at` (streamed: constant memory)."""
    digest = hashlib.sha256()
    count = 0
    async for row in db.stream("audit_heads", at=at):
        digest.update(Head(row["task_id"], row["seq"], row["hash"]).line().encode() + b"\n")
        count += 1
    return Checkpoint(at, count, digest.hexdigest())


async def checkpoint_heads(db: Db, at: datetime) -> AsyncIterator[Head]:
    """Every task's head as of `at`, sorted by task id (for a heads listing)."""
    async for row in db.stream("audit_heads", at=at):
        yield Head(row["task_id"], row["seq"], row["hash"])
