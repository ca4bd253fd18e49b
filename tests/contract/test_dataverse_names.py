"""Every entity set, column and navigation property the Dataverse client names exists in Microsoft's reference."""
from __future__ import annotations

import json

from sync.adapters import dataverse
from tests.conftest import shared_reference


def reference() -> dict:
    return json.loads((shared_reference() / "dataverse/columns.json").read_text())["tables"]


def test_entity_sets_exist():
    tables = reference()
    for logical, entity_set in dataverse.ENTITY_SETS.items():
        assert tables[logical]["entity_set"] == entity_set


def test_selected_columns_exist_on_their_tables():
    tables = reference()
    for table, names in [("bookableresourcebooking", dataverse.BOOKING_SELECT), ("bookableresource", dataverse.RESOURCE_SELECT),
                         ("systemuser", dataverse.USER_SELECT), ("bookingstatus", dataverse.STATUS_SELECT),
                         ("msdyn_workorder", dataverse.WORK_ORDER_SELECT)]:
        missing = set(names) - set(tables[table]["web_api_properties"])
        assert not missing, (table, missing)


def test_navigation_properties_exist_and_point_where_the_client_expects():
    tables = reference()
    targets = {("bookableresourcebooking", "Resource"): "bookableresource", ("bookableresourcebooking", "BookingStatus"): "bookingstatus",
               ("bookableresourcebooking", "msdyn_workorder"): "msdyn_workorder", ("bookableresource", "UserId"): "systemuser"}
    for table, nav in dataverse.NAVIGATIONS:
        entry = tables[table]["navigation_properties"][nav]
        assert entry["kind"] == "single" and entry["target"] == targets[(table, nav)]


def test_expand_string_names_only_declared_navigations():
    import re
    named = set(re.findall(r"(\w+)\(\$select", dataverse.BOOKING_EXPAND))
    assert named == {nav for _, nav in dataverse.NAVIGATIONS}
