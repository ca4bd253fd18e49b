"""A stand-in for the Microsoft Entra token endpoint (`/{tenant}/oauth2/v2.0/token`, client credentials with a
client assertion), for the local development credential's cross-tenant tokens.

The product's real federated credential (azure-identity's ClientAssertionCredential) talks to Entra ID over
https only, which no test here can reach; the local credential asks this endpoint instead, so a tenant without
consent or without the federated trust refuses a token as Entra does. Answers follow the Microsoft identity
platform's "OAuth 2.0 client credentials flow" page (success: token_type, expires_in, access_token; error:
error, error_description, error_codes). The AADSTS codes are the documented ones for each case: 90002 (tenant
not found), 7000229 (the app has no service principal in the tenant: no consent, or removed), 70021 (no
matching federated identity record for the assertion).
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web

from .tenant import Tenant

PATH = "/_entra/{tenant}/oauth2/v2.0/token"


class EntraService:
    def __init__(self, tenant: Tenant):
        self.tenant = tenant

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.token)]

    @staticmethod
    def _error(status: int, error: str, code: int, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": f"AADSTS{code}: {description}", "error_codes": [code]},
                                 status=status)

    async def token(self, request: web.Request) -> web.Response:
        tid = request.match_info["tenant"].lower()
        form = dict(parse_qsl((await request.read()).decode()))
        response = self._answer(tid, form)
        self.tenant.log.add(service="entra", kind="http", method="POST", path=f"/{tid}/oauth2/v2.0/token", status=response.status,
                            mailbox=None, body={k: ("<redacted>" if k == "client_assertion" else v) for k, v in form.items()})
        return response

    def _answer(self, tid: str, form: dict[str, str]) -> web.Response:
        app = form.get("client_id", "")
        directory = self.tenant.graph.directories.get(tid)
        if directory is None:
            return self._error(400, "invalid_request", 90002, f"Tenant '{tid}' not found.")
        if form.get("grant_type") != "client_credentials" or not form.get("client_assertion") or not app:
            return self._error(400, "invalid_request", 900144, "The request body must contain client_id, scope and client_assertion.")
        if not directory.federation_trusted or "AzureADTokenExchange" not in form["client_assertion"]:
            return self._error(400, "invalid_client", 70021, "No matching federated identity record found for presented assertion.")
        if not directory.consented:
            return self._error(400, "invalid_client", 7000229,
                               f"The client application {app} is missing service principal in the tenant {tid}.")
        scope = form.get("scope", "")
        return web.json_response({"token_type": "Bearer", "expires_in": 3599,
                                  "access_token": f"devtenant;tid={tid};appid={app};scope={scope}"})
