"""Waiting in tests for something a server does in the background (a restart, a metric, a download)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.05) -> T:
    """Call ``predicate`` until it returns something true, and return that; fail the test after ``timeout`` s.

    The timeout is a generous bound for a noisy machine, never a measurement: nothing asserts how long it took.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout:g}s")
