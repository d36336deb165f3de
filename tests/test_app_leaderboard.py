"""The human leaderboard, metric agreement with votes, and the release decision, on the shortened demo run."""

import math

import numpy as np
import pytest

from evalsvc.app.leaderboard import human_leaderboard, metric_agreement, wilson_interval
from evalsvc.decisions import decisions, mark_release_candidate
from evalsvc.errors import InputError
from evalsvc.store import open_store
from evalsvc.votes import issue_pair, record_vote


@pytest.fixture
def store(short_demo, copy_store):
    with open_store(copy_store(short_demo[0])) as store:
        yield store


def _oracle_voter(store, token):
    """Answers as the toy world's oracle scores the two images (tie when equal)."""
    left, right = store.db.execute(
        "SELECT sl.value, sr.value FROM vote_pairs p JOIN scores sl ON sl.key = p.left_key AND sl.metric = 'oracle' "
        "JOIN scores sr ON sr.key = p.right_key AND sr.metric = 'oracle' WHERE p.token = ?", [token]).fetchone()
    return "A" if left > right else "B" if right > left else "tie"


def test_votes_that_follow_the_oracle_make_the_oracle_agree_fully(store):
    rng = np.random.default_rng(0)
    for i in range(120):  # 8 voters: a voter is never shown an image twice
        voter = f"voter{i % 8}"
        issued = issue_pair(store.db, "purple", voter, rng=rng)
        record_vote(store.db, issued.token, voter, _oracle_voter(store, issued.token))
    agreement = {a.metric: a for a in metric_agreement(store.db, "purple")}
    decisive = store.db.execute("SELECT count(*) FROM votes WHERE answer IN ('A', 'B')").fetchone()[0]
    assert agreement["oracle"].agree == agreement["oracle"].votes == decisive > 20
    assert agreement["oracle"].ci_low > 0.85
    assert 0 <= agreement["clip_t"].share <= 1 and agreement["clip_t"].votes == decisive
    board = human_leaderboard(store.db, "purple")
    assert len(board.ratings) == 4 and sum(r.votes for r in board.ratings) == 2 * 120


def test_a_checkpoint_that_always_wins_tops_the_leaderboard(store):
    for i in range(60):
        voter = f"voter{i % 6}"
        issued = issue_pair(store.db, "purple", voter)
        left, right = store.db.execute(
            "SELECT cl.file_name, cr.file_name FROM vote_pairs p JOIN work wl ON wl.key = p.left_key "
            "JOIN work wr ON wr.key = p.right_key JOIN checkpoints cl ON cl.sha256 = wl.checkpoint "
            "JOIN checkpoints cr ON cr.sha256 = wr.checkpoint WHERE p.token = ?", [issued.token]).fetchone()
        answer = "A" if left == "purple-000002.safetensors" else "B" if right == "purple-000002.safetensors" else "tie"
        record_vote(store.db, issued.token, voter, answer)
    board = human_leaderboard(store.db, "purple")
    assert board.ratings[0].player == "purple-000002.safetensors"
    assert board.ratings[0].ci_low > max(r.rating for r in board.ratings[1:])  # clearly ahead


def test_wilson_interval_closed_form():
    low, high = wilson_interval(8, 10)
    # Wilson 95%: centre (0.8 + z^2/20) / (1 + z^2/10)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    assert (low + high) / 2 == pytest.approx(centre) and 0.49 < low < 0.5 and 0.94 < high < 0.95
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_release_decisions_are_recorded_with_who_and_why(store):
    first = mark_release_candidate(store.db, "purple", "purple-ema-000002.safetensors", "ann", "best blind votes")
    second = mark_release_candidate(store.db, "purple", "purple-000002.safetensors", "bob", "sharper")
    assert [d.checkpoint for d in decisions(store.db, "purple")] == [second.checkpoint, first.checkpoint]
    assert decisions(store.db, "purple")[1].decided_by == "ann"
    with pytest.raises(InputError, match="no candidate checkpoint"):
        mark_release_candidate(store.db, "purple", "toy-sd15", "ann", "the base is not a candidate")
    with pytest.raises(InputError, match="who decided and why"):
        mark_release_candidate(store.db, "purple", "purple-000001.safetensors", "ann", " ")
