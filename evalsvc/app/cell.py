"""One grid image enlarged: what made it (checkpoint, prompt, seed, CFG, sampler... and its infotext) and its scores."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from html import escape

from ..errors import InputError
from ..sampling.engine import CellSpec
from ..scoring.audit import Neighbour, TrainingNeighbours


@dataclass(frozen=True)
class CellScore:
    metric: str
    value: float | None
    higher_is_better: bool | None  # None: a metric the registry no longer knows
    version: str


@dataclass(frozen=True)
class CellDetails:
    run: str
    key: str
    image: str  # the store's relative image name, ab/<sha256>.png
    checkpoint: str  # file name
    weights: str  # base / raw / EMA
    epoch: int | None
    prompt_id: str
    spec: CellSpec  # prompt, negative, seed, CFG, steps, sampler, size, clip skip
    lora_scale: float
    precision: str
    infotext: str  # the PNG's A1111 `parameters` text as stored
    scores: tuple[CellScore, ...]
    neighbours: tuple[Neighbour, ...] = ()  # its nearest training images (the dataset audit), when known
    neighbours_note: str = ""  # why they are not shown

    def as_json(self) -> dict:
        """Flat: the spec's fields beside the others."""
        fields = asdict(self)
        fields["neighbours"] = [{"file": str(n.file), "similarity": n.similarity} for n in self.neighbours]
        return {**asdict(self.spec), **{k: v for k, v in fields.items() if k != "spec"}}


def cell_details(db, run: str, key: str, neighbours: TrainingNeighbours | None = None) -> CellDetails:
    """The image `key` of `run`'s grid with everything that made it, its per-image scores (registry order) and,
    given `neighbours`, its nearest training images from the embeddings the store holds."""
    from ..scoring.registry import scorer_registry

    row = db.execute(
        "SELECT s.image_path, c.file_name, rc.role, c.ema, c.epoch, g.prompt_id, w.prompt, w.negative, w.seed, w.cfg, "
        "w.steps, w.sampler, w.width, w.height, w.lora_scale, w.clip_skip, w.precision, s.infotext, s.image_sha256 "
        "FROM grid_cells g JOIN work w ON w.key = g.key JOIN samples s ON s.key = g.key "
        "JOIN checkpoints c ON c.sha256 = w.checkpoint JOIN run_checkpoints rc ON rc.run = g.run "
        "AND rc.sha256 = c.sha256 WHERE g.run = ? AND g.key = ?", [run, key]).fetchone()
    if row is None:
        raise InputError(f"run {run!r} has no sampled image with key {key!r}")
    (image, checkpoint, role, ema, epoch, prompt_id, prompt, negative, seed, cfg, steps, sampler, width, height,
     lora_scale, clip_skip, precision, infotext, image_sha256) = row
    registry = scorer_registry()
    order = {name: i for i, name in enumerate(registry)}
    stored = db.execute("SELECT metric, value, version FROM scores WHERE key = ?", [key]).fetchall()
    scores = tuple(CellScore(metric, None if value is None else float(value),
                             registry[metric].higher_is_better if metric in registry else None, version)
                   for metric, value, version in sorted(stored, key=lambda r: (order.get(r[0], len(order)), r[0])))
    weights = "base" if role == "base" else ("EMA" if ema else "raw")
    spec = CellSpec(prompt, negative, int(seed), float(cfg), int(steps), sampler, int(width), int(height),
                    int(clip_skip))
    nearest, note = neighbours.of(db, run, image_sha256) if neighbours is not None else ((), "")
    return CellDetails(run, key, image, checkpoint, weights, epoch, prompt_id, spec, float(lora_scale), precision,
                       infotext, scores, nearest, note)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def _neighbours_html(d: CellDetails) -> str:
    """Its nearest training images, by folder and file name (kohya's `3_purple/img_007.png`), with similarity."""
    if not d.neighbours:
        return f'<p class="evs-note">{escape(d.neighbours_note)}</p>' if d.neighbours_note else ""
    rows = "".join(f"<tr><th>{escape(n.file.parent.name + '/' + n.file.name)}</th><td>{n.similarity:.3f}</td></tr>"
                   for n in d.neighbours)
    return f"<h4>nearest training images</h4><table>{rows}</table>"


def cell_html(details: CellDetails) -> str:
    """The enlarged image beside its settings and scores, as a lightbox (the app's CSS places it over the page)."""
    d, spec = details, details.spec
    epoch = "" if d.epoch is None else f", epoch {d.epoch}"
    settings = [("prompt", spec.prompt), ("negative prompt", spec.negative or "–"), ("prompt id", d.prompt_id),
                ("seed", str(spec.seed)), ("CFG", f"{spec.cfg:g}"), ("steps", str(spec.steps)),
                ("sampler", spec.sampler), ("size", f"{spec.width}×{spec.height}"), ("LoRA scale", f"{d.lora_scale:g}"),
                ("clip skip", str(spec.clip_skip)), ("precision", d.precision), ("key", d.key)]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in settings)
    arrows = {True: " ↑", False: " ↓", None: ""}
    scores = "".join(f"<tr><th>{escape(s.metric)}{arrows[s.higher_is_better]}</th><td>{_fmt(s.value)}</td></tr>"
                     for s in d.scores) or '<tr><td colspan="2">no scores yet</td></tr>'
    return (f'<div class="evs-lightbox" data-key="{escape(d.key)}"><div class="evs-box">'
            '<a href="#" class="evs-close" title="close (Esc)">×</a>'
            f'<a class="evs-big" href="/image/{escape(d.image)}" target="_blank">'
            f'<img src="/image/{escape(d.image)}" alt="{escape(spec.prompt)}"></a>'
            f'<div class="evs-info"><h3>{escape(d.checkpoint)} ({escape(d.weights)}{epoch})</h3>'
            f'<table>{rows}</table><h4>scores</h4><table>{scores}</table>{_neighbours_html(d)}'
            f'<h4>infotext</h4><pre>{escape(d.infotext)}</pre></div></div></div>')
