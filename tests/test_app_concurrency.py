"""Many voters at once through the app's HTTP API (Gradio's `/gradio_api/call/<name>`, logged in with the
vote page's login form): every accepted vote is stored once, replays are refused, the sides are a fair coin."""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import serve_app, side_balance

VOTERS, VOTES_EACH, REPLAYS = 50, 20, 100
USERS = {f"voter{i:02d}": f"pw-voter{i:02d}" for i in range(VOTERS)}
ANSWERS = ("A", "B", "tie", "both_bad")


class CountingStore:
    """The store as the app sees it, counting how many cursors (one per handler call) are open at once."""

    def __init__(self, store):
        self.real, self.lock = store, threading.Lock()
        self.open = self.most_open = 0
        self.db = _Connection(store.db, self)

    def __getattr__(self, name):
        return getattr(self.real, name)


class _Connection:
    def __init__(self, db, owner):
        self._db, self._owner = db, owner

    def __getattr__(self, name):
        return getattr(self._db, name)

    def cursor(self):
        with self._owner.lock:
            self._owner.open += 1
            self._owner.most_open = max(self._owner.most_open, self._owner.open)
        return _Cursor(self._db.cursor(), self._owner)


class _Cursor:
    def __init__(self, cursor, owner):
        self._cursor, self._owner = cursor, owner

    def __getattr__(self, name):
        return getattr(self._cursor, name)

    def close(self):
        self._cursor.close()
        with self._owner.lock:
            self._owner.open -= 1


@pytest.fixture(scope="module")
def vote_app(short_demo, tmp_path_factory):
    """The app on a fresh copy of the short demo store with 50 voters: (url, store, counting store)."""
    import shutil

    from evalsvc.store import open_store

    root = tmp_path_factory.mktemp("concurrency") / "store"
    shutil.copytree(short_demo[0], root, ignore=shutil.ignore_patterns("lock"))
    with open_store(root) as store:
        counting = CountingStore(store)
        with serve_app(counting, USERS) as url:
            yield url, store, counting


def _login(url: str, voter: str) -> httpx.Client:
    client = httpx.Client(base_url=url + "vote/", timeout=120)
    assert client.post("login", data={"username": voter, "password": USERS[voter]}).status_code == 200
    return client


def _call(client: httpx.Client, api: str, *data) -> tuple[bool, object]:
    """One call of a named endpoint: (True, outputs) on success, (False, error message) when refused."""
    posted = client.post(f"gradio_api/call/{api}", json={"data": list(data)})
    posted.raise_for_status()
    event = None
    with client.stream("GET", f"gradio_api/call/{api}/{posted.json()['event_id']}") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("complete", "error"):
                payload = json.loads(line[len("data: "):])
                return event == "complete", payload
    raise AssertionError(f"{api}: the result stream ended without a result")


def _rows(store, sql: str, params=()) -> list[tuple]:
    db = store.db.cursor()
    try:
        return db.execute(sql, list(params)).fetchall()
    finally:
        db.close()


def _summary(replies) -> Counter:
    return Counter((ok, str(result)[:120]) for ok, result in replies)


def _voter_session(url: str, voter: str, votes: int) -> list[tuple[str, str, str]]:
    """Log in and cast `votes` votes, each on a freshly issued pair: [(token, voter, answer)]."""
    client = _login(url, voter)
    cast = []
    try:
        for i in range(votes):
            ok, pair = _call(client, "next_pair")
            assert ok, f"{voter}: next_pair failed: {pair}"
            token = pair[0]
            answer = ANSWERS[(int(voter[-2:]) + i) % len(ANSWERS)]
            ok, reveal = _call(client, "vote", token, answer)
            assert ok and f"Your last vote: <b>{answer}</b>. A was <b>" in reveal[0], f"{voter}: vote failed: {reveal}"
            cast.append((token, voter, answer))
    finally:
        client.close()
    return cast


