"""Background jobs: the queue in the store, the app's workers, and commands queueing there while the app is up."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from evalsvc.app.jobs_tab import args_text, job_rows
from evalsvc.cli import main
from evalsvc.errors import InputError
from evalsvc.jobs import (Job, JobObserver, JobProgress, cancel, claim, finish, get_job, list_jobs,
                          requeue_interrupted, run_claimed, submit)
from evalsvc.store import open_store
from evalsvc.store.migrations import MIGRATIONS
from evalsvc.work import namespace

from conftest import APP_USERS, serve_app

TINY_SUITE = """name = "tiny"
description = "two purple prompts"

[[prompts]]
id = "purple-circle-left-white"
text = "a purple circle on the left, white background"

[[prompts]]
id = "purple-square-right-black"
text = "a purple square on the right, black background"
"""


def test_jobs_are_claimed_oldest_first_once_and_an_interrupted_one_is_queued_again(store):
    db = store.db
    first = submit(db, "sample", {"run": "r", "suite": "toy"}, "ann")
    second = submit(db, "score", {"run": "r"}, "bob")
    job = claim(db)
    assert (job.id, job.command, job.args, job.state) == (first, "sample", {"run": "r", "suite": "toy"}, "running")
    assert claim(db).id == second and claim(db) is None
    finish(db, first, 0, "ok")
    assert (get_job(db, first).state, get_job(db, first).output) == ("done", "ok")
    assert requeue_interrupted(db) == 1  # the second was left running
    assert get_job(db, second).state == "queued" and claim(db).id == second
    finish(db, second, 2, "error: bad")
    assert [j.state for j in list_jobs(db)] == ["failed", "done"]
    for command, args, by in (("train", {"run": "r"}, "ann"), ("score", {}, "ann"), ("score", {"run": "r"}, " ")):
        with pytest.raises(InputError):
            submit(db, command, args, by)


def test_a_queued_job_is_cancelled_at_once_a_running_one_is_marked_and_a_finished_one_is_refused(store):
    db = store.db
    queued = submit(db, "sample", {"run": "r", "suite": "toy"}, "ann")
    job = cancel(db, queued, "ada")
    assert (job.state, job.cancel_by, job.output) == ("cancelled", "ada", "cancelled by ada before it started")
    assert claim(db) is None  # a cancelled job is never claimed
    running = submit(db, "sample", {"run": "r", "suite": "toy"}, "ann")
    assert claim(db).id == running
    observer = JobObserver(db, running)
    assert not observer.cancelled()
    job = cancel(db, running, "ada")
    assert (job.state, job.cancel_by) == ("running", "ada") and observer.cancelled()
    assert cancel(db, running, "bob").cancel_by == "ada"  # asked once: the first asker is kept
    finish(db, running, 0, "ok")
    for job_id, state in ((queued, "cancelled"), (running, "done")):
        with pytest.raises(InputError, match=f"job {job_id} is already {state}; only a queued or running job"):
            cancel(db, job_id, "ada")
    with pytest.raises(InputError, match="no job 999"):
        cancel(db, 999, "ada")

    # an owner that died while a job was asked to stop: the job ends cancelled instead of running again
    asked = submit(db, "score", {"run": "r"}, "ann")
    other = submit(db, "score", {"run": "r"}, "ann")
    assert claim(db).id == asked and claim(db).id == other
    cancel(db, asked, "ada")
    assert requeue_interrupted(db) == 1
    assert (get_job(db, asked).state, get_job(db, other).state) == ("cancelled", "queued")


def test_a_jobs_progress_arguments_and_time_left_read_in_one_line_each(store):
    start = datetime(2026, 1, 1, 12, 0, 0)
    job = Job(1, "sample", "r", {}, "running", "ann", start, start, None, None, None,
              cells_done=6, cells_total=24, progress_at=start + timedelta(seconds=60))
    progress = JobProgress.of(job)
    assert (progress.cells, progress.eta_seconds, progress.eta) == ("6/24 cells", 180.0, "about 3 min")
    from dataclasses import replace

    assert JobProgress.of(replace(job, state="cancelled")).eta == ""  # no time left for a job that ended
    assert (JobProgress.of(replace(job, cells_done=0)).eta, JobProgress.of(replace(job, cells_total=None)).cells) \
        == ("", "")
    args = {"run": "r", "suite": "/a/b/tiny.toml", "seeds": [1, 2], "cfg": [5.0, 7.5], "steps": None, "score": True,
            "allow_pickle": False, "size": [[64, 96]], "losses": [[1, 0, 0.5, 1e-3]]}
    assert args_text(args) == "suite=tiny.toml seeds=1,2 cfg=5,7.5 score size=64x96"
    assert len(args_text({"run": "r", "paths": ["/x/" + "a" * 200]})) == 120

    db = store.db
    job_id = submit(db, "sample", {"run": "r", "suite": "toy", "seeds": [3]}, "ann")
    claim(db)
    observer = JobObserver(db, job_id)
    observer.start(8)
    observer.advance(2)
    cancel(db, job_id, "ada")
    [row] = job_rows(db)
    assert row[:8] == [job_id, "sample", "r", "suite=toy seeds=3", "running (cancel asked)", "2/8 cells",
                       row[6], "ann"]
    assert row[6].startswith("about ")


def test_the_job_progress_migration_keeps_every_job(tmp_path):
    """A store from before jobs could be cancelled: its jobs are kept, and a new one can be cancelled."""
    import duckdb

    root = tmp_path / "old"
    root.mkdir()
    db = duckdb.connect(str(root / "evalsvc.duckdb"))
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMP DEFAULT current_timestamp)")
    for name, sql in MIGRATIONS:
        if name == "0014_job_progress":
            break
        sql(db) if callable(sql) else db.execute(sql)
        db.execute("INSERT INTO migrations (name) VALUES (?)", [name])
    old = db.execute(
        "INSERT INTO jobs (command, run, args, state, submitted_by, submitted_at, exit_code, output) "
        "VALUES ('score', 'r', '{\"run\": \"r\"}', 'done', 'ann', now(), 0, 'ok') RETURNING id").fetchone()[0]
    db.close()
    with open_store(root) as store:
        job = get_job(store.db, old)
        assert (job.state, job.args, job.output, job.cells_total, job.cancel_at) == ("done", {"run": "r"}, "ok",
                                                                                     None, None)
        new = submit(store.db, "score", {"run": "r"}, "ann")
        assert new > old and cancel(store.db, new, "ada").state == "cancelled"


def test_a_job_gets_the_command_lines_defaults_and_unknown_arguments_are_refused():
    args = namespace("sample", {"run": "r", "suite": "toy", "seeds": [3, 4]})
    assert (args.seeds, args.steps, args.score, args.lora_scale, args.no_progress) == ((3, 4), None, False, (1.0,), True)
    add = namespace("add", {"run": "r", "paths": ["/x/a.safetensors"], "suite": "toy"})
    assert add.paths == [Path("/x/a.safetensors")] and add.suite == "toy" and add.ema is None
    with pytest.raises(InputError, match="unknown arguments colour"):
        namespace("score", {"run": "r", "colour": "red"})


def _wait_for(store, job_id: int, timeout: float = 240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with store.thread_view() as view:
            job = get_job(view.db, job_id)
        if job is not None and job.state in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def _vote_continuously(url: str, stop: threading.Event, errors: list, counts: list) -> None:
    from gradio_client import Client

    try:
        client = Client(url + "vote/", auth=("ann", APP_USERS["ann"]), verbose=False)
        while not stop.is_set():
            token, *_ = client.predict(api_name="/next_pair")
            if not token:  # she has seen every image: nothing left to vote on
                break
            client.predict(token, "A", api_name="/vote")
            counts.append(token)
    except Exception as exc:  # any error fails the test below
        errors.append(repr(exc))


@pytest.fixture
def app_with_jobs(short_demo, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(short_demo[0], root, ignore=shutil.ignore_patterns("lock"))
    with open_store(root) as store, serve_app(store, APP_USERS, jobs=True) as url:
        yield root, store, url


def test_commands_run_while_the_app_is_up_queue_their_work_there_and_workers_do_it_beside_voters(
        app_with_jobs, tmp_path, capsys):
    from gradio_client import Client

    root, store, url = app_with_jobs
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    with store.thread_view() as view:
        images_before = view.db.execute("SELECT count(*) FROM samples").fetchone()[0]
        checkpoints = view.db.execute("SELECT count(*) FROM run_checkpoints WHERE run = 'purple'").fetchone()[0]
    stop, errors, votes = threading.Event(), [], []
    voter = threading.Thread(target=_vote_continuously, args=(url, stop, errors, votes))
    voter.start()
    try:
        code = main(["sample", "--store", str(root), "--run", "purple", "--suite", str(suite), "--seeds", "77",
                     "--cfg", "5", "--steps", "4", "--sampler", "euler", "--no-progress"])
        out = capsys.readouterr().out
        assert code == 0 and "in use by the evalsvc app" in out and "queued as job" in out, out
        job_id = int(out.split("queued as job ")[1].split()[0])
        job = _wait_for(store, job_id)
        assert job.state == "done" and job.exit_code == 0, job.output
        assert "sampled 10 now" in job.output  # 5 checkpoints (base, raw and EMA of 2 epochs) x 2 prompts

        # the Jobs tab queues a scoring job through the app's API
        client = Client(url, auth=("ada", APP_USERS["ada"]), verbose=False)  # an admin
        status, table = client.predict("purple", "score", "", "", "", "", False, "overcook", "", "", "", api_name="/queue_job")
        score_id = int(status.split()[-1])
        assert _wait_for(store, score_id).state == "done"
        rows = client.predict(api_name="/jobs")["data"]
        assert [r[0] for r in rows][:2] == [score_id, job_id] and rows[0][7] == "ada"
        assert rows[0][3] == "metrics=overcook" and rows[1][5] == "10/10 cells", rows[:2]
        with pytest.raises(Exception, match=f"job {score_id} is already done"):
            client.predict(str(score_id), api_name="/cancel_job")
        with pytest.raises(Exception, match="unknown suite|no suite|not found"):
            client.predict("purple", "sample", "no-such-suite", "", "", "", False, "", "", "", "", api_name="/queue_job")
    finally:
        stop.set()
        voter.join(timeout=60)
    assert not errors and len(votes) > 0
    with store.thread_view() as view:
        assert view.db.execute("SELECT count(*) FROM samples").fetchone()[0] == images_before + 2 * checkpoints
        assert view.db.execute("SELECT count(*) FROM votes").fetchone()[0] == len(votes)
        assert view.db.execute("SELECT count(*) FROM scores s JOIN work w ON w.key = s.key WHERE w.seed = 77 "
                               "AND s.metric LIKE 'overcook%'").fetchone()[0] >= 2 * checkpoints

    # a command that cannot be queued says who holds the store, and the app stays up
    assert main(["report", "--store", str(root), "--run", "purple"]) == 2
    err = capsys.readouterr().err
    assert "in use by the evalsvc app" in err and url in err


def test_a_bad_command_fails_before_queueing_and_a_stale_link_is_ignored(app_with_jobs, tmp_path, capsys):
    root, store, url = app_with_jobs
    assert main(["sample", "--store", str(root), "--run", "purple", "--suite", "no-such-suite"]) == 2
    with store.thread_view() as view:
        assert list_jobs(view.db) == []
    import httpx

    assert (root / "app.json").stat().st_mode & 0o777 == 0o600
    job = {"command": "score", "args": {"run": "purple"}, "submitted_by": "mallory"}
    assert httpx.post(url + "jobs", json=job).status_code == 401
    assert httpx.post(url + "jobs", json=job, headers={"Authorization": "Bearer guess"}).status_code == 401
    assert httpx.get(url + "jobs/1").status_code == 401
    with store.thread_view() as view:
        assert list_jobs(view.db) == []
    link = (root / "app.json").read_text()
    other = tmp_path / "other"
    other.mkdir()
    (other / "app.json").write_text(link)  # a link whose PID does not hold this folder's lock
    assert main(["init", "--store", str(other)]) == 0  # not in use: the stale link changes nothing


def _queued_ids(out: str) -> list[int]:
    return [int(part.split()[0].rstrip(":")) for part in out.split("queued job ")[1:]]


def test_watch_and_the_trainer_queue_new_checkpoints_in_the_app_which_registers_and_samples_them(
        app_with_jobs, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    root, store, url = app_with_jobs
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    grid = ["--suite", str(suite), "--seeds", "77", "--cfg", "5", "--steps", "4", "--sampler", "euler"]

    # watch: a new epoch lands in the trainer's folder (epoch 2's LoRA, changed)
    source = root / "demo-models" / "purple-lora" / "purple-000002.safetensors"
    with safe_open(str(source), "pt") as f:
        metadata = dict(f.metadata() or {})
    metadata.update({"ss_epoch": "3", "ss_steps": str(int(metadata.get("ss_steps", "12")) + 6)})
    tensors = {k: v * 1.01 for k, v in load_file(source).items()}
    folder = tmp_path / "trainer-out"
    folder.mkdir()
    save_file(tensors, folder / "purple-000003.safetensors", metadata)
    code = main(["watch", str(folder), "--store", str(root), "--run", "purple", *grid, "--interval", "0.2",
                 "--stable-seconds", "0", "--max-idle", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "queueing each new checkpoint there" in out, out
    [watch_job] = _queued_ids(out)
    job = _wait_for(store, watch_job)
    assert job.state == "done", job.output
    assert "added  purple-000003.safetensors: lora sd15 epoch 3" in job.output
    assert "sampled 12 now" in job.output  # (base, 4 earlier files, the new one) x 2 prompts at seed 77

    # the trainer: one epoch of a new LoRA on the demo's base, each saved epoch queued with its loss
    models = root / "demo-models"
    config = tmp_path / "train.toml"
    config.write_text(f"""
