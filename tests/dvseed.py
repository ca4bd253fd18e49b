"""Seed the emulator's Dataverse with bookings shaped like a Field Service org, through the control API."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class DvSeed:
    def __init__(self, stack, org: str = "default"):
        self.stack, self.org = stack, org
        self.status = self.add("bookingstatuses", {"name": "Scheduled", "status": 2, "msdyn_fieldservicestatus": 690970000})["bookingstatusid"]
        self.canceled = self.add("bookingstatuses", {"name": "Canceled", "status": 3, "msdyn_fieldservicestatus": 690970005})["bookingstatusid"]
        self.priority = self.add("msdyn_priorities", {"msdyn_name": "High"})["msdyn_priorityid"]
        self.wo_type = self.add("msdyn_workordertypes", {"msdyn_name": "Repair"})["msdyn_workordertypeid"]

    def add(self, entity_set: str, row: dict) -> dict:
        return self.stack.control("POST", f"/orgs/{self.org}/tables/{entity_set}", [row])["value"][0]

    def update(self, entity_set: str, row_id: str, changes: dict) -> dict:
        return self.stack.control("PATCH", f"/orgs/{self.org}/tables/{entity_set}/{row_id}", changes)

    def delete(self, entity_set: str, row_id: str) -> None:
        self.stack.control("DELETE", f"/orgs/{self.org}/tables/{entity_set}/{row_id}")

    def technician(self, address: str | None, name: str = "Tech", resourcetype: int = 3, mailbox: bool = True, **mailbox_extra) -> str:
        user = self.add("systemusers", {"fullname": name, "internalemailaddress": address})["systemuserid"] if resourcetype == 3 else None
        if address and mailbox:
            self.stack.control("POST", "/mailboxes", [{"address": address, "displayName": name, **mailbox_extra}])
        return self.add("bookableresources", {"name": name, "resourcetype": resourcetype, "_userid_value": user})["bookableresourceid"]

    def work_order(self, number: str = "00042", **extra) -> str:
        row = {"msdyn_name": number, "_msdyn_priority_value": self.priority, "_msdyn_workordertype_value": self.wo_type,
               "msdyn_workordersummary": "Bring filters", "msdyn_address1": "1 Pine St", "msdyn_city": "Seattle",
               "msdyn_postalcode": "98101", "msdyn_country": "US", "msdyn_latitude": 47.6, "msdyn_longitude": -122.3, **extra}
        return self.add("msdyn_workorders", row)["msdyn_workorderid"]

    def booking(self, resource: str, start: datetime, hours: float = 2, work_order: str | bool | None = True, **extra) -> str:
        wo = self.work_order() if work_order is True else work_order
        row = {"name": "Booking", "starttime": iso(start), "endtime": iso(start + timedelta(hours=hours)), "_resource_value": resource,
               "_bookingstatus_value": self.status, "_msdyn_workorder_value": wo, "statecode": 0, **extra}
        return self.add("bookableresourcebookings", row)["bookableresourcebookingid"]

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())
