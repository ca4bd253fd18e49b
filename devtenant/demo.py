"""A realistic small Field Service organisation with every edge case of the behaviour contract.

Deterministic for a seed and a `now`: about 25 technicians and 300 bookings over five weeks around
`now`, plus the bookings and resources that must *not* reach Outlook (no work order, crew, equipment,
user without a mailbox address, canceled, inactive, outside the window, more than two weeks ahead) and
mailboxes that fail their test (not in Exchange, outside the app's access scope). `edge_cases` names
the ids of each case so tests and the demo can act on them (for example, reassign one).
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

FIRST = ["Avery", "Jordan", "Mina", "Tomás", "Chen", "Priya", "Lars", "Amara", "Noor", "Kenji", "Sofia", "Diego",
         "Ilse", "Omar", "Hana", "Marek", "Zanele", "Ravi", "Elif", "Finn", "Leila", "Mateo", "Yuki", "Aoife", "Kwame"]
LAST = ["Novak", "Okafor", "Lindqvist", "García", "Wei", "Sharma", "Müller", "Haddad", "Kowalski", "Tanaka", "Rossi",
        "Silva", "Jensen", "Nguyen", "Dubois", "Ivanova", "Mensah", "Byrne", "Yilmaz", "Costa"]
CITIES = [("Seattle", "WA", "98101", 47.6062, -122.3321), ("Redmond", "WA", "98052", 47.6740, -122.1215),
          ("Bellevue", "WA", "98004", 47.6101, -122.2015), ("Tacoma", "WA", "98402", 47.2529, -122.4443),
          ("Everett", "WA", "98201", 47.9790, -122.2021)]
STREETS = ["Pine St", "Main St", "Lakeview Ave", "Harbor Way", "Cedar Rd", "Industrial Pkwy", "Market St"]
INCIDENTS = ["Boiler not heating", "HVAC preventive maintenance", "Leaking valve", "Generator inspection",
             "Elevator fault", "Fire alarm test", "Chiller noise", "Water heater replacement"]
SUMMARIES = ["Customer reports intermittent fault since Monday.", "Annual contract visit; bring filters.",
             "Access via loading dock; call ahead.", "Replace worn parts and test.", ""]
HOSTILE = "<script>alert('x')</script> & \"quoted\" 'single' </td><img src=x onerror=alert(1)> %27 ) or 1 eq 1 —  مرحبا 🔧"


# The subcontractor of the demo: its technicians' mailboxes live in their own Microsoft Entra tenant.
PARTNER_TENANT = "4b1d5e2a-7c3f-4a8e-9b6d-2f0e1c3a5b7d"
PARTNER_DOMAIN = "fabrikam.example"
CROSS_TENANT_APP = "0f6c2d9e-1a4b-4c7d-8e3f-5a6b7c8d9e0f"     # the multi-tenant app registration that trusts the identity


def partner_settings(home_domain: str = "contoso.example") -> dict[str, str]:
    """The app settings that route the demo's two tenants (MAILBOX_TENANTS, CROSS_TENANT_APP_CLIENT_ID)."""
    return {"MAILBOX_TENANTS": f"{home_domain}=home,{PARTNER_DOMAIN}={PARTNER_TENANT}", "CROSS_TENANT_APP_CLIENT_ID": CROSS_TENANT_APP}


