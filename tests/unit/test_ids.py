"""E3: identifiers from outside are checked whole, in one place, and normalised once."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.core.ids import checked_address, checked_guid, environment_named, is_address, is_guid

GUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize("value", [GUID + "\n", GUID + "\r\n", "\n" + GUID, GUID + " ", GUID[:-1], GUID.replace("-", ""), "", None, 7])
def test_r_e3_a_guid_is_the_whole_value(value):
    assert not is_guid(value)
    with pytest.raises(ValueError):
        checked_guid(value)


def test_r_e3_a_guid_is_normalised_to_lower_case():
    assert checked_guid(GUID.upper()) == GUID


@pytest.mark.parametrize("address", ["ana@contoso.example", "siobhan.o'brien@contoso.com", "first+tag@contoso.com",
                                     "d.o.e@sub.contoso.co.uk", "a_b-c@x.io", "josé@contoso.com", "o'neil@fabrikam.example"])
def test_r_e3_addresses_rfc_5322_allows_are_accepted(address):
    """RFC 5322 3.2.3: atext includes the apostrophe, so O'Brien's address is valid (and discover must register her)."""
    assert is_address(address) and checked_address(address.upper()) == address.lower()


@pytest.mark.parametrize("address", ["ana@contoso.example\n", "ana@contoso.example\r", " ana@contoso.example", "an a@contoso.example",
                                     "\u202eana@contoso.example", "ana\u200b@contoso.example", "ana\u00a0@contoso.example",
                                     "ana\x00@contoso.example", "a..b@contoso.com", ".a@contoso.com", "a.@contoso.com",
                                     "a@contoso..com", "a@-contoso.com", "a@contoso.c0m", "a@@contoso.com", "contoso.com",
                                     "a" * 65 + "@contoso.com", "a@" + "b" * 250 + ".com", "<a>@contoso.com", "a\"b@contoso.com"])
def test_r_e3_addresses_with_control_bidi_or_malformed_parts_are_refused(address):
    assert not is_address(address)


@given(st.text(max_size=80))
def test_r_e3_no_accepted_address_holds_an_invisible_or_control_character(text):
    import unicodedata
    if is_address(text):
        assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp") for ch in text)
        assert text == text.strip() and text.count("@") == 1


def test_r_e3_an_environment_is_named_by_any_spelling_of_the_configured_url_and_keyed_by_the_configured_one():
    configured = ("https://Contoso.crm.dynamics.com", "https://fabrikam.crm4.dynamics.com")
    for spelling in ("https://contoso.crm.dynamics.com", "HTTPS://CONTOSO.CRM.DYNAMICS.COM/", " https://contoso.crm.dynamics.com "):
        assert environment_named(configured, spelling) == "https://Contoso.crm.dynamics.com"
    for other in ("https://contoso.crm.dynamics.com.evil.example", "https://other.crm.dynamics.com", "", None, ["x"]):
        assert environment_named(configured, other) is None


def test_r_t3_the_sending_environment_is_found_by_its_domain_in_either_web_api_spelling():
    from sync.core.ids import environment_of_domain
    configured = ("https://contoso.api.crm.dynamics.com", "https://fabrikam.crm4.dynamics.com/", "http://127.0.0.1:8080/orgs/second")
    assert environment_of_domain(configured, "contoso.crm.dynamics.com") == configured[0]
    assert environment_of_domain(configured, "FABRIKAM.crm4.dynamics.com") == configured[1]
    assert environment_of_domain(configured, "127.0.0.1:8080/orgs/second") == configured[2]
    for other in ("contoso.crm4.dynamics.com", "127.0.0.1:8080/orgs/default", "contoso.crm.dynamics.com\u202e", "", None, 5):
        assert environment_of_domain(configured, other) is None
