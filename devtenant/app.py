"""Builds the emulator's aiohttp application: Dataverse, Graph and the control API on one port."""
from __future__ import annotations

from aiohttp import web

from .control import ControlApi
from .dataverse import DataverseService
from .entra import EntraService
from .graph import GraphService
from .tenant import Tenant


def build_app(tenant: Tenant | None = None) -> web.Application:
    tenant = tenant or Tenant()
    # Graph accepts batch bodies up to 4 MB; Dataverse requests are small. 8 MB leaves room for both.
    app = web.Application(client_max_size=8 * 1024 * 1024)
    graph = GraphService(tenant)
    app["tenant"] = tenant
    app.add_routes(DataverseService(tenant).routes())
    app.add_routes(graph.routes())
    app.add_routes(EntraService(tenant).routes())
    app.add_routes(ControlApi(tenant, graph).routes())
    return app
