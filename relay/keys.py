"""Every typed key of the aiohttp application and request state, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

# The keys' value types, for type checkers only (importing them at run time would be a cycle);
# ruff does not count the AppKey["Name"] strings as uses, hence the noqa.
if TYPE_CHECKING:
    from relay.core.config import Settings  # noqa: F401
    from relay.core.runtime import Runtime  # noqa: F401
    from relay.core.store import Store  # noqa: F401
    from relay.delivery.subscriptions import WebhookService  # noqa: F401
    from relay.identity.clients import Client  # noqa: F401
    from relay.intake.catalog import ModelCatalog  # noqa: F401
    from relay.intake.tasks import TaskService  # noqa: F401
    from relay.polling.durations import DurationModel  # noqa: F401
    from relay.upstream.budget import UpstreamBudget  # noqa: F401
    from relay.upstream.client import UpstreamClient  # noqa: F401

SETTINGS = web.AppKey["Settings"]("settings")
STORE = web.AppKey["Store"]("store")
# The dispatcher's own few connections (generic plans: relay.app._database).
DISPATCH_STORE = web.AppKey["Store"]("dispatch_store")
HTTP_SESSION = web.AppKey[aiohttp.ClientSession]("http_session")
WEBHOOK_SESSION = web.AppKey[aiohttp.ClientSession]("webhook_session")
UPSTREAM = web.AppKey["UpstreamClient"]("upstream")
BUDGET = web.AppKey["UpstreamBudget"]("budget")
DURATIONS = web.AppKey["DurationModel"]("durations")
CATALOG = web.AppKey["ModelCatalog"]("catalog")
TASKS = web.AppKey["TaskService"]("tasks")
WEBHOOKS = web.AppKey["WebhookService"]("webhooks")
RUNTIME = web.AppKey["Runtime"]("runtime")

CLIENT = web.RequestKey["Client"]("client")
# The X-Request-Id of this request (given or made up), recorded in the action log.
REQUEST_ID = web.RequestKey[str]("request_id")
