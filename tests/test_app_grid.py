"""The grid view over the shortened demo run (base + 2 epochs x raw/EMA, 15 prompts, seed 1, CFG 5)."""

import itertools
import math

import pytest

from evalsvc.app.grid import AXES, GridPage, GridRequest, grid_page
from evalsvc.errors import InputError
from evalsvc.store import open_store


@pytest.fixture
def db(short_demo):
    with open_store(short_demo[0], read_only=True) as store:
        yield store.db


def test_prompts_by_checkpoint_pages_rows_and_shows_raw_weights_by_default(db):
    page = grid_page(db, GridRequest("purple", rows="prompt", columns="checkpoint", rows_per_page=4))
    assert page.pages == 4 and len(page.rows) == 4  # 15 prompts, 4 per page
    assert page.columns == ("toy-sd15", "purple-000001", "purple-000002")
    assert len(page.cells) == 12 and page.pinned == {"cfg": "5", "seed": "1"}
    assert {(c.weights, c.checkpoint) for c in page.cells.values()} == {
        ("base", "toy-sd15"), ("raw", "purple-000001.safetensors"), ("raw", "purple-000002.safetensors")}
    last = grid_page(db, GridRequest("purple", rows="prompt", columns="checkpoint", rows_per_page=4, page=3))
    assert len(last.rows) == 3 and not set(last.rows) & set(page.rows)
    ema = grid_page(db, GridRequest("purple", rows="prompt", columns="checkpoint", filters={"weights": "EMA"}))
    assert ema.columns == ("purple-000001", "purple-000002")
    assert {c.checkpoint for c in ema.cells.values()} == {"purple-ema-000001.safetensors",
                                                          "purple-ema-000002.safetensors"}


def test_every_cell_is_the_sample_of_its_row_column_and_pins(db):
    page = grid_page(db, GridRequest("purple", rows="checkpoint", columns="weights",
                                     filters={"prompt": "purple-circle-left-white"}))
    assert page.columns == ("base", "raw", "EMA")
    for (row, column), cell in page.cells.items():
        assert cell.weights == column and cell.checkpoint.replace("-ema", "").startswith(row)
        key, = db.execute("SELECT g.key FROM grid_cells g JOIN samples s ON s.key = g.key WHERE s.image_path = ?",
                          [cell.image]).fetchone()
        assert key == cell.key and "left" in cell.prompt


@pytest.mark.parametrize("request_args,message", [
    (dict(rows="epochs"), "unknown axis"), (dict(rows="seed", columns="seed"), "different axes"),
    (dict(filters={"cfg": "9"}), "no such value"), (dict(page=99), "past the last page"),
    (dict(run="nope"), "no sampled images"),
])
def test_bad_requests_are_refused(db, request_args, message):
    args = {"run": "purple", **request_args}
    with pytest.raises(InputError, match=message):
        grid_page(db, GridRequest(**args))


# --- the SQL page against the Python page it replaced, on a store with every axis varying ----------------

def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


CHECKPOINTS = [  # file name, role, epoch, EMA
    ("toy-base.safetensors", "base", None, False), ("other-base.safetensors", "base", None, False),
    ("lora-000001.safetensors", "candidate", 1, False), ("lora-ema-000001.safetensors", "candidate", 1, True),
    ("lora-000002.safetensors", "candidate", 2, False), ("lora-ema-000002.safetensors", "candidate", 2, True)]
PROMPTS = [("p-b", 0), ("p-a", 1), ("p-c", 2)]  # positions not in id order
VARIANTS = [  # cfg, steps, sampler, size, strength, clip skip, precision, base, stack; cfg None: per prompt
    (5.0, 20, "euler", (64, 64), 1.0, 1, "float32", "toy-base.safetensors", ()),
    (7.5, 20, "euler", (64, 64), 0.5, 1, "float32", "toy-base.safetensors", ()),
    (5.0, 10, "dpmpp_2m", (96, 64), 1.0, 2, "float16", "other-base.safetensors", (("speed.safetensors", 0.5),)),
    (None, 30, "euler", (64, 96), 1.0, 1, "float32", "toy-base.safetensors", ())]


