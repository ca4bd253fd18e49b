"""Who may do what over HTTP: two app roles, as the seed splits the work ("Exchange admin … and a Dynamics 365
System Admin role or the delegated mailbox approver role"). Pure: the principal is read by the app shell.

- Sync.Operator runs cycles (also forced), moves mailboxes and changes sync filters.
- Mailbox.Approver discovers, registers, approves, tests, enables or disables mailboxes and sets their sync method.
- Reading status (cycles, mailboxes, filters, a diagnosis, the audit trail) needs either role.

Which operation needs which is declared with the operation (admin/commands.py).
"""
from __future__ import annotations

from dataclasses import dataclass

OPERATOR = "Sync.Operator"
APPROVER = "Mailbox.Approver"
EITHER = frozenset({OPERATOR, APPROVER})



@dataclass(frozen=True)
class Principal:
    object_id: str             # an id, safe for telemetry
    name: str                  # for the audit trail (Table Storage), never for telemetry
    roles: frozenset[str]


class Forbidden(Exception):
    """Refused: the message names the role needed."""


def authorize(principal: Principal | None, operation: str, needed: frozenset[str]) -> Principal:
    """`needed`: the roles the operation's declaration names (admin/commands.py)."""
    if principal is None:
        raise Forbidden("sign in: administration over HTTP needs a Microsoft Entra sign-in (App Service Authentication)")
    if not needed & principal.roles:
        raise Forbidden(f"{operation} needs the app role {' or '.join(sorted(needed))}; ask an administrator of the app "
                        "registration to assign it")
    return principal