def _replay(url: str, cookies: dict, token: str, answer: str, times: int) -> list[tuple[bool, object]]:
    """Send the same vote `times` times at once, each on its own connection with one login's cookies.

    Connections are opened after the barrier: a kept-alive login connection may meanwhile have been closed by
    the server (uvicorn closes idle ones after 5 s), and a POST on it would fail with a reset."""
    barrier = threading.Barrier(times)

    def send(_):
        barrier.wait()
        with httpx.Client(base_url=url + "vote/", cookies=cookies, timeout=120) as client:
            return _call(client, "vote", token, answer)

    with ThreadPoolExecutor(times) as pool:
        return list(pool.map(send, range(times)))


@pytest.fixture(scope="module")
def fifty_voters(vote_app) -> list[tuple[str, str, str]]:
    """50 voters at once, each casting 20 votes through the app (next_pair, vote): the accepted votes, sorted."""
    url, _, _ = vote_app
    with ThreadPoolExecutor(VOTERS) as pool:
        sessions = list(pool.map(lambda voter: _voter_session(url, voter, VOTES_EACH), USERS))  # raises any failure
    return sorted(vote for session in sessions for vote in session)


def test_fifty_voters_at_once_store_exactly_the_accepted_votes_and_replays_once(vote_app, fifty_voters):
    url, store, counting = vote_app
    accepted = fifty_voters
    assert len(accepted) == VOTERS * VOTES_EACH == len({token for token, _, _ in accepted})
    stored = sorted(_rows(store, "SELECT token, voter, answer FROM votes"))
    assert stored == accepted  # exactly the accepted votes: none lost, none extra, none twice
    assert counting.most_open > 1  # the handlers really ran side by side

    token, voter, answer = accepted[0]
    client = _login(url, voter)  # a second login of the voter replays an answered pair
    cookies = dict(client.cookies)
    replies = _replay(url, cookies, token, "B" if answer == "A" else "A", REPLAYS)
    assert all(not ok and "already been answered" in str(error) for ok, error in replies), _summary(replies)
    assert _rows(store, "SELECT voter, answer FROM votes WHERE token = ?", [token]) == [(voter, answer)]

    ok, pair = _call(client, "next_pair")  # a fresh pair answered 100 times at once: one wins, 99 are refused
    client.close()
    replies = _replay(url, cookies, pair[0], "tie", REPLAYS)
    assert sum(ok for ok, _ in replies) == 1, _summary(replies)
    assert all("already been answered" in str(error) for ok, error in replies if not ok), _summary(replies)
    assert _rows(store, "SELECT voter, answer FROM votes WHERE token = ?", [pair[0]]) == [(voter, "tie")]
    assert _rows(store, "SELECT count(*), count(DISTINCT token) FROM votes") == [(VOTERS * VOTES_EACH + 1,) * 2]


def test_left_and_right_are_balanced_over_pairs_issued_by_the_app(vote_app, fifty_voters):
    _, store, _ = vote_app
    tokens = [token for token, _, _ in fifty_voters]  # the 1,000 pairs the app's next_pair issued
    placements = _rows(store, "SELECT wl.checkpoint, wr.checkpoint FROM vote_pairs v JOIN work wl ON wl.key = "
                              "v.left_key JOIN work wr ON wr.key = v.right_key WHERE list_contains(?, v.token)",
                       [tokens])
    assert len(placements) == len(tokens) == VOTERS * VOTES_EACH
    p, sides = side_balance(placements)
    assert p >= 0.001, sides
    assert len(sides) >= 3 and all(left + right > 0 for left, right in sides.values())

    # The statistic sees a biased coin: the same pairs, each with its first checkpoint (by sha) left 2 times in 3.
    biased = [tuple(sorted(pair))[::1 if k % 3 else -1] for k, pair in enumerate(placements)]
    assert side_balance(biased)[0] < 0.001
    # Against the closed form for one pair: 70 to 30 gives chi2 = 40^2 / 100 = 16 on 1 df, p = erfc(4 / sqrt 2).
    p, sides = side_balance([("x", "y")] * 70 + [("y", "x")] * 30)
    assert p == pytest.approx(math.erfc(4 / math.sqrt(2)), rel=1e-9) and p < 0.001 and sides == {"x": (70, 30),
                                                                                                   "y": (30, 70)}