[model]
base = "{models / 'toy-sd15'}"
[network]
kind = "lora"
rank = 2
[train]
output_dir = "{tmp_path / 'lora-out'}"
output_name = "teal"
epochs = 1
batch_size = 16
learning_rate = 1e-3
[dataset]
folder = "{models / 'purple-data'}"
resolution = 64
[eval]
suite = "{suite}"
seeds = [5]
cfgs = [5.0]
steps = 4
sampler = "euler"
""")
    assert main(["train", str(config), "--store", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "each saved epoch is queued there" in out, out
    with store.thread_view() as view:
        train_job = max(j.id for j in list_jobs(view.db) if j.run == "teal")
    job = _wait_for(store, train_job)
    assert job.state == "done", job.output
    with store.thread_view() as view:
        losses = view.db.execute("SELECT count(*) FROM losses WHERE run = 'teal'").fetchone()[0]
        sampled = view.db.execute("SELECT count(*) FROM grid_cells g JOIN samples s ON s.key = g.key "
                                  "WHERE g.run = 'teal'").fetchone()[0]
    assert losses > 0 and sampled == 2 * 2  # base and epoch 1 x 2 prompts


class _CancelAfter(JobObserver):
    """A job's own observer that, once `batches` batches are done, asks to cancel the job on another cursor (as
    the Jobs tab does): deterministic, where a second thread racing the sampler would not be."""

    def __init__(self, view, store, job_id: int, batches: int):
        super().__init__(view.db, job_id)
        self.store, self.batches, self.seen = store, batches, 0

    def advance(self, n: int) -> None:
        super().advance(n)
        self.seen += 1
        if self.seen == self.batches:
            cancel(self.store.db, self.job_id, "ada")


def _cells(db, keys=None) -> dict[str, tuple]:
    """The new seeds' grid cells of run purple: key -> (checkpoint, state, number of images, image digests)."""
    rows = db.execute(
        "SELECT w.key, any_value(w.checkpoint), any_value(w.state), count(s.key), list(s.image_sha256) "
        "FROM work w LEFT JOIN samples s ON s.key = w.key WHERE w.key IN (SELECT g.key FROM grid_cells g "
        "WHERE g.run = 'purple') AND w.seed IN (77, 78) GROUP BY w.key").fetchall()
    return {key: tuple(rest) for key, *rest in rows}


