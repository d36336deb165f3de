"""Scoring benchmark: `evalsvc score` on a sampled grid against the naive per-metric, per-image way,
and against the time it took to sample that grid.

    . .venv/bin/activate
    HF_HUB_OFFLINE=1 python bench/scoring.py                       # runs the demo into a temp store first
    HF_HUB_OFFLINE=1 python bench/scoring.py --store evalsvc-store  # a store the demo already sampled

On a copy of the store with every score and embedding removed, in one process:

  ours   `score_run` with every scorer (the toy CLIP, the demo's training images as the reference):
         each image embedded once per backbone in batches, the embeddings cached in the store and read
         by every CLIP-based metric, one transaction per scorer.
  naive  what a script per metric does: for each CLIP-based metric (clip_t, clip_i, nearest_train,
         memorised, diversity, kid, drift_clip) every image it needs is opened and embedded again,
         one at a time (batch of 1), and the reference set is embedded again per metric. The metric
         arithmetic itself is not timed (it is the same in both); only the embedding passes are.
  sample the grid's sampling time: the sum of the engine's per-image seconds stored with each sample
         (batched sampling time shared out over the batch's images; no imports, no pipeline load).

The one-time imports of a scoring process (open_clip, torchmetrics: several seconds cold) are timed
apart and reported both ways: without them, as the sampling figure is, and added.

Prints seconds and the ratios ours / sample (the issue's bound: <= 10%) and naive / ours, and writes
everything with versions, CPU count and load average to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def _demo_store(folder: Path) -> Path:
    from evalsvc.demo import run_demo

    root = folder / "store"
    if run_demo(root, progress=False) != 0:
        raise SystemExit("the demo failed; see its output")
    return root


def _fresh_copy(store_root: Path, folder: Path) -> Path:
    target = folder / "bench-store"
    shutil.copytree(store_root, target, ignore=shutil.ignore_patterns("lock"))
    import duckdb

    db = duckdb.connect(str(target / "evalsvc.duckdb"))
    for table in ("scores", "set_scores", "embeddings"):
        db.execute(f"DELETE FROM {table}")
    db.close()
    return target


def _naive_seconds(store, run: str, reference: Path) -> float:
    """Embedding passes a per-metric script makes: every needed image, one at a time, per metric."""
    from PIL import Image

    from evalsvc.scoring.backbone import BackboneSpec, ClipBackbone
    from evalsvc.scoring.cells import run_cells
    from evalsvc.scoring.reference import reference_images

    backbone = ClipBackbone(BackboneSpec.toy())
    cells = run_cells(store, run)
    holdout = [c for c in cells if c.prompt_role == "holdout"]
    references = list(reference_images(reference).values())
    needs = {"clip_t": (cells, False), "clip_i": (cells, True), "nearest_train": (cells, True),
             "memorised": (cells, True), "diversity": (cells, False), "kid": (cells, True),
             "drift_clip": (holdout, False)}
    started = time.perf_counter()
    for _, (chosen, with_reference) in needs.items():
        paths = [c.image_path for c in chosen] + (references if with_reference else [])
        for path in paths:
            with Image.open(path) as image:
                backbone.embed_images([image.convert("RGB")])
    return time.perf_counter() - started


def _import_scoring_libraries() -> None:
    """The one-time imports of a scoring process, timed apart from the scoring work."""
    import open_clip  # noqa: F401
    import torchmetrics.image.kid  # noqa: F401
    import torchmetrics.image.fid  # noqa: F401
    import torchmetrics.functional.image  # noqa: F401


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="a store the demo sampled (default: run the demo first)")
    parser.add_argument("--run", default="purple")
    parser.add_argument("--out", type=Path, default=Path("bench/out/scoring.json"))
    args = parser.parse_args(argv)

    from evalsvc.scoring.backbone import BackboneSpec
    from evalsvc.scoring.registry import ScoreConfig
    from evalsvc.scoring.runner import score_run
    from evalsvc.store import open_store

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = args.store or _demo_store(tmp)
        root = _fresh_copy(source, tmp)
        reference = root / "demo-models" / "purple-data"
        if not reference.is_dir():
            reference = Path(source) / "demo-models" / "purple-data"
        with open_store(root) as store:
            images, sample_seconds = store.db.execute(
                "SELECT count(*), sum(s.seconds) FROM samples s JOIN grid_cells g ON g.key = s.key "
                "WHERE g.run = ?", [args.run]).fetchone()
            config = ScoreConfig(backbone=BackboneSpec.toy(), reference=reference, progress=False)
            imported = time.perf_counter()
            _import_scoring_libraries()
            import_seconds = time.perf_counter() - imported
            started = time.perf_counter()
            report = score_run(store, args.run, config)
            ours = time.perf_counter() - started
            naive = _naive_seconds(store, args.run, reference)
    result = {
        "images": images, "sample_seconds": sample_seconds, "score_seconds": ours, "import_seconds": import_seconds,
        "score_with_import_over_sample": (ours + import_seconds) / sample_seconds,
        "naive_embedding_seconds": naive, "score_over_sample": ours / sample_seconds,
        "naive_over_ours": naive / ours, "per_metric_seconds": report.timings, "computed": report.computed,
        "skipped": report.skipped, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{images} images; sampling took {sample_seconds:.1f} s")
    print(f"ours   {ours:8.1f} s  = {ours / sample_seconds:.1%} of the sampling time (bound: 10%)")
    print(f"       + {import_seconds:.1f} s importing open_clip and torchmetrics once per process (the sampling "
          f"figure leaves out its imports and pipeline load too) = {(ours + import_seconds) / sample_seconds:.1%}")
    print(f"naive  {naive:8.1f} s  (embedding passes alone) = {naive / ours:.1f}x ours")
    print("per metric: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
