"""Subscription, delivery and event-feed routes. Filled in by the webhooks work."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
