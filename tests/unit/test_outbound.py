"""Which URLs the server calls for tenants (webhooks), and how a request is pinned to the checked
address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from inferline.errors import InvalidInput
from inferline.outbound import OutboundPolicy

INTERNAL_URLS = [
    "http://127.0.0.1:6379/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space (carrier NAT)
    "http://0.0.0.0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:a9fe:a9fe]/",  # IPv4-mapped 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://0x7f.1/",
    "http://127.1/",
    "http://0177.0.0.1/",  # octal
    "http://localhost:6379/",
]


@pytest.fixture
async def strict() -> AsyncIterator[OutboundPolicy]:
    policy = OutboundPolicy()
    yield policy
    policy.close()


@pytest.mark.parametrize("url", INTERNAL_URLS)
async def test_internal_addresses_are_refused_in_every_spelling(strict: OutboundPolicy, url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await strict.resolve(url, field="webhook")
    assert refused.value.field == "webhook"


OTHER_FORMS = [
    "ftp://example.com/",
    "file:///etc/passwd",
    "http://user:pw@example.com/",
    "http://:80/",
    "http://x:99999/",
    "https://example.com/" + "a" * 2100,
]


@pytest.mark.parametrize("url", OTHER_FORMS)
async def test_urls_of_another_form_are_refused(strict: OutboundPolicy, url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await strict.resolve(url, field="webhook")
    assert refused.value.field == "webhook"


async def test_a_name_is_refused_when_any_of_its_addresses_is_internal() -> None:
    async def answers(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(InvalidInput):
        await OutboundPolicy(resolver=answers).resolve("https://hooks.example/", field="webhook")


async def test_a_public_name_is_pinned_to_its_checked_address_with_its_name_for_http_and_tls() -> None:
    async def answers(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example", 8443)
        return ["93.184.216.34"]

    target = await OutboundPolicy(resolver=answers).resolve("https://hooks.example:8443/in?x=1", field="webhook")
    async with httpx.AsyncClient() as client:
        request = target.request(client, "POST", content=b"{}", headers={"webhook-id": "m"})
    assert str(request.url) == "https://93.184.216.34:8443/in?x=1"
    assert request.headers["host"] == "hooks.example:8443" and request.headers["webhook-id"] == "m"
    assert request.extensions["sni_hostname"] == "hooks.example"


async def test_a_public_ipv6_literal_is_called_as_written(strict: OutboundPolicy) -> None:
    target = await strict.resolve("http://[2606:4700::1111]:8080/", field="webhook")
    assert target.url.host == "2606:4700::1111" and target.host_header == "[2606:4700::1111]:8080"
    assert target.sni_hostname is None


async def test_allowed_networks_open_only_themselves() -> None:
    policy = OutboundPolicy(allow_networks=[ipaddress.ip_network("127.0.0.0/8")])
    for url in ["http://127.0.0.1:9/", "http://127.1/", "http://[::ffff:127.0.0.2]/"]:
        await policy.resolve(url, field="webhook")
    for url in ["http://10.0.0.1/", "http://[::1]/", "http://169.254.169.254/"]:
        with pytest.raises(InvalidInput):
            await policy.resolve(url, field="webhook")


async def test_a_resolver_that_never_answers_is_cut_at_the_deadline() -> None:
    async def never(host: str, port: int) -> list[str]:
        await asyncio.sleep(60)
        return []

    started = time.monotonic()
    with pytest.raises(InvalidInput, match="did not resolve within"):
        await OutboundPolicy(resolver=never, resolve_timeout_s=0.2).resolve("http://slow.example/", field="webhook")
    assert time.monotonic() - started < 2


async def test_a_name_that_does_not_resolve_is_refused(strict: OutboundPolicy) -> None:
    with pytest.raises(InvalidInput, match="resolve"):
        await strict.resolve("http://no-such-host.invalid/", field="webhook")


async def test_a_tenant_whose_dns_never_answers_leaves_threads_for_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    # libc's getaddrinfo cannot be cancelled: a hung lookup keeps its thread after our deadline.
    hung = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host.endswith(".hang.example"):
            hung.wait(10)
            raise socket.gaierror("gave up")
        if host == "hooks.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    policy = OutboundPolicy(resolve_timeout_s=0.3, resolver_threads=8, tenant_lookups=2)
    try:
        stuck = [policy.resolve(f"https://n{i}.hang.example/", field="webhook", tenant="a") for i in range(12)]
        refusals = await asyncio.gather(*stuck, return_exceptions=True)
        assert all(isinstance(refusal, InvalidInput) for refusal in refusals)
        target = await policy.resolve("https://hooks.example/", field="webhook", tenant="b")
        assert str(target.url.host) == "93.184.216.34"
        with pytest.raises(InvalidInput, match="did not resolve"):  # a's share is still taken
            await policy.resolve("https://hooks.example/", field="webhook", tenant="a")
    finally:
        hung.set()
        policy.close()
