"""Python client of mindvideo-relay: submit MindVideo tasks, read them, verify their webhooks.

Example::

    from mindvideo_relay import RelayClient, verify_webhook

    with RelayClient("http://relay.internal:8080", "rk_...") as relay:
        task = relay.submit("kling-video-o1", {"prompt": "a fox in snow", "duration": 5})
"""

from mindvideo_relay._version import __version__
from mindvideo_relay.async_client import AsyncEventFeed, AsyncRelayClient
from mindvideo_relay.client import EventFeed, RelayClient
from mindvideo_relay.errors import (
    AuthenticationError,
    BadRequest,
    Conflict,
    FieldError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    RelayConnectionError,
    RelayError,
    ServerError,
    ServiceUnavailable,
    ValidationError,
    WebhookVerificationError,
)
from mindvideo_relay.models import (
    Attempt,
    Delivery,
    Event,
    HistoryEntry,
    Page,
    SubmittedTask,
    Subscription,
    Task,
)
from mindvideo_relay.webhooks import verify_webhook

__all__ = [
    "AsyncEventFeed",
    "AsyncRelayClient",
    "Attempt",
    "AuthenticationError",
    "BadRequest",
    "Conflict",
    "Delivery",
    "Event",
    "EventFeed",
    "FieldError",
    "HistoryEntry",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "RelayClient",
    "RelayConnectionError",
    "RelayError",
    "ServerError",
    "ServiceUnavailable",
    "SubmittedTask",
    "Subscription",
    "Task",
    "ValidationError",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]
