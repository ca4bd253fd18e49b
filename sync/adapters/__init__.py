"""Adapters: the ports on Dataverse, Microsoft Graph and Table Storage, credentials, and in-memory fakes."""
