"""The Jobs tab: queue sampling or scoring of a run for the app's workers, follow every job (its arguments,
state, cells done and time left) and cancel one.

Named API endpoints `queue_job`, `cancel_job` and `jobs`. Jobs queued by `evalsvc sample/score/add/watch/train`
while the app owns the store show up here too.
"""

from dataclasses import dataclass
from pathlib import PurePath

from ..errors import InputError

JOB_HEADERS = ["job", "command", "run", "arguments", "state", "progress", "time left", "by", "queued", "finished",
               "exit", "last line"]
HIDDEN_ARGS = ("run", "losses")  # the run has its column; a trainer's loss rows are data, not arguments
ARGS_WIDTH = 120


@dataclass(frozen=True)
class JobForm:
    """The tab's fields as typed: comma lists as text, empty meaning the suite's (or the default)."""

    command: str
    run: str
    suite: str = ""
    seeds: str = ""
    cfgs: str = ""
    steps: str = ""
    samplers: str = ""
    lora_scales: str = ""
    score: bool = False
    metrics: str = ""
    backbone: str = ""


def job_request(form: JobForm) -> dict:
    """The job's JSON arguments from the tab's fields, checked as the command line would check them."""
    from ..work import check_sample_args, namespace, score_config

    command = form.command
    if command not in ("sample", "score"):
        raise InputError(f"command must be sample or score, got {command!r}")
    if not (form.run or "").strip():
        raise InputError("choose a run")
    args: dict = {"run": form.run}
    if command == "sample":
        args.update(suite=(form.suite or "").strip() or None, seeds=_numbers("seeds", form.seeds, int),
                    cfg=_numbers("CFG values", form.cfgs, float), steps=_numbers("steps", form.steps, int),
                    sampler=[v.strip() for v in (form.samplers or "").split(",") if v.strip()] or None,
                    score=bool(form.score))
        scales = _numbers("LoRA strengths", form.lora_scales, float)
        if scales:
            args["lora_scale"] = scales
    if command == "score" or form.score:
        args.update(metrics=(form.metrics or "").strip() or None, backbone=(form.backbone or "").strip() or None)
    checked = namespace(command, args)
    if command == "sample":
        check_sample_args(checked)
    else:
        score_config(checked, checked.device)
    return args


def _numbers(name: str, text, kind) -> list | None:
    values = []
    for item in (v.strip() for v in str(text or "").split(",")):
        if not item:
            continue
        try:
            values.append(kind(item))
        except ValueError:
            raise InputError(f"{name}: {item!r} in {text!r} is not a number") from None
    return values or None


def args_text(args: dict) -> str:
    """A job's arguments in one short line: `suite=tiny.toml seeds=1,2 cfg=5,7 score`, unset ones left out."""
    def plain(value) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, str) and value.startswith("/"):
            return PurePath(value).name  # the full path is in the job's JSON
        if isinstance(value, list):
            return ",".join("x".join(map(plain, v)) if isinstance(v, list) else plain(v) for v in value)
        return str(value)

    parts = [name if value is True else f"{name}={plain(value)}" for name, value in args.items()
             if name not in HIDDEN_ARGS and value not in (None, False, [], "")]
    text = " ".join(parts)
    return text if len(text) <= ARGS_WIDTH else text[:ARGS_WIDTH - 1] + "…"


def job_rows(db, limit: int = 50) -> list[list]:
    from ..jobs import JobProgress, list_jobs

    def when(t):
        return t.strftime("%Y-%m-%d %H:%M:%S") if t else ""

    def last_line(text):
        lines = (text or "").strip().splitlines()
        return lines[-1] if lines else ""

    rows = []
    for j in list_jobs(db, limit):
        progress = JobProgress.of(j)
        state = f"{j.state} (cancel asked)" if j.state == "running" and j.cancel_at else j.state
        rows.append([j.id, j.command, j.run, args_text(j.args), state, progress.cells, progress.eta, j.submitted_by,
                     when(j.submitted_at), when(j.finished_at), "" if j.exit_code is None else j.exit_code,
                     last_line(j.output)])
    return rows


