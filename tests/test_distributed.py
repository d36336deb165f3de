"""Two ranks, started as `accelerate launch`/torchrun start them, share one grid by checkpoint."""

import os
import socket
import subprocess
import sys

from evalsvc.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_shard_by_checkpoint_and_the_owner_ingests(tmp_path, sd15_dir, sd15_loras):
    store = tmp_path / "store"
    assert main(["add", "--store", str(store), "--run", "r", "--base", str(sd15_dir), *map(str, sd15_loras)]) == 0
    port = _free_port()
    args = [sys.executable, "-m", "evalsvc", "sample", "--store", str(store), "--run", "r", "--suite", "toy",
            "--seeds", "1", "--steps", "2", "--size", "64x64", "--no-progress"]
    procs = []
    for rank in range(2):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "16 cells" in outputs[0]

    from evalsvc.store import open_store

    with open_store(store) as s:
        assert s.db.execute("SELECT state, count(*) FROM work GROUP BY state").fetchall() == [("done", 16)]
        assert s.db.execute("SELECT count(*) FROM samples").fetchone()[0] == 16
    assert not list((store / "shards").iterdir())  # ingested and removed


def test_a_crashed_ranks_shard_file_is_ingested_by_the_next_owner(tmp_path, sd15_dir):
    from evalsvc.sampling.imagestore import ImageStore
    from evalsvc.sampling.runner import recover
    from evalsvc.sampling.shards import ShardSink
    from evalsvc.store import open_store

    with open_store(tmp_path / "s") as s:
        s.db.execute("INSERT INTO work (key, checkpoint, prompt, negative, seed, cfg, steps, sampler, width, height, "
                     "lora_scale, clip_skip, precision) VALUES "
                     "('k1', 'c', 'p', '', 1, 7, 2, 'euler', 64, 64, 1, 1, 'float32'),"
                     "('k2', 'c', 'p', '', 2, 7, 2, 'euler', 64, 64, 1, 1, 'float32')")
        sink = ShardSink(s.layout, ImageStore(s.layout.images, s.layout.tmp), rank=1)
        sink.done([("k1", b"\x89PNG fake bytes", "infotext", 0.1)])
        with open(sink.path, "a") as f:
            f.write('{"op": "done", "key": "k2", "image_pa')  # torn by SIGKILL mid-write
        recover(s)
        assert s.db.execute("SELECT key, state FROM work ORDER BY key").fetchall() == [("k1", "done"), ("k2", "pending")]
        assert s.db.execute("SELECT count(*) FROM samples").fetchone()[0] == 1
        assert len(list(s.layout.images.glob("*/*.png"))) == 1  # the ingested image was not swept
