"""Who may do what over HTTP (the roles each operation's declaration names, sync/admin/commands.py; the check,
sync/core/access.py), and the principal App Service Authentication passes."""
from __future__ import annotations

import pytest

from sync.admin.commands import OPERATIONS, roles_for
from sync.app.principal import MalformedPrincipal, easy_auth_header, principal_from
from sync.core.access import APPROVER, OPERATOR, Forbidden, Principal, authorize

OPS = {"run", "move", "filters-change"}
APPROVALS = {"discover", "register", "approve", "test", "enable", "disable", "set-method"}
READS = {"status", "list", "filters-list", "diagnose", "audit", "preflight"}


@pytest.mark.parametrize("roles,allowed", [({OPERATOR}, OPS | READS), ({APPROVER}, APPROVALS | READS),
                                           ({OPERATOR, APPROVER}, OPS | APPROVALS | READS), (set(), set())])
def test_each_role_allows_its_operations_and_refuses_the_rest_naming_the_role(roles, allowed):
    who = Principal("oid-1", "Ana", frozenset(roles))
    for operation in OPS | APPROVALS | READS:
        if operation in allowed:
            assert authorize(who, operation, roles_for(operation)) is who
        else:
            with pytest.raises(Forbidden) as refused:
                authorize(who, operation, roles_for(operation))
            needed = OPERATOR if operation in OPS else APPROVER if operation in APPROVALS else f"{APPROVER} or {OPERATOR}"
            assert needed in str(refused.value)


def test_nobody_signed_in_is_refused():
    with pytest.raises(Forbidden, match="sign in"):
        authorize(None, "status", roles_for("status"))


def test_every_declared_operation_is_one_of_the_two_roles_work_and_an_unknown_one_is_refused_to_both():
    assert set(OPERATIONS) == OPS | APPROVALS | READS
    both = Principal("oid-1", "Ana", frozenset({OPERATOR, APPROVER}))
    with pytest.raises(Forbidden):
        authorize(both, "drop-everything", roles_for("drop-everything"))


def test_the_principal_header_is_trusted_only_when_app_service_authentication_is_on():
    headers = easy_auth_header("0000-oid", "Ana Lee", [OPERATOR])
    assert principal_from(headers, {}) is None                           # a client could forge it without Easy Auth
    who = principal_from(headers, {"WEBSITE_AUTH_ENABLED": "True"})
    assert who == Principal("0000-oid", "Ana Lee", frozenset({OPERATOR}))
    for malformed in ("not base64!", "W10=", "eyJjbGFpbXMiOiA1fQ=="):          # not base64; "[]"; {"claims": 5}
        with pytest.raises(MalformedPrincipal):                               # answered 401 by the routes, never 500
            principal_from({"X-MS-CLIENT-PRINCIPAL": malformed}, {"WEBSITE_AUTH_ENABLED": "True"})
