"""Exceptions: the relay's RFC 9457 problem answers, connection failures, bad webhooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One violation of a request, located by a JSON pointer (`/input/duration`)."""

    loc: str
    message: str


class RelayError(Exception):
    """Base of every error the client raises for a relay answer or a failed connection.

    Carries the problem's `status`, `title`, `detail`, `type` and per-field `errors`
    (each a FieldError with `loc` and `message`). `status` is None when no answer came.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        title: str = "",
        type: str = "about:blank",
        errors: list[FieldError] | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type
        self.errors: list[FieldError] = errors or []
        # Seconds the relay asked to wait (Retry-After), when it said.
        self.retry_after = retry_after
        # The parsed body of the answer (the problem object), for anything not mapped above.
        self.body = body

    def __str__(self) -> str:
        head = f"{self.status} {self.title}: {self.detail}" if self.status else self.detail
        if self.errors:
            head += "".join(f"\n  {e.loc or '/'}: {e.message}" for e in self.errors)
        return head


class RelayConnectionError(RelayError):
    """No answer: the relay could not be reached, or the connection broke or timed out."""


class BadRequest(RelayError):
    """400: the request could not be read (malformed JSON, a bad header)."""


class AuthenticationError(RelayError):
    """401: no API key, an unknown one or a revoked one."""


class PermissionDenied(RelayError):
    """403: the key is valid but may not do this."""


class NotFound(RelayError):
    """404: no such resource for this client (another client's id looks the same)."""


class Conflict(RelayError):
    """409: the request conflicts with the resource's state (a reused key, a terminal task)."""


class PayloadTooLarge(RelayError):
    """413: the body is over the relay's limit (1 MiB)."""


class ValidationError(RelayError):
    """422: the request breaks the contract; `errors` lists every violation by JSON pointer."""


class RateLimited(RelayError):
    """429: too many requests; `retry_after` says how long to wait when the relay said."""


class ServerError(RelayError):
    """5xx: the relay (or something in front of it) failed."""


class ServiceUnavailable(ServerError):
    """503: the relay cannot serve now (database outage, upstream down); retry later."""


class WebhookVerificationError(Exception):
    """A webhook request whose signature, timestamp or headers do not verify: reject it."""


# The exception class for each status; any other 4xx is RelayError, any other 5xx ServerError.
ERRORS_BY_STATUS: dict[int, type[RelayError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_class(status: int) -> type[RelayError]:
    """The exception class the client raises for an error answer with this status."""
    if status in ERRORS_BY_STATUS:
        return ERRORS_BY_STATUS[status]
    return ServerError if status >= 500 else RelayError
