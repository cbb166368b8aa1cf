"""Domain errors; the HTTP layer maps each to an RFC 9457 problem in one middleware."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One violation, located by a JSON pointer into the request (`/input/duration`)."""

    loc: str
    message: str


@dataclass
class RelayError(Exception):
    """Base of every error a client can see; `status` is the HTTP status it maps to."""

    detail: str
    status: int = 400
    title: str = "Bad request"
    type: str = "about:blank"
    errors: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"


def json_pointer(parts: Iterable[str | int]) -> str:
    """An RFC 6901 pointer to `parts` (`~` and `/` escaped); "" is the whole document."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def problem(slug: str) -> str:
    """A stable problem type URI for the relay's own error kinds."""
    return f"https://mindvideo-relay.internal/problems/{slug}"


class InvalidRequest(RelayError):
    """The request body or parameters break the contract (422) or are unreadable (400)."""

    def __init__(self, detail: str, errors: list[FieldError], status: int = 422) -> None:
        title = "Validation failed" if status == 422 else "Bad request"
        slug = "validation" if status == 422 else "bad-request"
        super().__init__(detail, status, title, problem(slug), errors)


class NotFound(RelayError):
    """No such resource for this client (another client's id looks the same)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found", 404, "Not found", problem("not-found"))


class Conflict(RelayError):
    """The request conflicts with the resource's state (idempotency reuse, terminal task)."""

    def __init__(self, detail: str, slug: str = "conflict") -> None:
        super().__init__(detail, 409, "Conflict", problem(slug))


class Unauthorized(RelayError):
    """Missing, unknown or revoked API key."""

    def __init__(self, detail: str = "a valid API key is required") -> None:
        super().__init__(detail, 401, "Unauthorized", problem("unauthorized"))


class Forbidden(RelayError):
    """The key is valid but may not do this."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, 403, "Forbidden", problem("forbidden"))


class UpstreamFailed(RelayError):
    """Upstream answered, but refused what the relay asked on the client's behalf (502)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, 502, "Upstream error", problem("upstream-error"))


class ServiceUnavailable(RelayError):
    """Upstream cannot be reached right now; the same request may work later (503)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, 503, "Upstream unavailable", problem("upstream-unavailable"))
