"""``smdp.certs``: the subjectAltNames of a host certificate."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from smdp.certs import CertError, make_ca, make_cert


def test_a_certificate_names_hosts_as_dns_and_addresses_as_ip() -> None:
    issued = make_cert("smdp.a.example", issuer=make_ca("test CA"),
                       extra_names=("localhost",), addresses=("127.0.0.1", "::1"))
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["smdp.a.example", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]


def test_an_address_that_is_not_one_is_refused() -> None:
    with pytest.raises(CertError, match="does not appear to be an IPv4 or IPv6 address"):
        make_cert("smdp.a.example", addresses=("localhost",))
