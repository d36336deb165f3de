"""`evalsvc demo`: the whole engine on built-in tiny models, offline, in about a minute on a CPU.

Until the toy world's trained models arrive (issue 3), the demo builds a tiny random-weight
SD1.5-architecture base and three kohya-format LoRA epochs, registers them, and samples a
grid of the `toy` suite through the same code paths real checkpoints take.
"""

from __future__ import annotations

from pathlib import Path

DEMO_RUN = "demo"


def prepare_demo_models(root: Path) -> tuple[Path, list[Path]]:
    """The tiny base as a diffusers folder and three LoRA epochs under `root` (built once)."""
    from .toy.lora_files import write_kohya_epochs
    from .toy.tiny import build_sd15_pipeline

    base_dir = root / "tiny-sd15"
    lora_dir = root / "loras"
    if not (base_dir / "model_index.json").exists() or not lora_dir.exists():
        pipe = build_sd15_pipeline(seed=0)
        pipe.save_pretrained(base_dir, safe_serialization=True)
        write_kohya_epochs(pipe, lora_dir, name="toylora", epochs=3, rank=4, seed=0)
    return base_dir, sorted(lora_dir.glob("*.safetensors"))


def run_demo(store_path: Path | None, progress: bool = True) -> int:
    from .catalog import add_checkpoints
    from .sampling.grid import GridOptions
    from .sampling.runner import RunnerConfig, sample_run
    from .status import render_status, store_status
    from .store import default_store_path, open_store
    from .suites import load_suite

    root = Path(store_path) if store_path is not None else default_store_path()
    with open_store(root) as store:
        base_dir, loras = prepare_demo_models(root / "demo-models")
        add_checkpoints(store, loras, DEMO_RUN, base=base_dir)
        options = GridOptions(seeds=(1, 2), cfgs=(4.0, 7.0), steps=12, sampler="euler_a", size=(64, 64))
        report = sample_run(store, DEMO_RUN, load_suite("toy"), options, RunnerConfig(progress=progress))
        print(render_status(store_status(store.db)))
    print(f"\ndemo grid: {report.cells_total} cells ({report.sampled} sampled now) in {root / 'images'}")
    print(f"every PNG carries A1111 infotext; see `evalsvc status --store {root}`")
    return 0 if not report.failed else 1
