"""Outbound HTTP to URLs that tenants name (webhooks): which URLs are accepted, which addresses may be
called, and a request pinned to the address that was checked.

A URL is checked when it is accepted (a 422 naming the field) and again before every send. The send
connects to the address that check resolved, with the URL's own name in the Host header and in TLS
(SNI and certificate check), so a DNS answer that changes between check and connect cannot move the
connection to an internal address. Callable: public unicast addresses, plus `allow_networks`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from inferline.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port) -> addresses` as text; the default is the system's getaddrinfo."""

MAX_URL_CHARS = 2048
SCHEMES = frozenset({"http", "https"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# What inet_aton (and so getaddrinfo and every HTTP client) reads as IPv4: 2130706433, 0x7f.1, 127.1
_LEGACY_IPV4 = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*|([0-9a-fA-FxX]+\.){1,3}[0-9a-fA-FxX]+")


def parse_url(url: str, *, field: str) -> httpx.URL:
    """The URL if its form is acceptable: http(s), a host, no credentials, at most MAX_URL_CHARS."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"{field} is longer than {MAX_URL_CHARS} characters", field=field)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"{field} is not a valid URL: {exc}", field=field) from exc
    if parsed.scheme not in SCHEMES:
        raise InvalidInput(f"{field} must be an http or https URL", field=field)
    if parsed.userinfo:
        raise InvalidInput(f"{field} must not carry credentials (user:password@)", field=field)
    if not parsed.raw_host:
        raise InvalidInput(f"{field} has no host", field=field)
    return parsed


def ip_literal(host: str) -> IPAddress | None:
    """The address a host names without DNS, in any spelling a resolver accepts; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def is_public(address: IPAddress) -> bool:
    """Globally routable unicast, and so is every IPv4 address it carries (6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address.is_site_local or not all(is_public(inner) for inner in _carried_ipv4(address)):
            return False
    internal = (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )
    return address.is_global and not internal


def _carried_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses that relays and translators deliver an IPv6 address's packets to."""
    carried = []
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    if address in _NAT64:
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return carried


@dataclass(frozen=True)
class PinnedTarget:
    """Where one request goes: the checked address, with the URL's own name for HTTP and TLS."""

    url: httpx.URL  # the URL with its host replaced by the checked address
    host_header: str  # the URL's host[:port], as a client sends it for the name
    sni_hostname: str | None  # https to a name: TLS sends and verifies the name, not the address

    @classmethod
    def of(cls, url: httpx.URL, address: IPAddress) -> PinnedTarget:
        host = url.raw_host.decode("ascii")
        named = url.scheme == "https" and ip_literal(host) is None
        return cls(url.copy_with(host=str(address)), url.netloc.decode("ascii"), host if named else None)

    def request(
        self, client: httpx.AsyncClient, method: str, *, content: bytes, headers: Mapping[str, str]
    ) -> httpx.Request:
        extensions = {"sni_hostname": self.sni_hostname} if self.sni_hostname else {}
        headers = {**headers, "host": self.host_header}
        return client.build_request(method, self.url, content=content, headers=headers, extensions=extensions)


class OutboundPolicy:
    """Checks URLs tenants give and resolves them to an address that may be called."""

    def __init__(
        self,
        *,
        allow_networks: Sequence[IPNetwork] = (),
        resolve_timeout_s: float = 3.0,
        resolver: Resolver | None = None,
        resolver_threads: int = 16,
        tenant_lookups: int = 4,
    ) -> None:
        self.allow_networks = tuple(allow_networks)
        self.resolve_timeout_s = resolve_timeout_s
        self.resolver: Resolver = resolver or self._getaddrinfo
        self._resolver_threads = resolver_threads
        self._executor: ThreadPoolExecutor | None = None
        # A lookup whose DNS never answers holds its thread until libc gives up, long past our deadline:
        # each tenant may hold at most `tenant_lookups` of the threads, so the others always find some.
        self._tenant_lookups = tenant_lookups
        self._lookup_slots: dict[str, asyncio.Semaphore] = {}

    def allows(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket reaches the IPv4 host itself
        return any(address in network for network in self.allow_networks) or is_public(address)

    async def resolve(self, url: str, *, field: str, tenant: str = "") -> PinnedTarget:
        """The target to connect to for `url`; InvalidInput (naming `field`) when it may not be called.
        Every address the host resolves to must be allowed; the first one is used. `tenant`: whose
        lookup this is, for its share of the resolver threads."""
        parsed = parse_url(url, field=field)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = await self._addresses(host, port, field, tenant)
        if not all(self.allows(address) for address in addresses):
            raise InvalidInput(
                f"{field} host {host!r} is not a public address (loopback, private, link-local, multicast, "
                "reserved or unspecified addresses are refused)",
                field=field,
            )
        return PinnedTarget.of(parsed, addresses[0])

    async def _addresses(self, host: str, port: int, field: str, tenant: str) -> list[IPAddress]:
        if (literal := ip_literal(host)) is not None:
            return [literal]
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                answers = await self._lookup(host, port, tenant)
            # without a zone (fe80::1%eth0): a URL cannot carry one, and link-local is refused anyway
            addresses = [ipaddress.ip_address(answer.partition("%")[0]) for answer in answers]
        except TimeoutError as exc:
            raise InvalidInput(
                f"{field} host {host!r} did not resolve within {self.resolve_timeout_s} s", field=field
            ) from exc
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{field} host {host!r} does not resolve", field=field) from exc
        if not addresses:
            raise InvalidInput(f"{field} host {host!r} does not resolve", field=field)
        return addresses

    async def _lookup(self, host: str, port: int, tenant: str) -> list[str]:
        """`resolver(host, port)` in one of the tenant's lookup slots, held until the lookup itself ends
        (not when our deadline gives up on it), so a tenant's hung lookups never take every thread."""
        slots = self._lookup_slots.setdefault(tenant, asyncio.Semaphore(self._tenant_lookups))
        await slots.acquire()
        lookup = asyncio.ensure_future(self.resolver(host, port))
        lookup.add_done_callback(lambda _: slots.release())
        return await asyncio.shield(lookup)

    async def _getaddrinfo(self, host: str, port: int) -> list[str]:
        # Threads of this policy, not the loop's default executor: a name whose DNS servers never
        # answer holds its thread until libc gives up, long after our deadline, and the default
        # executor also runs every `to_thread` of the process.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._resolver_threads, thread_name_prefix="inferline-resolve")
        lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = await asyncio.get_running_loop().run_in_executor(self._executor, lookup)
        return [str(info[4][0]) for info in infos]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
