"""Import OneTrainer `samples.json` (its sample definitions) as a suite.

Keys are those of OneTrainer's `SampleConfig`; keys we have no use for (text-encoder layer skip,
frames, ...) are ignored, disabled entries are skipped, inpainting samples are refused.
"""

from __future__ import annotations

from pathlib import Path

from evalsvc.errors import SuiteError
from evalsvc.suites.model import Suite, derived_seed, make_prompt, read_json

# Keys whose presence marks a JSON list as OneTrainer's rather than kohya's.
MARKER_KEYS = ("diffusion_steps", "cfg_scale", "noise_scheduler", "random_seed")
DEFAULT_SEED = 42  # OneTrainer's own default when an entry has no `seed`
_FIELDS = {"width": "width", "height": "height", "diffusion_steps": "steps", "cfg_scale": "cfg"}


def load_onetrainer(path: str | Path) -> Suite:
    """Load a OneTrainer samples.json file."""
    path = Path(path)
    return suite_from_samples(read_json(path), path)


def is_onetrainer_samples(data) -> bool:
    """True for a JSON list whose objects carry OneTrainer's sample keys."""
    return isinstance(data, list) and any(isinstance(i, dict) and any(k in i for k in MARKER_KEYS) for i in data)


def suite_from_samples(data, path: Path) -> Suite:
    """Build a Suite from parsed samples.json; ids are `sample-<index in the file>`."""
    if not isinstance(data, list):
        raise SuiteError(f"{path}: OneTrainer samples must be a JSON list of objects")
    prompts = []
    for index, entry in enumerate(data):
        where = f"{path}: [{index}]"
        if not isinstance(entry, dict):
            raise SuiteError(f"{where}: expected an object, got {entry!r}")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise SuiteError(f"{where}: 'enabled' must be true or false, got {enabled!r}")
        if enabled:
            prompts.append(make_prompt(where, id=f"sample-{index}", **_fields(entry, where)))
    description = "imported from OneTrainer samples"
    return Suite(name=path.stem, prompts=tuple(prompts), source=str(path), description=description)


def _fields(entry: dict, where: str) -> dict:
    if entry.get("sample_inpainting") is True:
        raise SuiteError(f"{where}: inpainting samples are not supported")
    text = entry.get("prompt")
    if not isinstance(text, str):
        raise SuiteError(f"{where}: 'prompt' must be a string, got {text!r}")
    negative = entry.get("negative_prompt", "")
    fields = {"text": text.strip(), "negative": negative.strip() if isinstance(negative, str) else negative}
    for key, field in _FIELDS.items():
        if entry.get(key) is not None:
            fields[field] = entry[key]
    for key in ("width", "height"):
        value = fields.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 64:
            fields[key] = value - value % 8  # OneTrainer's latents are size // 8, so the image is rounded down
    scheduler = entry.get("noise_scheduler")
    if scheduler is not None:
        if not isinstance(scheduler, str):
            raise SuiteError(f"{where}: 'noise_scheduler' must be a string, got {scheduler!r}")
        fields["sampler"] = scheduler
    random_seed = entry.get("random_seed", False)
    if not isinstance(random_seed, bool):
        raise SuiteError(f"{where}: 'random_seed' must be true or false, got {random_seed!r}")
    # OneTrainer draws a fresh seed per sample when random_seed is on; we fix one derived from the
    # prompt (the same rule as kohya imports) so that every checkpoint is sampled from the same noise.
    fields["seed"] = derived_seed(fields["text"]) if random_seed else entry.get("seed", DEFAULT_SEED)
    return fields
