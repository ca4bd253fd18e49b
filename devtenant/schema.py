"""Typed access to the vendored reference slices (devtenant/data/*.json, see tools/vendor_reference.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Navigation:
    name: str
    target: str
    lookup_property: str          # the _x_value Web API property that holds the target id


@dataclass
class Table:
    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str
    columns: dict
    navigations: dict[str, Navigation]
    web_api_properties: frozenset[str]

    def column_for_property(self, prop: str) -> dict | None:
        return self._columns_by_property.get(prop)

    @cached_property
    def _columns_by_property(self) -> dict[str, dict]:
        # first column of each Web API name, as the scan this replaces found it (the projection asks per value)
        found: dict[str, dict] = {}
        for col in self.columns.values():
            found.setdefault(col["web_api"], col)
        return found

    @cached_property
    def navigation_by_lookup(self) -> dict[str, str]:
        """lookup property (_x_value) -> the first navigation property that follows it."""
        found: dict[str, str] = {}
        for nav in self.navigations.values():
            found.setdefault(nav.lookup_property, nav.name)
        return found


class DataverseSchema:
    def __init__(self, doc: dict):
        self.option_sets = doc["option_sets"]
        self.tables: dict[str, Table] = {}
        for logical, t in doc["tables"].items():
            navs = {}
            for name, nav in t["single_navigation_properties"].items():
                col = t["columns"].get(nav["referencing_attribute"])
                if col is None:
                    continue
                navs[name] = Navigation(name, nav["target"], col["web_api"])
            self.tables[logical] = Table(logical, t["entity_set"], t["primary_id"], t["primary_name"], t["columns"],
                                         navs, frozenset(t["web_api_properties"]))

    @cached_property
    def by_entity_set(self) -> dict[str, Table]:
        return {t.entity_set: t for t in self.tables.values()}

    def option_label(self, table: str, column: str, value: object) -> str | None:
        col = self.tables[table].columns.get(column, {})
        options = col.get("options") or self.option_sets.get(f"{table}.{column}", {}).get("values") or {}
        return options.get(str(value))


class GraphSchema:
    def __init__(self, doc: dict):
        self.types: dict[str, dict] = doc["types"]
        self.enums: dict[str, list[str]] = doc["enums"]
        self.paths: list[str] = doc["paths"]


def _with_emulator_tables(doc: dict) -> dict:
    # Work orders point at sales territories (msdyn_serviceterritory -> territory); the reference does not
    # cover that table, so the emulator adds the three columns a formatted value and a filter need.
    doc["tables"].setdefault("territory", {
        "entity_set": "territories", "primary_id": "territoryid", "primary_name": "name",
        "columns": {"territoryid": {"type": "Uniqueidentifier", "web_api": "territoryid"},
                    "name": {"type": "String", "web_api": "name"},
                    "versionnumber": {"type": "BigInt", "web_api": "versionnumber"}},
        "single_navigation_properties": {}, "web_api_properties": ["name", "territoryid", "versionnumber"]})
    # M7: a user's Dynamics mailbox and how it synchronizes appointments, contacts and tasks (Learn, "Mailbox table/entity
    # reference": actdeliverymethod 0 Dynamics 365 for Outlook, 1 Server-Side Synchronization, 2 None; actstatus 0 Not
    # Run, 1 Success, 2 Failure). Not in the vendored reference either; the columns the preflight and the test read.
    doc["tables"].setdefault("mailbox", {
        "entity_set": "mailboxes", "primary_id": "mailboxid", "primary_name": "name",
        "columns": {"mailboxid": {"type": "Uniqueidentifier", "web_api": "mailboxid"}, "name": {"type": "String", "web_api": "name"},
                    "emailaddress": {"type": "String", "web_api": "emailaddress"},
                    "actdeliverymethod": {"type": "Picklist", "web_api": "actdeliverymethod"},
                    "actstatus": {"type": "Picklist", "web_api": "actstatus"},
                    "enabledforact": {"type": "Boolean", "web_api": "enabledforact"},
                    "versionnumber": {"type": "BigInt", "web_api": "versionnumber"}},
        "single_navigation_properties": {},
        "web_api_properties": ["actdeliverymethod", "actstatus", "emailaddress", "enabledforact", "mailboxid", "name", "versionnumber"]})
    return doc


DATAVERSE = DataverseSchema(_with_emulator_tables(json.loads((DATA / "dataverse_schema.json").read_text())))
GRAPH = GraphSchema(json.loads((DATA / "graph_schema.json").read_text()))
