"""devtenant: a local stand-in for a Dynamics 365 Field Service environment (Dataverse Web API) and
Microsoft Graph (Exchange Online calendars), with a control API for tests, the demo and benchmarks.

A separate program: the product (`sync/`) never imports it. Start it with `python -m devtenant`.
"""
