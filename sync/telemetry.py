"""Telemetry: Azure Monitor OpenTelemetry when Application Insights is configured; plain logging otherwise.

Logs and metrics carry ids and counts only: no addresses, names, subjects or summaries.
"""
from __future__ import annotations

import logging
import os


def configure_telemetry() -> bool:
    if not os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        return False
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError:
        logging.getLogger("sync").warning("APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry is not installed")
        return False
    configure_azure_monitor(logger_name="sync")
    return True
