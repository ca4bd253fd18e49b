"""D5: the mass-delete guard, for one mailbox and for the whole deployment. An empty answer caused by a
permission or filter mistake must not wipe calendars, neither one large one nor many small ones each
under the threshold."""
from __future__ import annotations

from .settings import SyncSettings


def over_share(removals: int, links: int, settings: SyncSettings) -> bool:
    """More than the set share of the links (default 50 %), and at least the set count (default 10)."""
    return removals >= settings.mass_delete_min and 100.0 * removals / max(1, links) > settings.mass_delete_percent


def _share(removals: int, links: int) -> str:
    return f"{removals} of {links} links ({100.0 * removals / max(1, links):.0f} %"


def mailbox_message(removals: int, links: int, settings: SyncSettings) -> str:
    return (f"mass-delete guard: this cycle would remove {_share(removals, links)} > {settings.mass_delete_percent:.0f} %); "
            "nothing was changed for this mailbox. Check permissions and filters, then run again with --force if it is intended.")


def deployment_message(removals: int, links: int, mailboxes: int, settings: SyncSettings) -> str:
    return (f"deployment-wide mass-delete guard: this cycle would remove {_share(removals, links)} "
            f"> {settings.mass_delete_percent:.0f} %) across {mailboxes} mailboxes; no mailbox removed anything. "
            "The likely cause is a sync filter that matches too little (a misspelt territory, status or work order type) "
            "or a permission change in Dataverse; check `filters list` and the app user's security role, "
            "then run again with --force (or {\"force\": true}) if it is intended.")
