"""The adapter corpus's figures: per case, the largest pixel difference (0-255) of our sampling against LyCORIS's
merged weights (strengths 1 and 0.6) and against LyCORIS's own trained forward, and how far the adapter moves the
image from the base. Uses the fixtures of tests/test_adapter_corpus.py (which asserts <= 1 for the first three).

    python scripts/adapter_parity.py      (from the repository root; about 3 minutes on 2 cores)
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_adapter_corpus as corpus  # noqa: E402

from evalsvc.adapters.read import read_adapter_layers  # noqa: E402
from evalsvc.checkpoints import load_tensors, read_header  # noqa: E402
from evalsvc.sampling.lora import WeightPatcher  # noqa: E402
from evalsvc.toy.tiny import build_sd15_pipeline, build_sdxl_pipeline  # noqa: E402


def main() -> None:
    print("| variant | arch | names | layers | vs merge, 1 | vs merge, 0.6 | vs forward | adapter vs base |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for variant, arch, wrapper in corpus.CASES:
        path, merged, trained = corpus._write_lycoris(Path(tempfile.mkdtemp()), variant, arch, wrapper)
        ours = (build_sdxl_pipeline if arch == "sdxl" else build_sd15_pipeline)(seed=0)
        base = corpus._pixels(ours, "base")
        layers = read_adapter_layers(path, load_tensors(path), read_header(path).metadata, ours)
        patcher = WeightPatcher(ours)
        merges = []
        for strength in corpus.STRENGTHS:
            patcher.apply(path, layers, strength)
            pixels = corpus._pixels(ours, f"lora:{strength}")
            reference = corpus._pixels(corpus._reference_pipeline(merged, strength, arch), "base")
            merges.append(int(np.abs(pixels - reference).max()))
            if strength == 1.0:
                forward = int(np.abs(pixels - corpus._pixels(trained, "base")).max())
                moved = int(np.abs(pixels - base).max())
        print(f"| {variant} | {arch} | {wrapper} | {len(layers)} | {merges[0]} | {merges[1]} | {forward} | {moved} |",
              flush=True)


if __name__ == "__main__":
    main()