def test_a_cancelled_sampling_job_stops_at_a_batch_boundary_and_a_rerun_completes_the_grid_once(
        short_demo, copy_store, tmp_path):
    root = copy_store(short_demo[0])
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    args = {"run": "purple", "suite": str(suite), "seeds": [77, 78], "cfg": [5.0], "steps": [4],
            "sampler": ["euler"], "batch_size": 2}
    with open_store(root) as store, store.thread_view() as view:
        checkpoints = store.db.execute("SELECT count(*) FROM run_checkpoints WHERE run = 'purple'").fetchone()[0]
        total = checkpoints * 2 * 2  # x 2 prompts x 2 seeds
        job = get_job(store.db, submit(store.db, "sample", args, "ann"))
        assert claim(view.db).id == job.id
        ended = run_claimed(view, job, _CancelAfter(view, store, job.id, batches=3))
        assert (ended.state, ended.exit_code, ended.cancel_by) == ("cancelled", None, "ada"), ended.output
        assert ended.output == (f"cancelled by ada after 6 of {total} cells; those are kept, and queueing the same "
                                f"job again samples the other {total - 6}")
        assert JobProgress.of(ended).cells == f"6/{total} cells"
        cells = _cells(store.db)
        assert len(cells) == total
        done = {key: c for key, c in cells.items() if c[1] == "done"}
        # three whole batches of 2: the base's 4 cells, then 2 of the next checkpoint; nothing left running
        assert sorted(Counter(c[0] for c in done.values()).values()) == [2, 4]
        assert all(c[2] == 1 for c in done.values())
        assert {c[1] for key, c in cells.items() if key not in done} == {"pending"}
        assert all(c[2] == 0 for key, c in cells.items() if key not in done)

        again = get_job(store.db, submit(store.db, ended.command, ended.args, "ann"))
        assert claim(view.db).id == again.id
        rerun = run_claimed(view, again)
        assert rerun.state == "done" and f"sampled {total - 6} now" in rerun.output, rerun.output
        assert JobProgress.of(rerun).cells == f"{total - 6}/{total - 6} cells"
        after = _cells(store.db)
        assert {c[1] for c in after.values()} == {"done"} and all(c[2] == 1 for c in after.values())
        assert {key: after[key][3] for key in done} == {key: c[3] for key, c in done.items()}  # kept as they were