@pytest.fixture(scope="module")
def axes_db(tmp_path_factory):
    """Rows straight into the tables the grid reads: 6 checkpoints (two bases, raw and EMA epochs) x 3 prompts x
    2 seeds x 4 settings, every fifth cell left out, the bases linked at both LoRA strengths, one setting per
    prompt (its cells have their prompt's CFG), a pending cell without an image and a second run."""
    from evalsvc.setting import Setting, StackedLora
    from evalsvc.store.bulk import insert_rows

    sha = {name: _sha(name) for name, *_ in CHECKPOINTS} | {"speed.safetensors": _sha("speed")}
    suite = _sha("suite")
    work, cells, samples = [], [], []
    for (name, role, _, _), (prompt_id, position), seed, (n, variant) in itertools.product(
            CHECKPOINTS, PROMPTS, (1, 2), enumerate(VARIANTS)):
        cfg, steps, sampler, size, strength, clip_skip, precision, base, stack = variant
        if (role == "base" and name != base) or int(_sha(f"{name}{prompt_id}{seed}{n}"), 16) % 5 == 0:
            continue
        key = _sha(f"{name}/{prompt_id}/{seed}/{n}")
        work.append([key, sha[name], sha[base], f"prompt {prompt_id}", "", seed, cfg or 4.0 + position, steps,
                     sampler, *size, strength, clip_skip, precision, "done"])
        for scale in ((1.0, 0.5) if role == "base" else (strength,)):
            setting = Setting(cfg, None if cfg is None else steps, sampler, size, scale, clip_skip, precision,
                              sha[base], tuple(StackedLora(sha[s], v) for s, v in stack))
            cells.append(["axes", suite, prompt_id, key, setting.key])
        samples.append([key, f"{key[:2]}/{key}.png", key, "", 0.1])
    work.append([_sha("pending"), sha["lora-000001.safetensors"], None, "prompt p-a", "", 9, 5.0, 20, "euler", 64, 64,
                 1.0, 1, "float32", "pending"])
    cells.append(["axes", suite, "p-a", _sha("pending"), Setting(5.0, 20, "euler", (64, 64)).key])
    cells += [["other", suite, c[2], c[3], c[4]] for c in cells[:10]]
    with open_store(tmp_path_factory.mktemp("axes") / "store") as store:
        with store.transaction() as db:
            db.execute("INSERT INTO runs (name, base_sha256) VALUES ('axes', ?), ('other', ?)", [sha[b] for b in (
                "toy-base.safetensors", "other-base.safetensors")])
            insert_rows(db, "checkpoints", ["sha256", "path", "file_name", "kind", "arch", "epoch", "ema"],
                        [[sha[n], f"/m/{n}", n, "full" if role == "base" else "lora", "sd15", epoch, ema]
                         for n, role, epoch, ema in [*CHECKPOINTS, ("speed.safetensors", "", None, False)]])
            insert_rows(db, "run_checkpoints", ["run", "sha256", "role"],
                        [[run, sha[n], role] for n, role, _, _ in CHECKPOINTS for run in ("axes", "other")])
            insert_rows(db, "prompts", ["suite_hash", "prompt_id", "position", "text", "negative", "role"],
                        [[suite, p, pos, f"prompt {p}", "", "target"] for p, pos in PROMPTS])
            insert_rows(db, "work", ["key", "checkpoint", "base", "prompt", "negative", "seed", "cfg", "steps",
                                     "sampler", "width", "height", "lora_scale", "clip_skip", "precision", "state"],
                        work)
            insert_rows(db, "grid_cells", ["run", "suite_hash", "prompt_id", "key", "setting"], cells)
            insert_rows(db, "samples", ["key", "image_path", "image_sha256", "infotext", "seconds"], samples)
        yield store.db


