"""Azure Monitor's distro turns on every library instrumentation it knows unless told not to; each of them records
request URLs (table keys, Graph paths with mailbox addresses). configure_telemetry turns every one of them off."""
from __future__ import annotations

import subprocess
import sys

from azure.monitor.opentelemetry._constants import _ALL_SUPPORTED_INSTRUMENTED_LIBRARIES

from sync.app.telemetry import DISABLED_INSTRUMENTATIONS
from tests.conftest import REPO


def test_every_instrumentation_the_pinned_distro_knows_is_turned_off():
    assert set(_ALL_SUPPORTED_INSTRUMENTED_LIBRARIES) <= set(DISABLED_INSTRUMENTATIONS)


def test_with_application_insights_configured_no_http_client_is_instrumented():
    code = ("import os; os.environ['APPLICATIONINSIGHTS_CONNECTION_STRING'] = "
            "'InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/'; "
            "from sync.app.telemetry import configure_telemetry; assert configure_telemetry(); "
            "from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor; "
            "from opentelemetry.instrumentation.requests import RequestsInstrumentor; "
            "print(HTTPXClientInstrumentor().is_instrumented_by_opentelemetry, RequestsInstrumentor().is_instrumented_by_opentelemetry)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["False", "False"]
