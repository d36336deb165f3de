"""Import kohya sd-scripts sample-prompt files (`.txt`, `.toml`, `.json`) as suites.

The keys and options are those of sd-scripts' `library/train_util.py` (`line_to_prompt_dict`,
`load_prompts`, `sample_image_inference`). Where sd-scripts would silently ignore or clamp a bad
value, we refuse it with the file and line, so that an imported suite means what its author meant.
"""

from __future__ import annotations

import re
from pathlib import Path

from evalsvc.errors import SuiteError
from evalsvc.suites.model import (
    Suite,
    array_lines,
    derived_seed,
    entry_where,
    make_prompt,
    read_json,
    read_text,
    read_toml,
)

# `--x value` options of a txt line, and the keys of toml/json objects, mapped to PromptSpec fields.
OPTIONS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "l": "cfg", "s": "steps", "ss": "sampler"}
KEYS = {
    "prompt": "text",
    "negative_prompt": "negative",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "scale": "cfg",
    "sample_steps": "steps",
    "sample_sampler": "sampler",
}
_OPTION_START = re.compile(r"(?:^| )--")  # kohya splits on " --"; a line opening with "--" has no prompt
_UINT = re.compile(r"\d+")
_UFLOAT = re.compile(r"\d+\.?\d*|\.\d+")
_DESCRIPTION = "imported from kohya sd-scripts sample prompts"


def load_kohya(path: str | Path) -> Suite:
    """Load a kohya sample-prompt file; the format follows the extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return suite_from_txt(read_text(path), path)
    if suffix == ".toml":
        data, text = read_toml(path)
        return suite_from_kohya_toml(data, path, text)
    if suffix == ".json":
        return suite_from_kohya_json(read_json(path), path)
    raise SuiteError(f"{path}: not a kohya sample-prompt file (expected .txt, .toml or .json)")


def suite_from_txt(text: str, path: Path) -> Suite:
    """One prompt per line with `--` options; `#` comment lines and blank lines are skipped."""
    prompts = []
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        prompts.append(_spec(parse_line(line, where), f"line-{lineno}", where))
    return Suite(name=path.stem, prompts=tuple(prompts), source=str(path), description=_DESCRIPTION)


def parse_line(line: str, where: str) -> dict:
    """PromptSpec fields of one line such as `a cat --n blurry --w 768 --d 1` (no id, no derived seed)."""
    prompt, *options = _OPTION_START.split(line)
    fields = {"text": prompt.strip()}
    for option in options:
        name, _, value = option.strip().partition(" ")
        name, value = name.lower(), value.strip()
        if name not in OPTIONS:
            known = ", ".join(f"--{o}" for o in OPTIONS)
            raise SuiteError(f"{where}: unknown or unsupported option --{name} (known: {known})")
        field = OPTIONS[name]
        if field in fields:
            raise SuiteError(f"{where}: option --{name} given twice")
        if not value:
            raise SuiteError(f"{where}: option --{name} needs a value")
        fields[field] = _option_value(name, value, where)
    return fields


def _option_value(name: str, value: str, where: str):
    if name in ("n", "ss"):
        return value
    if name == "l":
        if not _UFLOAT.fullmatch(value):
            raise SuiteError(f"{where}: --l expects a positive number, got {value!r}")
        return float(value)
    if not _UINT.fullmatch(value):
        raise SuiteError(f"{where}: --{name} expects a non-negative integer, got {value!r}")
    return round_size(int(value)) if name in ("w", "h") else int(value)


def round_size(pixels: int) -> int:
    """kohya's rule for sample sizes: round down to a multiple of 8, at least 64."""
    return max(64, pixels - pixels % 8)


def suite_from_kohya_toml(data: dict, path: Path, text: str = "") -> Suite:
    """A `[prompt]` table of defaults merged into each `[[prompt.subset]]` (a subset's own keys win)."""
    unknown = [key for key in data if key != "prompt"]
    if unknown:
        raise SuiteError(f"{path}: unknown top-level key {unknown[0]!r} (a kohya prompt file has only [prompt])")
    table = data.get("prompt")
    if not isinstance(table, dict):
        raise SuiteError(f"{path}: 'prompt' must be a table ([prompt])")
    defaults = {key: value for key, value in table.items() if key != "subset"}
    _check_keys(defaults, f"{path}: [prompt]")
    subsets = table.get("subset", [])
    if not isinstance(subsets, list) or not all(isinstance(s, dict) for s in subsets):
        raise SuiteError(f"{path}: 'prompt.subset' must be an array of tables ([[prompt.subset]])")
    lines = array_lines(text, "prompt.subset")
    if len(lines) != len(subsets):
        lines = []
    prompts = []
    for index, subset in enumerate(subsets):
        where = entry_where(path, lines, index, f"prompt.subset[{index}]")
        _check_keys(subset, where)
        prompts.append(_spec(_object_fields({**defaults, **subset}, where), f"prompt-{index}", where))
    return Suite(name=path.stem, prompts=tuple(prompts), source=str(path), description=_DESCRIPTION)


def suite_from_kohya_json(data, path: Path) -> Suite:
    """A list whose items are txt-style lines (strings, options allowed) or objects with the toml keys."""
    if not isinstance(data, list):
        raise SuiteError(f"{path}: a kohya prompt file must hold a JSON list of strings or objects")
    prompts = []
    for index, item in enumerate(data):
        where = f"{path}: [{index}]"
        if isinstance(item, str):
            fields = parse_line(item.strip(), where)
        elif isinstance(item, dict):
            _check_keys(item, where)
            fields = _object_fields(item, where)
        else:
            raise SuiteError(f"{where}: expected a string or an object, got {item!r}")
        prompts.append(_spec(fields, f"prompt-{index}", where))
    return Suite(name=path.stem, prompts=tuple(prompts), source=str(path), description=_DESCRIPTION)


def _check_keys(obj: dict, where: str) -> None:
    for key in obj:
        if key not in KEYS:
            raise SuiteError(f"{where}: unknown or unsupported key {key!r} (known: {', '.join(KEYS)})")


def _object_fields(obj: dict, where: str) -> dict:
    """PromptSpec fields of a toml/json object; sizes follow the same rounding rule as txt options."""
    fields = {KEYS[key]: value for key, value in obj.items()}
    for key in ("text", "negative"):
        if isinstance(fields.get(key), str):
            fields[key] = fields[key].strip()
    for key in ("width", "height"):
        if key in fields:
            value = fields[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SuiteError(f"{where}: {key} must be a non-negative integer, got {value!r}")
            fields[key] = round_size(value)
    return fields


def _spec(fields: dict, prompt_id: str, where: str):
    if "text" not in fields:
        raise SuiteError(f"{where}: missing 'prompt'")
    if fields.get("seed") is None and isinstance(fields["text"], str):
        # kohya draws a fresh random seed for every sample when none is given; an evaluation must be
        # reproducible and paired across checkpoints, so we fix one derived from the prompt text and record it.
        fields = {**fields, "seed": derived_seed(fields["text"])}
    return make_prompt(where, id=prompt_id, **fields)
