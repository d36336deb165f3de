"""Prints what moved between two locks: `python scripts/lock_diff.py OLD NEW` (one line per package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evalsvc.lockfile import read_lock  # noqa: E402


def versions(path: str) -> dict[str, str]:
    """`{name: versions}`; a package pinned once per Python version or platform shows each pin's marker."""
    out: dict[str, list] = {}
    for pin in read_lock(Path(path)):
        out.setdefault(pin.name, []).append(pin)
    return {name: pins[0].version if len(pins) == 1 else ", ".join(f"{p.version} ({p.marker})" for p in pins)
            for name, pins in out.items()}


def main(old_path: str, new_path: str) -> int:
    old, new = versions(old_path), versions(new_path)
    lines = [f"  {name}: {old.get(name, '(new)')} -> {new.get(name, '(removed)')}"
             for name in sorted(old.keys() | new.keys()) if old.get(name) != new.get(name)]
    print(f"{len(lines)} package{'s' if len(lines) != 1 else ''} changed" + (":" if lines else ""))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
