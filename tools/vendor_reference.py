"""Regenerate devtenant/data/*.json from Microsoft's published reference in ../shared/reference.

The emulator must answer like Dataverse and Graph do for the tables and types the product uses, and a
user's clone has no ../shared folder, so the slice it needs is vendored. tests/emulator/test_schema.py
checks the vendored files still equal what this script derives from the reference.

    python tools/vendor_reference.py [--check]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
OUT = ROOT / "devtenant" / "data"

GRAPH_TYPES = [
    "microsoft.graph.event", "microsoft.graph.calendar", "microsoft.graph.mailboxSettings",
    "microsoft.graph.dateTimeTimeZone", "microsoft.graph.location", "microsoft.graph.physicalAddress",
    "microsoft.graph.outlookGeoCoordinates", "microsoft.graph.itemBody", "microsoft.graph.attendee",
    "microsoft.graph.emailAddress", "microsoft.graph.recipient", "microsoft.graph.responseStatus",
    "microsoft.graph.singleValueLegacyExtendedProperty", "microsoft.graph.multiValueLegacyExtendedProperty",
    "microsoft.graph.patternedRecurrence", "microsoft.graph.onlineMeetingInfo", "microsoft.graph.timeSlot",
]


def dataverse_slice(columns: dict) -> dict:
    tables = {}
    for logical, table in columns["tables"].items():
        single_navs = {
            name: {"target": nav["target"], "referencing_attribute": nav["referencing_attribute"]}
            for name, nav in table.get("navigation_properties", {}).items()
            if nav.get("kind") == "single"
        }
        cols = {}
        for name, col in table["columns"].items():
            if not col.get("web_api"):
                continue
            entry = {"type": col["type"], "web_api": col["web_api"]}
            if col.get("targets"):
                entry["targets"] = col["targets"]
            if col.get("options"):
                entry["options"] = col["options"]
            cols[name] = entry
        tables[logical] = {
            "entity_set": table["entity_set"],
            "primary_id": table["primary_id"],
            "primary_name": table["primary_name"],
            "columns": cols,
            "single_navigation_properties": single_navs,
            "web_api_properties": sorted(table["web_api_properties"]),
        }
    return {"_about": "Derived by tools/vendor_reference.py from shared/reference/dataverse/columns.json",
            "tables": tables, "option_sets": columns["option_sets"]}


def _properties(schema: dict, schemas: dict) -> dict:
    props: dict = {}
    if "$ref" in schema:
        return _properties(schemas[schema["$ref"].split("/")[-1]], schemas)
    for part in schema.get("allOf", []):
        props.update(_properties(part, schemas))
    for name, prop in schema.get("properties", {}).items():
        props[name] = _describe(prop)
    return props


def _describe(prop: dict) -> dict:
    """Reduce an OpenAPI property to what body validation needs: its type name, or a list of it."""
    if prop.get("type") == "array":
        inner = _describe(prop["items"])
        return {"array": True, **inner}
    for variant in prop.get("anyOf", []) + prop.get("allOf", []):
        if "$ref" in variant:
            return {"ref": variant["$ref"].split("/")[-1]}
    if "$ref" in prop:
        return {"ref": prop["$ref"].split("/")[-1]}
    return {"type": prop.get("type", "object"), "readOnly": bool(prop.get("readOnly") or prop.get("x-readOnly-hint"))}


def graph_slice(openapi: dict) -> dict:
    schemas = openapi["components"]["schemas"]
    types = {}
    for name in GRAPH_TYPES:
        types[name] = _properties(schemas[name], schemas)
    enums = {name: s["enum"] for name, s in schemas.items() if "enum" in s}
    return {"_about": "Derived by tools/vendor_reference.py from shared/reference/graph/graph_v1.0_subset.openapi.json",
            "types": types, "enums": enums, "paths": sorted(openapi["paths"].keys())}


def build() -> dict[str, dict]:
    columns = json.loads((REFERENCE / "dataverse" / "columns.json").read_text())
    openapi = json.loads((REFERENCE / "graph" / "graph_v1.0_subset.openapi.json").read_text())
    return {"dataverse_schema.json": dataverse_slice(columns), "graph_schema.json": graph_slice(openapi)}


def render(doc: dict) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, doc in build().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != render(doc):
                stale.append(name)
        else:
            path.write_text(render(doc))
    if stale:
        print(f"stale vendored reference: {', '.join(stale)}; run python tools/vendor_reference.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
