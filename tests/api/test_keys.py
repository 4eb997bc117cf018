from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from tests.api.conftest import Api, MakeApi

from inferline.tenants import create_key, list_keys, revoke_key


@pytest.fixture
async def uncached_api(make_api: MakeApi) -> AsyncIterator[Api]:
    async with make_api(workers=0, api_key_cache_s=0) as started:
        yield started


async def test_a_revoked_key_is_refused_and_keys_are_stored_hashed(uncached_api: Api) -> None:
    engine = uncached_api.services.engine
    key, plain = await create_key(engine, "acme")
    transport = httpx.ASGITransport(app=uncached_api.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {plain}"}
    ) as acme:
        assert (await acme.get("/api/v1/jobs")).status_code == 200
        await revoke_key(engine, key.id)
        assert (await acme.get("/api/v1/jobs")).status_code == 401
    listed = {k.id: k for k in await list_keys(engine, "acme")}
    assert listed[key.id].revoked_at is not None
    async with engine.connect() as conn:
        stored = (await conn.exec_driver_sql("SELECT key_hash FROM api_keys")).scalars().all()
    assert plain not in stored and all(len(h) == 64 for h in stored)


async def test_admin_key_file_is_private(uncached_api: Api) -> None:
    path = uncached_api.services.settings.data_dir / "admin.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text().startswith("il_")


async def test_bad_tenant_names_are_refused(uncached_api: Api) -> None:
    from inferline.errors import InvalidInput

    with pytest.raises(InvalidInput):
        await create_key(uncached_api.services.engine, "../etc")


async def test_a_client_guessing_keys_is_slowed_down_and_known_keys_still_pass(make_api: MakeApi) -> None:
    """Past its allowance of unknown keys a client gets 429 with Retry-After, without a database read;
    a key the server already verified still works from the same address."""
    async with make_api(workers=0, unknown_key_burst=3, unknown_keys_per_s=0.2) as api:
        assert (await api.client.get("/api/v1/jobs")).status_code == 200  # verified and cached
        guesses = [f"il_{'x' * 43}{n}" for n in range(5)]
        statuses = []
        for guess in guesses:
            answer = await api.anonymous.get("/api/v1/jobs", headers={"Authorization": f"Bearer {guess}"})
            statuses.append(answer.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        assert 1 <= int(answer.headers["retry-after"]) <= 5
        uploads = await api.anonymous.post(
            "/api/v1/files", headers={"Authorization": f"Bearer {guesses[0]}"}, files={"file": ("a.txt", b"x")}
        )
        assert uploads.status_code == 429  # refused at admission too, before the body is read
        assert (await api.client.get("/api/v1/jobs")).status_code == 200
        # A malformed key never reaches the database and costs nothing.
        for _ in range(3):
            assert (
                await api.anonymous.get("/api/v1/jobs", headers={"Authorization": "Bearer nope"})
            ).status_code == 401


async def test_concurrent_guesses_from_one_client_cannot_outrun_their_allowance(make_api: MakeApi) -> None:
    """Guesses sent at once each spend from the allowance before their database read, so no more than
    the allowance reaches the database; IPv6 clients of one /64 share one allowance."""
    async with make_api(workers=0, unknown_key_burst=3, unknown_keys_per_s=0.01) as api:
        guesses = [f"il_{'y' * 43}{n}" for n in range(12)]
        answers = await asyncio.gather(
            *(api.anonymous.get("/api/v1/jobs", headers={"Authorization": f"Bearer {guess}"}) for guess in guesses)
        )
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [401] * 3 + [429] * 9
        budget = api.services.auth.failures
        for n in range(4):  # a new address per guess, all in one /64
            budget.take(f"2001:db8:1:2::{n + 1:x}")
        assert budget.take("2001:db8:1:2::ffff") > 0
        assert budget.take("2001:db8:1:3::1") == 0  # another network
        for _ in range(3):
            assert budget.take("::ffff:10.0.0.9") == 0
        assert budget.take("10.0.0.9") > 0  # the same client, spelled as IPv4
