"""The words of the contract: task statuses, event types, delivery statuses.

Each set is spelled once, as a `Literal` (what pydantic, and so /openapi.json, uses); the
tuples the code checks against are derived from it with `get_args`.
"""

from __future__ import annotations

from typing import Literal, get_args

TaskStatus = Literal["queued", "processing", "succeeded", "failed", "cancelled"]
# A webhook event type per status a task can enter: `task.<status>`.
EventType = Literal[
    "task.queued", "task.processing", "task.succeeded", "task.failed", "task.cancelled"
]
DeliveryStatus = Literal["pending", "succeeded", "failed", "dead"]
# Who wrote a history entry: the relay itself or what upstream reported.
HistorySource = Literal["relay", "upstream"]

TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
DELIVERY_STATUSES: tuple[str, ...] = get_args(DeliveryStatus)