def gid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass
class DemoOrg:
    now: datetime
    tables: dict[str, list[dict]] = field(default_factory=dict)
    mailboxes: list[dict] = field(default_factory=list)
    personal_events: list[tuple[str, dict]] = field(default_factory=list)
    edge_cases: dict[str, list[str]] = field(default_factory=dict)

    def add(self, entity_set: str, row: dict) -> dict:
        self.tables.setdefault(entity_set, []).append(row)
        return row

    def case(self, name: str, row_id: str) -> None:
        self.edge_cases.setdefault(name, []).append(row_id)


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(now: datetime | None = None, seed: int = 7, technicians: int = 25, bookings: int = 300,
             domain: str = "contoso.example", partner: dict | None = None) -> DemoOrg:
    """`partner` {"tenant", "domain", "technicians"}: that many of the technicians are a subcontractor's, whose
    mailboxes live in another Microsoft Entra tenant under its own domain (edge case `partner_mailboxes`)."""
    rng = random.Random(seed)
    now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    org = DemoOrg(now)

    statuses = {}
    for name, status, fs in [("Scheduled", 2, 690970000), ("Traveling", 2, 690970001), ("In Progress", 2, 690970003),
                             ("Completed", 2, 690970004), ("Canceled", 3, 690970005), ("Proposed", 1, None)]:
        statuses[name] = org.add("bookingstatuses", {"bookingstatusid": gid(rng), "name": name, "status": status,
                                                     "msdyn_fieldservicestatus": fs})["bookingstatusid"]
    priorities = [org.add("msdyn_priorities", {"msdyn_priorityid": gid(rng), "msdyn_name": n, "msdyn_levelofimportance": i})["msdyn_priorityid"]
                  for i, n in enumerate(["Urgent", "High", "Normal", "Low"], start=1)]
    wo_types = [org.add("msdyn_workordertypes", {"msdyn_workordertypeid": gid(rng), "msdyn_name": n})["msdyn_workordertypeid"]
                for n in ["Maintenance", "Repair", "Inspection", "Installation"]]
    incidents = [org.add("msdyn_incidenttypes", {"msdyn_incidenttypeid": gid(rng), "msdyn_name": n})["msdyn_incidenttypeid"]
                 for n in INCIDENTS]
    territories = [org.add("territories", {"territoryid": gid(rng), "name": n})["territoryid"] for n in ["North", "South", "East"]]
    accounts = [org.add("accounts", {"accountid": gid(rng), "name": f"{rng.choice(LAST)} {s}"})["accountid"]
                for s in ["Properties", "Hospital", "Logistics", "Foods", "Schools", "Hotels", "Labs", "Retail"] * 2]
    contacts = [org.add("contacts", {"contactid": gid(rng), "fullname": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                                     "firstname": None, "lastname": None})["contactid"] for _ in range(24)]

    def user(first: str, last: str, address: str | None) -> str:
        return org.add("systemusers", {"systemuserid": gid(rng), "fullname": f"{first} {last}", "firstname": first,
                                       "lastname": last, "internalemailaddress": address, "isdisabled": False,
                                       "domainname": address or f"{first.lower()}@{domain}"})["systemuserid"]

    def resource(name: str, rtype: int, user_id: str | None = None) -> str:
        return org.add("bookableresources", {"bookableresourceid": gid(rng), "name": name, "resourcetype": rtype,
                                             "_userid_value": user_id})["bookableresourceid"]

    techs: list[str] = []
    used = set()
    for i in range(technicians):
        first, last = FIRST[i % len(FIRST)], LAST[(i * 7) % len(LAST)]
        local = f"{first.lower().replace('á', 'a')}.{last.lower().replace('í', 'i').replace('ü', 'u')}"
        while local in used:
            local += "2"
        used.add(local)
        of_partner = partner is not None and i >= technicians - int(partner.get("technicians", 0))
        address = f"{local}@{partner['domain'] if of_partner and partner else domain}"
        res = resource(f"{first} {last}", 3, user(first, last, address))
        techs.append(res)
        tz = rng.choice(["Pacific Standard Time", "Pacific Standard Time", "UTC", "Eastern Standard Time"])
        org.mailboxes.append({"address": address, "displayName": f"{first} {last}", "timeZone": tz, "resource": res,
                              **({"tenant": partner["tenant"]} if of_partner and partner else {})})
        if of_partner:
            org.case("partner_mailboxes", address)
    # Mailboxes whose test must fail: one unknown to Exchange, one outside the app's access scope.
    missing = resource("Rowan Ghost", 3, user("Rowan", "Ghost", f"rowan.ghost@{domain}"))
    org.case("mailbox_not_found", f"rowan.ghost@{domain}")
    outside = resource("Quinn Outside", 3, user("Quinn", "Outside", f"quinn.outside@{domain}"))
    org.mailboxes.append({"address": f"quinn.outside@{domain}", "displayName": "Quinn Outside", "timeZone": "UTC",
                          "resource": outside, "in_scope": False})
    org.case("mailbox_access_denied", f"quinn.outside@{domain}")
    no_mail = resource("Sam Nomail", 3, user("Sam", "Nomail", None))
    crew = resource("Crew North", 6)
    equipment = resource("Lift 12", 4)
    facility = resource("Depot West", 7)

    def work_order(n: int, summary: str | None = None) -> str:
        city, state, postal, lat, lon = rng.choice(CITIES)
        return org.add("msdyn_workorders", {
            "msdyn_workorderid": gid(rng), "msdyn_name": f"{n:05d}", "msdyn_systemstatus": 690970001,
            "_msdyn_priority_value": rng.choice(priorities), "_msdyn_workordertype_value": rng.choice(wo_types),
            "_msdyn_primaryincidenttype_value": rng.choice(incidents) if rng.random() > 0.1 else None,
            "msdyn_workordersummary": summary if summary is not None else rng.choice(SUMMARIES),
            "_msdyn_serviceaccount_value": rng.choice(accounts),
            "_msdyn_reportedbycontact_value": rng.choice(contacts) if rng.random() > 0.2 else None,
            "_msdyn_serviceterritory_value": rng.choice(territories),
            "msdyn_address1": f"{rng.randint(1, 9999)} {rng.choice(STREETS)}", "msdyn_city": city,
            "msdyn_stateorprovince": state, "msdyn_postalcode": postal, "msdyn_country": "US",
            "msdyn_latitude": round(lat + rng.uniform(-0.05, 0.05), 6), "msdyn_longitude": round(lon + rng.uniform(-0.05, 0.05), 6),
        })["msdyn_workorderid"]

    counter = [100]

    def booking(res: str, start: datetime, hours: float = 2, status: str = "Scheduled", wo: str | bool | None = True,
                state: int = 0) -> str:
        counter[0] += 1
        wo_id = work_order(counter[0]) if wo is True else (wo or None)
        end = start + timedelta(hours=hours)
        return org.add("bookableresourcebookings", {
            "bookableresourcebookingid": gid(rng), "name": f"Booking {counter[0]}", "starttime": iso(start), "endtime": iso(end),
            "duration": int(hours * 60), "_resource_value": res, "_bookingstatus_value": statuses[status],
            "_msdyn_workorder_value": wo_id, "statecode": state, "bookingtype": 1,
        })["bookableresourcebookingid"]

    def tech(i: int) -> str:
        return techs[i % len(techs)]

    day0 = now.replace(hour=0, minute=0)
    regular = max(0, bookings - 14)
    for i in range(regular):
        day = rng.randint(-14, 20)
        start = day0 + timedelta(days=day, hours=rng.choice([7, 8, 9, 10, 11, 13, 14, 15]), minutes=rng.choice([0, 30]))
        status = "Completed" if start < now - timedelta(hours=4) else rng.choice(["Scheduled"] * 6 + ["Traveling", "In Progress"])
        booking(techs[i % len(techs)], start, rng.choice([1, 1.5, 2, 3, 4]), status)

    soon = day0 + timedelta(days=2, hours=9)
    org.case("no_work_order", booking(tech(0), soon, wo=None))
    org.case("crew_resource", booking(crew, soon))
    org.case("equipment_resource", booking(equipment, soon))
    org.case("facility_resource", booking(facility, soon))
    org.case("user_without_mailbox", booking(no_mail, soon))
    org.case("mailbox_not_found_booking", booking(missing, soon))
    org.case("mailbox_access_denied_booking", booking(outside, soon))
    org.case("canceled", booking(tech(1), soon + timedelta(hours=3), status="Canceled"))
    org.case("inactive", booking(tech(2), soon + timedelta(hours=3), state=1))
    org.case("outside_window_past", booking(tech(3), now - timedelta(days=10)))
    org.case("two_weeks_ahead", booking(tech(4), now + timedelta(days=14, hours=6)))
    org.case("reassigned", booking(tech(5), soon + timedelta(hours=5)))
    org.case("hostile_text", booking(tech(6), soon + timedelta(days=1), wo=work_order(99999, HOSTILE * 30)))
    org.case("reassign_target", tech(7))
    org.case("proposed", booking(tech(8), soon + timedelta(days=1, hours=2), status="Proposed"))

    org.personal_events.append((org.mailboxes[0]["address"], {
        "subject": "Dentist", "start": {"dateTime": iso(soon + timedelta(hours=4))[:-1], "timeZone": "UTC"},
        "end": {"dateTime": iso(soon + timedelta(hours=5))[:-1], "timeZone": "UTC"}}))
    return org
