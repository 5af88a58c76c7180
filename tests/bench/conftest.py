"""Fixtures for the bench tests (fakes live in bench_fakes.py)."""

from __future__ import annotations

import pytest
from bench_fakes import CountingProtocol, FakeContext


@pytest.fixture
def fake_ctx():
    def make(protocols: dict | None = None, datasets: dict | None = None) -> FakeContext:
        return FakeContext(protocols if protocols is not None else {"count": CountingProtocol()}, datasets)

    return make
