"""The search benchmark's load parts (`./dev bench search --only zipf|rps`), on a collection already
filled by `search.py`:

- zipf: a query log with the repeat pattern of real ones (Zipf over a few thousand distinct queries, with
  filters) through the API; the cache hit ratio as the server's own metric reports it
  (`inferline_search_cache_total`, read from /metrics before and after), next to the ratio an unbounded
  cache would reach on the same log (every first sight of a query is a miss).
- rps: cached searches from `wrk` (Debian's `wrk`, a C load generator, so the client takes little of the
  2 cores it shares with the server) for a fixed time: requests/s and p50/p99, per number of API processes.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import subprocess
import tempfile
import time
from typing import Any

import httpx
import numpy as np
import psutil

FILTERS: list[dict[str, Any] | None] = [
    None,
    {"lang": "ko"},
    {"lang": "en"},
    {"year": {"gte": 2010}},
    {"lang": "ko", "year": {"gte": 2015}},
]


def zipf_queries(texts: list[str], distinct: int, requests: int, exponent: float, seed: int = 18) -> list[str]:
    """`requests` search bodies (JSON) drawn from `distinct` ones, the r-th most popular with weight
    1/r^exponent. A distinct query is a text with one of FILTERS; popularity is shuffled so that a text's
    variants are not neighbours in rank."""
    rng = np.random.default_rng(seed)
    combos = [(text, flt) for text in texts for flt in FILTERS]
    chosen = rng.permutation(len(combos))[:distinct]
    bodies = [
        json.dumps({"query": combos[i][0], "limit": 10} | ({"filter": combos[i][1]} if combos[i][1] else {}))
        for i in chosen
    ]
    weights = 1.0 / np.arange(1, len(bodies) + 1) ** exponent
    drawn = rng.choice(len(bodies), size=requests, p=weights / weights.sum())
    return [bodies[i] for i in drawn]


def cache_counts(metrics_text: str) -> tuple[float, float]:
    """(hits, misses) of `inferline_search_cache_total` in a /metrics page."""
    found = dict(re.findall(r'^inferline_search_cache_total\{result="(hit|miss)"\} ([0-9.e+]+)$', metrics_text, re.M))
    return float(found.get("hit", 0.0)), float(found.get("miss", 0.0))


async def metrics_counts(port: int) -> tuple[float, float]:
    async with httpx.AsyncClient() as http:
        return cache_counts((await http.get(f"http://127.0.0.1:{port}/metrics")).text)


async def replay(http: httpx.AsyncClient, log: list[str], clients: int) -> list[bool]:
    """Sends the log in order from `clients` concurrent clients; whether each answer was cached."""
    cached = [False] * len(log)
    position = 0

    async def one_client() -> None:
        nonlocal position
        while position < len(log):
            i, position = position, position + 1
            response = await http.post(
                "/collections/scale/search", content=log[i], headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 200, response.text
            cached[i] = response.json()["cached"]

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return cached


async def bench_zipf(
    port: int, http: httpx.AsyncClient, texts: list[str], distinct: int, requests: int, exponent: float
) -> dict[str, Any]:
    log = zipf_queries(texts, distinct, requests, exponent)
    before = await metrics_counts(port)
    started = time.perf_counter()
    cached = await replay(http, log, clients=4)
    took_s = time.perf_counter() - started
    after = await metrics_counts(port)
    hits, misses = after[0] - before[0], after[1] - before[1]
    half = len(log) // 2
    return {
        "requests": len(log),
        "distinct_asked": len(set(log)),
        "metric_hit_ratio": hits / (hits + misses),
        "answers_cached_ratio": sum(cached) / len(cached),
        "second_half_ratio": sum(cached[half:]) / len(cached[half:]),
        "unbounded_cache_ratio": 1 - len(set(log)) / len(log),
        "took_s": took_s,
    }


WRK_SCRIPT = """
local bodies = {%s}
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %s"}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format("POST", "/api/v1/collections/scale/search", headers, bodies[i])
end
"""


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def server_process(port: int) -> psutil.Process:
    """The `inferline serve` that `serving.serve` started on `port` (a child of this process)."""
    for child in psutil.Process().children():
        if str(port) in child.cmdline():
            return child
    raise RuntimeError(f"no server on port {port} among this process's children")


def cpu_s(process: psutil.Process) -> float:
    """CPU seconds of the server and everything it started (API processes, model processes)."""
    total = 0.0
    for one in [process, *process.children(recursive=True)]:
        times = one.cpu_times()
        total += times.user + times.system
    return total


def run_wrk(port: int, key: str, bodies: list[str], connections: int, duration_s: int) -> dict[str, float]:
    """One `wrk` run (one thread) over `bodies` in turn: requests/s, p50/p99 ms, non-2xx answers, and the CPU
    each request cost the server and the client. On a shared machine requests/s says how much CPU this run
    got; CPU per request says what 2 idle cores would give (2 / (server + client CPU per request))."""
    if shutil.which("wrk") is None:
        raise SystemExit("the rps part needs wrk: apt-get install wrk")
    lua_bodies = ", ".join("[==[" + body + "]==]" for body in bodies)
    server = server_process(port)
    server_before, client_before = cpu_s(server), resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="search-") as script:
        script.write(WRK_SCRIPT % (lua_bodies, key))
        script.flush()
        command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", script.name]
        out = subprocess.run([*command, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    percentiles = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)$", out, re.M)}
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_ms = (cpu_s(server) - server_before) * 1000
    client_ms = (client_after.ru_utime + client_after.ru_stime - client_before.ru_utime - client_before.ru_stime) * 1000
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        "server_cpu_ms": server_ms / requests,
        "client_cpu_ms": client_ms / requests,
        "p50_ms": percentiles["50"],
        "p99_ms": percentiles["99"],
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


async def bench_rps(
    port: int, key: str, http: httpx.AsyncClient, texts: list[str], connections: int, duration_s: int, rounds: int
) -> list[dict[str, float]]:
    """Cached searches: 200 popular queries searched once (warm), then `wrk` for `rounds` rounds; each
    round's cache misses are counted from /metrics (there should be none)."""
    bodies = [
        json.dumps({"query": text, "limit": 10} | ({"filter": flt} if flt else {}))
        for text, flt in zip(texts[:200], FILTERS * 40, strict=False)
    ]
    for body in bodies:
        response = await http.post(
            "/collections/scale/search", content=body, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, response.text
    runs = []
    for _ in range(rounds):
        before = await metrics_counts(port)
        run = await asyncio.to_thread(run_wrk, port, key, bodies, connections, duration_s)
        run["misses"] = (await metrics_counts(port))[1] - before[1]
        runs.append(run)
    return runs
