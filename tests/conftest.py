"""Session-wide local stack: Azurite and the tenant emulator start once, each test gets a clean tenant."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

# Bounded in the default test command; `HYPOTHESIS_PROFILE=long make test` explores much further.
settings.register_profile("default", max_examples=150, stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, stateful_step_count=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from devtenant.stack import LocalStack

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def stack():
    with LocalStack() as running:
        yield running


@pytest.fixture(scope="session")
def tablestore_stack():
    """The light Table Storage double (devtenant/tablestore.py) the benchmarks can measure against; the contract
    suites hold it to what they hold Azurite to."""
    with LocalStack(tables="tablestore") as running:
        yield running


@pytest.fixture(params=["azurite", "tablestore"])
def table_connection_string(request) -> str:
    """Table Storage as the product reaches it: Azurite, and the benchmarks' double."""
    return request.getfixturevalue("stack" if request.param == "azurite" else "tablestore_stack").table_connection_string


@pytest.fixture
def tenant(stack):
    """A reset emulator; returns the stack so tests can use its control API and URLs."""
    stack.control("POST", "/reset")
    return stack


@pytest.fixture
def table_prefix() -> str:
    # Table names: letters and digits, 3-63 chars, starting with a letter.
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def dataverse(tenant):
    with httpx.Client(base_url=tenant.emulator_url + "/api/data/v9.2/", headers={"Authorization": "Bearer test"}, timeout=30) as client:
        yield client


@pytest.fixture
def graph(tenant):
    with httpx.Client(base_url=tenant.emulator_url + "/v1.0/", headers={"Authorization": "Bearer test"}, timeout=30) as client:
        yield client


def shared_reference() -> Path:
    """Microsoft's reference, beside the checkout in CI and for developers (see DEVELOPERS.md)."""
    if not SHARED_REFERENCE.exists():
        if os.environ.get("CI"):
            raise AssertionError(f"{SHARED_REFERENCE} is missing: CI runs with shared/ beside the clone")
        pytest.skip("shared/reference is not beside this checkout")
    return SHARED_REFERENCE
