"""The grid view over the shortened demo run (base + 2 epochs x raw/EMA, 15 prompts, seed 1, CFG 5)."""

import pytest

from evalsvc.app.grid import GridRequest, grid_page
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
