"""Every typed key of the aiohttp application and request state, in one place."""

from __future__ import annotations

import aiohttp
from aiohttp import web

SETTINGS = web.AppKey["Settings"]("settings")
STORE = web.AppKey["Store"]("store")
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