def _before():
    """bench/grid_before.py: the Python page builder the SQL one replaced."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("grid_before", Path(__file__).parents[1] / "bench" / "grid_before.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.grid_page_before


def _pins(cfg, steps, sampler, size, strength, clip_skip, precision, base, stack) -> dict[str, str]:
    """A variant's setting as grid filters (each unfiltered axis is pinned to its first value, which is seldom
    one the others were sampled with)."""
    stack = "+".join(f"{name}:{scale:g}" for name, scale in stack) or "none"
    return {"steps": str(steps), "sampler": sampler, "size": f"{size[0]}x{size[1]}", "lora_scale": f"{strength:g}",
            "clip_skip": str(clip_skip), "precision": precision, "base": base, "stack": stack} | (
        {} if cfg is None else {"cfg": f"{cfg:g}"})


V0, V1, V2, PER_PROMPT = (_pins(*v) | {"checkpoint": "lora-000001"} for v in VARIANTS)
FILTERS = [V0, V1 | {"weights": "EMA"}, V2 | {"checkpoint": "other-base"}, PER_PROMPT, PER_PROMPT | {"prompt": "p-c", "cfg": "6", "seed": "2"},
           V0 | {"weights": "base"}, V1 | {"checkpoint": "lora-000002"}, V2 | {"prompt": "p-a"}, {},
           {"cfg": "9"}, V0 | {"weights": "raw", "seed": "2"}, {"weights": "EMA"}]


def test_the_sql_page_is_the_python_page_for_every_pair_of_axes(axes_db):
    before = _before()

    def page(build, request):
        try:
            return build(axes_db, request)
        except InputError as error:
            return str(error)

    shown, refused = [], []
    for n, (rows, columns) in enumerate(itertools.permutations(AXES, 2)):
        for page_number in (0, 1):
            request = GridRequest("axes", rows, columns, FILTERS[n % len(FILTERS)], page_number, rows_per_page=2)
            expected = page(before, request)
            assert page(grid_page, request) == expected, request
            (shown if isinstance(expected, GridPage) else refused).append(expected)
    assert sum(len(p.cells) > 0 for p in shown) >= 100 and sum(len(p.cells) > 1 for p in shown) >= 30
    assert any("past the last page" in r for r in refused) and any("no such value" in r for r in refused)


def test_paging_returns_the_pages_rows_in_order_with_their_cells_only(axes_db):
    for rows, columns, filters in (("prompt", "checkpoint", V0), ("checkpoint", "prompt", V1),
                                   ("seed", "weights", V1), ("cfg", "prompt", PER_PROMPT)):
        whole = grid_page(axes_db, GridRequest("axes", rows, columns, filters, rows_per_page=100))
        assert whole.pages == 1 and len(whole.rows) >= 2 and whole.cells
        assert set(whole.rows) == {row for row, _ in whole.cells}  # every row shown has an image
        for per_page in (1, 2):
            count = math.ceil(len(whole.rows) / per_page)
            pages = [grid_page(axes_db, GridRequest("axes", rows, columns, filters, n, per_page)) for n in range(count)]
            assert [p.pages for p in pages] == [count] * count and [p.page for p in pages] == list(range(count))
            assert [p.rows for p in pages] == [whole.rows[n:n + per_page] for n in range(0, len(whole.rows), per_page)]
            for page in pages:
                assert page.columns == whole.columns  # every column of the pinned grid, on every page
                assert page.cells == {k: v for k, v in whole.cells.items() if k[0] in page.rows}
            with pytest.raises(InputError, match=rf"page {count} is past the last page \({count - 1}\)"):
                grid_page(axes_db, GridRequest("axes", rows, columns, filters, count, per_page))
    by_prompt = grid_page(axes_db, GridRequest("axes", "prompt", "cfg", PER_PROMPT))
    assert by_prompt.rows == ("p-b", "p-a", "p-c")  # in the suite's order, not the ids'
    assert {cell.labels["cfg"] for cell in by_prompt.cells.values()} == {"4", "5", "6"}  # per prompt: the cell's own
    pending = grid_page(axes_db, GridRequest("axes", "seed", "checkpoint", V0 | {"prompt": "p-a"}))
    assert "9" not in pending.choices["seed"] and pending.rows == ("1", "2")  # a cell without an image is not shown


def test_the_axes_cache_reads_a_run_again_once_it_gains_cells_or_images(axes_db):
    from evalsvc.app.grid import AxesCache

    cache = AxesCache()
    first = cache.get(axes_db, "axes")
    assert cache.get(axes_db, "axes") is first and "3" not in first.choices["seed"]
    key = _sha("seed 3")
    axes_db.execute("INSERT INTO work (key, checkpoint, base, prompt, negative, seed, cfg, steps, sampler, width, "
                    "height, lora_scale, clip_skip, precision, state) SELECT ?, checkpoint, base, prompt, negative, 3, "
                    "cfg, steps, sampler, width, height, lora_scale, clip_skip, precision, state FROM work "
                    "WHERE key = (SELECT min(key) FROM samples)", [key])
    axes_db.execute("INSERT INTO grid_cells SELECT run, suite_hash, prompt_id, ?, setting FROM grid_cells "
                    "WHERE run = 'axes' AND key = (SELECT min(key) FROM samples) LIMIT 1", [key])
    assert cache.get(axes_db, "axes").choices == first.choices  # read again: a cell without its image shows nothing
    axes_db.execute("INSERT INTO samples (key, image_path, image_sha256, infotext) VALUES (?, 'ff/x.png', ?, '')",
                    [key, key])
    try:
        again = cache.get(axes_db, "axes")
        assert again is not first and "3" in again.choices["seed"]
    finally:
        for table in ("samples", "grid_cells", "work"):
            axes_db.execute(f"DELETE FROM {table} WHERE key = ?", [key])
