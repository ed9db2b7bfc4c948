"""Fixtures for the GDC client tests: a real HTTP server on 127.0.0.1 shaped like the GDC API.

The server (``mmsurv.gdc.testserver``) runs in a thread on an ephemeral port; each test adds the
files it needs, with faults (cut connections, 503 bursts, stalls...), and inspects the requests
the client made. Timeouts and backoff are tiny so the whole suite stays fast.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from mmsurv.gdc.client import GdcClient, GdcConfig
from mmsurv.gdc.testserver import GdcTestServer

TOKEN = "tok-SECRET-5f1c2a9e-never-print-me"


def _payload(size: int, seed: int = 0) -> bytes:
    """Deterministic random bytes (incompressible, like slide data)."""
    return random.Random(seed).randbytes(size)


@pytest.fixture
def payload():
    """``payload(size, seed=0)`` -> deterministic random bytes."""
    return _payload


@pytest.fixture
def token() -> str:
    """A recognisable secret: it must never appear in logs, output or exceptions."""
    return TOKEN


@pytest.fixture
def gdc_server() -> Iterator[GdcTestServer]:
    with GdcTestServer() as server:
        yield server


def _fast_config(server: GdcTestServer, **overrides) -> GdcConfig:
    """Client settings for tests: short read timeout, tiny backoff, a few retries."""
    settings = dict(api=server.url, connect_timeout=2.0, read_timeout=0.5, retries=3,
                    backoff_factor=0.01, backoff_max=0.05, chunk_size=64 * 1024)
    settings.update(overrides)
    return GdcConfig(**settings)


@pytest.fixture
def make_config(gdc_server: GdcTestServer):
    """``make_config(**overrides)`` -> fast ``GdcConfig`` pointing at the test server."""
    return lambda **overrides: _fast_config(gdc_server, **overrides)


@pytest.fixture
def client(gdc_server: GdcTestServer) -> Iterator[GdcClient]:
    with GdcClient(_fast_config(gdc_server)) as gdc_client:
        yield gdc_client
