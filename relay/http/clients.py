"""The calling client's own settings: rotating its webhook signing secret."""

from __future__ import annotations

from aiohttp import web

from relay.audit import action_log as actions
from relay.audit.action_log import Actor, record_action
from relay.core.payloads import iso
from relay.http.common import json_response
from relay.http.openapi import documented
from relay.http.schemas import SigningSecret
from relay.identity import clients
from relay.keys import CLIENT, REQUEST_ID, SETTINGS, STORE

routes = web.RouteTableDef()


@routes.post("/v1/client/rotate-secret")
@documented("Rotate this client's signing secret for per-task webhook_url", {200: SigningSecret})
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret, shown once; the previous one also signs until `previous_secret_expires_at`."""
    client = request[CLIENT]
    secret, until = await clients.rotate_signing_secret(
        request.app[STORE], client.id, request.app[SETTINGS].secret_rotation_overlap_s
    )
    await record_action(
        request.app[STORE],
        Actor.of(client, request.get(REQUEST_ID)),
        actions.CLIENT_SECRET_ROTATED,
        "client",
        client.name,
    )
    return json_response({"secret": secret, "previous_secret_expires_at": iso(until)})