def cancel_note(job) -> str:
    """What a cancel did, for the tab's status line."""
    if job.state == "cancelled":
        return f"job {job.id} cancelled before it started"
    if job.state == "running":
        return (f"job {job.id} stops before its next sampling batch; the cells it finished are kept "
                "(scoring, once started, runs to its end)")
    return f"job {job.id} ended {job.state} before it could be stopped"


def _job_id(text) -> int:
    try:
        return int(str(text or "").strip())
    except ValueError:
        raise InputError(f"job: {text!r} is not a job number") from None


def jobs_tab(state, run) -> list:
    """The tab's layout and events, inside the main page's Blocks; `run` is the page's run dropdown. Returns the
    controls only admins may use."""
    import gradio as gr

    from ..jobs import cancel, submit

    def queue(run, command, suite, seeds, cfgs, steps, score, metrics, backbone, samplers, lora_scales,
              request: gr.Request):
        try:
            state.require(request, "may_act")
            args = job_request(JobForm(command, run, suite or "", seeds or "", cfgs or "", steps or "",
                                       samplers or "", lora_scales or "", bool(score), metrics or "", backbone or ""))
            with state.cursor() as db:
                job_id = submit(db, command, args, state.user(request))
        except InputError as exc:
            raise gr.Error(str(exc)) from None
        state.workers.wake()
        with state.cursor() as db:
            return f"queued job {job_id}", job_rows(db)

    def stop(job_text, request: gr.Request):
        try:
            state.require(request, "may_act")
            job_id = _job_id(job_text)
            with state.cursor() as db:
                job = cancel(db, job_id, state.user(request))
        except InputError as exc:
            raise gr.Error(str(exc)) from None
        with state.cursor() as db:
            return cancel_note(job), job_rows(db)

    def show():
        with state.cursor() as db:
            return job_rows(db)

    with gr.Tab("Jobs"):
        gr.Markdown("Sampling and scoring run here in the background; commands run while the app is up "
                    "(`evalsvc sample`, `score`, `add`, `watch`, `train`) queue theirs here too.")
        with gr.Row():
            command = gr.Dropdown(["sample", "score"], value="sample", label="command")
            suite = gr.Textbox(label="suite (name or .toml; empty: the run's queued cells)")
            seeds = gr.Textbox(label="seeds (e.g. 1,2,3; empty: the suite's)")
            cfgs = gr.Textbox(label="CFG values (e.g. 5,7; empty: the suite's)")
            steps = gr.Textbox(label="steps (e.g. 20,30; empty: the suite's)")
        with gr.Row():
            samplers = gr.Textbox(label="samplers (e.g. euler,dpmpp_2m_karras; empty: the suite's)")
            lora_scales = gr.Textbox(label="LoRA strengths (e.g. 0.6,0.8,1; empty: 1)")
        with gr.Row():
            score = gr.Checkbox(value=True, label="score after sampling")
            metrics = gr.Textbox(label="metrics (empty: every registered scorer)")
            backbone = gr.Textbox(label="CLIP backbone (empty: the run's last, else the default; 'toy': the toy CLIP)")
        button = gr.Button("Queue job", variant="primary", interactive=state.gate is None)  # admins: `role_view`
        status = gr.Markdown()
        table = gr.Dataframe(headers=JOB_HEADERS, label="jobs, newest first")
        with gr.Row():
            refresh = gr.Button("Refresh jobs")
            job_id = gr.Textbox(label="job number to cancel (a running job stops at its next batch)")
            cancel_button = gr.Button("Cancel job", variant="stop", interactive=state.gate is None)
        button.click(queue, [run, command, suite, seeds, cfgs, steps, score, metrics, backbone, samplers, lora_scales],
                     [status, table],
                     api_name="queue_job")
        cancel_button.click(stop, [job_id], [status, table], api_name="cancel_job")
        refresh.click(show, None, table, api_name="jobs")
        gr.Timer(5).tick(show, None, table, api_visibility="private")
    return [button, cancel_button]
