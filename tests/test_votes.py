"""Blind votes in the store: issued pairs are opaque and fair, a vote is stored once, bad votes are refused; a
voter holds one open pair, never sees an image twice, and flagged checkpoints are left out."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from conftest import side_balance

from evalsvc.errors import InputError
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
    images = demo_store.layout.images
    path = issued_image(demo_store.db, issued.left_image, images, "ann")
    assert path is not None and path.is_file()
    assert issued_image(demo_store.db, "not-a-token", images, "ann") is None
    assert issued_image(demo_store.db, issued.left_image, images, "bob") is None  # another voter's pair
    assert issued_image(demo_store.db, issued.left_image, images, "ann", "other-session") is None


def test_a_vote_is_stored_once_and_reveals_the_identities(demo_store):
    issued = issue_pair(demo_store.db, "purple", "ann")
    cast = record_vote(demo_store.db, issued.token, "ann", "A")
    assert cast.winner == cast.left and cast.left != cast.right and cast.left.endswith(".safetensors")
    for _ in range(100):
        with pytest.raises(VoteRefused, match="already been answered"):
            record_vote(demo_store.db, issued.token, "ann", "B")
    assert demo_store.db.execute("SELECT count(*), min(answer) FROM votes").fetchone() == (1, "A")
    # the images of an answered pair are no longer served
    assert issued_image(demo_store.db, issued.left_image, demo_store.layout.images, "ann") is None
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
    with pytest.raises(VoteRefused, match="another login"):
        record_vote(demo_store.db, issued.token, "ann", "A", session="other-session")
    stale = issue_pair(demo_store.db, "purple", "ann", VoteConfig(expires_seconds=0))
    with pytest.raises(VoteRefused, match="expired"):
        record_vote(demo_store.db, stale.token, "ann", "tie")
    assert demo_store.db.execute("SELECT count(*) FROM votes").fetchone()[0] == 0


def test_a_voter_holds_one_open_pair_and_never_sees_an_image_twice(demo_store):
    db, images = demo_store.db, demo_store.layout.images
    first = issue_pair(db, "purple", "ann", session="s1")
    second = issue_pair(db, "purple", "ann", session="s2")  # another login of hers asks too: the first is skipped
    with pytest.raises(VoteRefused, match="skipped"):
        record_vote(db, first.token, "ann", "A", session="s1")
    assert issued_image(db, first.left_image, images, "ann", "s1") is None
    assert issued_image(db, second.left_image, images, "ann", "s2") is not None
    assert db.execute("SELECT count(*) FROM vote_pairs WHERE voter = 'ann' AND skipped_at IS NOT NULL").fetchone() == (1,)
    record_vote(db, second.token, "ann", "B", session="s2")
    candidate_cells = db.execute(
        "SELECT count(*) FROM grid_cells g JOIN work w ON w.key = g.key JOIN run_checkpoints rc ON rc.run = g.run "
        "AND rc.sha256 = w.checkpoint WHERE g.run = 'purple' AND rc.role = 'candidate'").fetchone()[0]
    with pytest.raises(InputError, match="not seen"):
        for i in range(candidate_cells):  # more pairs than she can be shown without repeating an image
            issue_pair(db, "purple", "ann", rng=np.random.default_rng(i))
    shown = [k for k, in db.execute("SELECT unnest([left_key, right_key]) FROM vote_pairs WHERE voter = 'ann'").fetchall()]
    assert len(shown) == len(set(shown)) > candidate_cells // 2  # every pair of hers showed two new images
    assert issue_pair(db, "purple", "bob").token  # another voter still has every image to see


def test_flagged_checkpoints_are_left_out_of_pairs_unless_asked_for(demo_store):
    db = demo_store.db
    epoch2 = db.execute("SELECT sha256 FROM checkpoints WHERE file_name = 'purple-000002.safetensors'").fetchone()[0]
    db.execute("INSERT OR REPLACE INTO scores (key, metric, version, value) SELECT w.key, 'overcook', 'test', 3.0 "
               "FROM work w WHERE w.checkpoint = ?", [epoch2])  # far past the overcook limit at every setting

    def shown(config, voters):
        return {sha for v in range(voters) for sha, in db.execute(
            "SELECT w.checkpoint FROM vote_pairs p JOIN work w ON w.key IN (p.left_key, p.right_key) "
            "WHERE p.token = ?", [issue_pair(db, "purple", f"{config.flagged}-{v}", config).token]).fetchall()}

    assert epoch2 not in shown(VoteConfig(), 40)
    assert epoch2 in shown(VoteConfig(flagged=True), 40)


def test_sides_are_balanced(demo_store):
    rng = np.random.default_rng(7)
    placements = []
    for i in range(400):  # 40 voters, 10 pairs each (a voter never sees an image twice)
        issued = issue_pair(demo_store.db, "purple", f"voter{i % 40}", rng=rng)
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
    accepted, refused, issued, errors = [], [], [], []

    def vote(voter):
        cursor = demo_store.db.cursor()
        try:
            for _ in range(10):
                item = issue_pair(cursor, "purple", voter)
                issued.append(item.token)
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

    threads = [threading.Thread(target=vote, args=(f"voter{v}",)) for v in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(accepted) == sorted(issued) and len(issued) == 300
    assert len(refused) == 300
    stored = [t for t, in demo_store.db.execute("SELECT token FROM votes").fetchall()]
    assert sorted(stored) == sorted(accepted)
