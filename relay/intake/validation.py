"""What a task submission must satisfy before anything is stored or sent upstream.

The body's shape is pydantic's job (relay/http/schemas.py); this checks what it cannot see:
the model and its input schema, the metadata's size, webhook fields that contradict each
other, and webhook URLs the relay may not call. `TaskValidation` is mixed into
`TaskService`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.core.egress import Network, literal_ip_denied
from relay.core.errors import FieldError, InvalidRequest
from relay.intake.catalog import ModelCatalog

# Metadata is for correlation ids, not payloads.
METADATA_MAX_BYTES = 4096


@dataclass(frozen=True)
class NewTask:
    """A validated `POST /v1/tasks` body."""

    model: str
    input: dict[str, Any]
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    metadata: dict[str, Any] | None = None

    def request_hash(self) -> str:
        """Canonical hash of the body: the idempotency comparison."""
        canonical = json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class TaskValidation:
    """The checks of `POST /v1/tasks` beyond the body's own schema."""

    catalog: ModelCatalog
    webhook_deny_cidrs: Sequence[Network]

    def validate(self, task: NewTask) -> None:
        """Model known, input valid for its schema, metadata small: or InvalidRequest."""
        errors = self.field_errors(task.__dict__)
        if task.webhook_url is not None:
            denied = literal_ip_denied(task.webhook_url, self.webhook_deny_cidrs)
            if denied:
                errors.append(FieldError("/webhook_url", denied))
        if errors:
            detail = f"{len(errors)} validation error(s) in the request"
            if not self.catalog.accepts(task.model):
                known = ", ".join(self.catalog.names)
                detail = f"unknown model {task.model!r}; known models: {known}"
            raise InvalidRequest(detail, errors)

    def field_errors(self, body: Mapping[str, Any]) -> list[FieldError]:
        """Violations a task body's own schema cannot see, located by JSON pointer.

        Works on a raw, unvalidated body too (a field of the wrong type is skipped: the
        body's validation reports it), so an invalid body still hears about its input.
        """
        errors: list[FieldError] = []
        model, task_input = body.get("model"), body.get("input")
        if isinstance(model, str):
            if model in self.catalog:
                if isinstance(task_input, dict):
                    errors += self.catalog.validate_input(model, task_input)
            elif not self.catalog.accepts(model):
                # The input cannot be checked without a schema; other fields still can.
                # (Accepted without one only under RELAY_UNKNOWN_MODELS=forward: then
                # upstream judges the input and its 4xx fails the task.)
                errors.append(
                    FieldError("/model", f"must be one of: {', '.join(self.catalog.names)}")
                )
        metadata = body.get("metadata")
        if isinstance(metadata, dict):
            encoded = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)
            # surrogatepass: a lone surrogate is reported on its own; it must not crash this.
            size = len(encoded.encode(errors="surrogatepass"))
            if size > METADATA_MAX_BYTES:
                errors.append(
                    FieldError("/metadata", f"is {size} bytes; at most {METADATA_MAX_BYTES}")
                )
        events = body.get("webhook_events")
        if isinstance(events, list):
            if events and body.get("webhook_url") is None:
                # Task events filter deliveries to the task's own webhook_url; without one
                # they would silently do nothing (subscriptions have their own filter).
                errors.append(FieldError("/webhook_events", "needs a webhook_url to apply to"))
            errors += repeated_entries(events, "/webhook_events")
        return errors


def repeated_entries(values: Sequence[Any], base: str) -> list[FieldError]:
    """Each entry of a list that repeats an earlier one, located at the repeat."""
    errors = []
    first: dict[str, int] = {}
    for index, value in enumerate(values):
        if not isinstance(value, str):
            continue
        if value in first:
            errors.append(
                FieldError(f"{base}/{index}", f"repeats {value!r} (entry {first[value]})")
            )
        else:
            first[value] = index
    return errors
