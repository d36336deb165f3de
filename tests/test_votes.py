"""Blind votes in the store: issued pairs are opaque and fair, a vote is stored once, bad votes are refused."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from conftest import side_balance

from evalsvc.stats.bradley_terry import Comparison
from evalsvc.store import open_store
from evalsvc.votes import VoteConfig, VoteRefused, issue_pair, issued_image, pair_weights, record_vote, run_comparisons


@pytest.fixture
def demo_store(short_demo, copy_store):
    with open_store(copy_store(short_demo[0])) as store:
        yield store


def _identifiers(store) -> set[str]:
    names = {n for n, in store.db.execute("SELECT file_name FROM checkpoints").fetchall()}
    shas = {s for s, in store.db.execute("SELECT sha256 FROM checkpoints").fetchall()}
    keys = {k for k, in store.db.execute("SELECT key FROM work").fetchall()}
    return names | {n.rsplit(".", 1)[0] for n in names} | {s[:10] for s in shas} | {k[:10] for k in keys} | {"purple-"}


def test_an_issued_pair_is_opaque_and_shows_two_checkpoints_on_one_cell(demo_store):
    issued = issue_pair(demo_store.db, "purple", "ann", rng=np.random.default_rng(0))
    text = " ".join([issued.token, issued.left_image, issued.right_image])
    assert not any(identifier in text for identifier in _identifiers(demo_store))
    assert len({issued.token, issued.left_image, issued.right_image}) == 3
    left, right = demo_store.db.execute(
        "SELECT wl.checkpoint || '/' || wl.prompt || wl.seed || wl.cfg, wr.checkpoint || '/' || wr.prompt || wr.seed "
        "|| wr.cfg FROM vote_pairs v JOIN work wl ON wl.key = v.left_key JOIN work wr ON wr.key = v.right_key "
        "WHERE v.token = ?", [issued.token]).fetchone()
    assert left.split("/")[0] != right.split("/")[0] and left.split("/", 1)[1] == right.split("/", 1)[1]
    assert issued.prompt in left
    path = issued_image(demo_store.db, issued.left_image, demo_store.layout.images)
    assert path is not None and path.is_file()
    assert issued_image(demo_store.db, "not-a-token", demo_store.layout.images) is None


def test_a_vote_is_stored_once_and_reveals_the_identities(demo_store):
    issued = issue_pair(demo_store.db, "purple", "ann")
    cast = record_vote(demo_store.db, issued.token, "ann", "A")
    assert cast.winner == cast.left and cast.left != cast.right and cast.left.endswith(".safetensors")
    for _ in range(100):
        with pytest.raises(VoteRefused, match="already been answered"):
            record_vote(demo_store.db, issued.token, "ann", "B")
    assert demo_store.db.execute("SELECT count(*), min(answer) FROM votes").fetchone() == (1, "A")
    # the images of an answered pair are no longer served
    assert issued_image(demo_store.db, issued.left_image, demo_store.layout.images) is None
    [comparison] = run_comparisons(demo_store.db, "purple")
    assert comparison.outcome == "a"


def test_votes_for_pairs_never_issued_foreign_or_expired_are_refused(demo_store):
    with pytest.raises(VoteRefused, match="no such pair"):
        record_vote(demo_store.db, "made-up", "ann", "A")
    issued = issue_pair(demo_store.db, "purple", "ann")
    with pytest.raises(VoteRefused, match="another voter"):
        record_vote(demo_store.db, issued.token, "bob", "A")
    with pytest.raises(VoteRefused, match="answer must be"):
        record_vote(demo_store.db, issued.token, "ann", "left")
    stale = issue_pair(demo_store.db, "purple", "ann", VoteConfig(expires_seconds=0))
    with pytest.raises(VoteRefused, match="expired"):
        record_vote(demo_store.db, stale.token, "ann", "tie")
    assert demo_store.db.execute("SELECT count(*) FROM votes").fetchone()[0] == 0


def test_sides_are_balanced(demo_store):
    rng = np.random.default_rng(7)
    placements = []
    for _ in range(400):
        issued = issue_pair(demo_store.db, "purple", "ann", rng=rng)
        placements.append(demo_store.db.execute(
            "SELECT wl.checkpoint, wr.checkpoint FROM vote_pairs v JOIN work wl ON wl.key = v.left_key "
            "JOIN work wr ON wr.key = v.right_key WHERE v.token = ?", [issued.token]).fetchone())
    p, sides = side_balance(placements)  # per pair of checkpoints: each one left about half of their meetings
    assert p > 0.01, sides


def test_close_and_little_compared_pairs_are_favoured():
    votes = [Comparison("e1", "e8", "b")] * 30 + [Comparison("e4", "e8", "a"), Comparison("e4", "e8", "b")]
    weights = pair_weights(["e1", "e4", "e8"], votes)
    assert weights[("e4", "e8")] > weights[("e1", "e8")]
    assert weights[("e1", "e4")] > weights[("e1", "e8")]
    assert all(0 < w <= 1 for w in weights.values())
    assert pair_weights(["x", "y"], []) == {("x", "y"): math.exp(0) / 1}


def test_concurrent_voters_each_with_a_cursor_store_exactly_the_accepted_votes(demo_store):
    pairs = {f"voter{v}": [issue_pair(demo_store.db, "purple", f"voter{v}") for _ in range(20)] for v in range(50)}
    accepted, refused, errors = [], [], []

    def vote(voter, issued):
        cursor = demo_store.db.cursor()
        try:
            for item in issued:
                for _ in range(2):  # every vote is sent twice
                    try:
                        record_vote(cursor, item.token, voter, "A")
                        accepted.append(item.token)
                    except VoteRefused:
                        refused.append(item.token)
        except Exception as exc:  # noqa: BLE001 - any other error fails the test below
            errors.append(exc)
        finally:
            cursor.close()

    threads = [threading.Thread(target=vote, args=item) for item in pairs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(accepted) == sorted(i.token for issued in pairs.values() for i in issued)
    assert len(refused) == 1000
    stored = [t for t, in demo_store.db.execute("SELECT token FROM votes").fetchall()]
    assert sorted(stored) == sorted(accepted)
