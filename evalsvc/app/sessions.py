"""Logins: one session per login for every page of the app, ended by logging out or by its expiry, and a limit
on wrong passwords per name and per client address.

A session is a random cookie value (`secrets.token_urlsafe(32)`) kept in this process only: restarting the
app logs everyone out. Its `id` (another random value, not the cookie) is what the store records, e.g. the
session a vote pair was issued to, so nothing in the store can be replayed as a login.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from .access import Account

WORKING_DAY_HOURS = 8.0


@dataclass(frozen=True)
class SessionConfig:
    hours: float = WORKING_DAY_HOURS  # a session ends this long after its login (`serve --session-hours`)
    failures_per_name: int = 5  # wrong passwords for one name ...
    failures_per_address: int = 20  # ... or from one client address ...
    window_seconds: float = 300.0  # ... within this window block further logins until the oldest ages out


@dataclass(frozen=True)
class Session:
    id: str
    user: str
    account: Account
    expires_at: float  # time.time()


class Sessions:
    """The open sessions by cookie value; thread-safe."""

    def __init__(self, config: SessionConfig = SessionConfig(), clock=time.time):
        self.config, self.clock = config, clock
        self._open: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, user: str, account: Account) -> tuple[str, Session]:
        """A new session for `user`: (cookie value, session)."""
        cookie = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(12), user, account, self.clock() + self.config.hours * 3600)
        with self._lock:
            self._open[cookie] = session
        return cookie, session

    def find(self, cookie: str | None) -> Session | None:
        """The open, unexpired session of `cookie`; an expired one is closed on the way."""
        if not cookie:
            return None
        with self._lock:
            session = self._open.get(cookie)
            if session is not None and session.expires_at <= self.clock():
                del self._open[cookie]
                return None
            return session

    def close(self, cookie: str | None) -> None:
        with self._lock:
            self._open.pop(cookie or "", None)


class LoginLimiter:
    """Counts wrong passwords per name and per address in a sliding window; thread-safe."""

    def __init__(self, config: SessionConfig = SessionConfig(), clock=time.monotonic):
        self.config, self.clock = config, clock
        self._failures: dict[tuple[str, str], deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def wait_seconds(self, name: str, address: str) -> float:
        """0 when a login for `name` from `address` may be tried now, else the seconds until it may."""
        c = self.config
        with self._lock:
            waits = [self._wait(("name", name), c.failures_per_name),
                     self._wait(("address", address), c.failures_per_address)]
        return max(waits)

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (("name", name), ("address", address)):
                self._failures[key].append(now)

    def _wait(self, key: tuple[str, str], limit: int) -> float:
        times = self._failures.get(key)
        if not times:
            return 0.0
        now = self.clock()
        while times and times[0] <= now - self.config.window_seconds:
            times.popleft()
        if len(times) < limit:
            return 0.0
        return times[0] + self.config.window_seconds - now
