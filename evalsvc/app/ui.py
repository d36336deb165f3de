"""The Gradio layout: tabs and event wiring only; every answer comes from `evalsvc` modules.

Two pages: the main one at `/` (tabs Grid, Compare, Curves, Blind vote, Leaderboard, Decide, Jobs; named API
endpoints `grid`, `cell`, `compare`, `curves`, `leaderboard`, `decide`, `decisions`, `queue_job`, `jobs`) and the blind-vote page at `/vote/`
(`next_pair`, `vote`), which shows nothing that identifies a checkpoint before the vote. Each tab of the main
page is built by one `*_tab(state, run)` function, `run` being the page's run dropdown.
"""

import contextlib
from html import escape

from ..errors import InputError
from .assets import CURVES_CSS, GRID_CSS, GRID_JS, LIGHTBOX_CSS, LIGHTBOX_JS, SLIDER_CSS, SLIDER_JS
from .grid import AXES, GridRequest, grid_page
from .jobs_tab import jobs_tab

DEFAULT = "(first)"
BEST_SETTING = "best"  # the Compare tab's setting choice: each checkpoint at its own best setting


def _voter(request) -> str:
    return getattr(request, "username", None) or "local"


@contextlib.contextmanager
def _user_errors():
    """InputError shown to the user as a Gradio error (one line, no traceback)."""
    import gradio as gr

    try:
        yield
    except InputError as exc:
        raise gr.Error(str(exc)) from None


def grid_html(state, run: str, rows: str, columns: str, filters: dict[str, str], page: int) -> str:
    """One grid page as an HTML table of `/image/...` thumbnails with each cell's settings as a tooltip; clicking
    one shows it enlarged with its infotext and scores (`data-key` names the image)."""
    with state.cursor() as db:
        result = grid_page(db, GridRequest(run, rows, columns, filters, int(page), state.config.rows_per_page))
    head = "".join(f"<th>{escape(c)}</th>" for c in result.columns)
    body = []
    for row in result.rows:
        cells = []
        for column in result.columns:
            image = result.cells.get((row, column))
            if image is None:
                cells.append("<td></td>")
                continue
            title = escape(image.tooltip())
            cells.append(f'<td><a href="/image/{image.image}" target="_blank"><img src="/image/{image.image}" '
                         f'data-key="{image.key}" title="{title}" width="128" loading="lazy"></a></td>')
        body.append(f"<tr><th>{escape(row)}</th>{''.join(cells)}</tr>")
    pinned = ", ".join(f"{a} = {v}" for a, v in result.pinned.items())
    return (f"<p>page {result.page + 1} of {result.pages}; {escape(pinned)}; click an image to enlarge it</p>"
            f'<table class="evs-grid"><tr><th>{escape(rows)} \\ {escape(columns)}</th>{head}</tr>'
            f"{''.join(body)}</table>")


def _grid_choices(state, run) -> dict[str, tuple[str, ...]]:
    """Every value of every grid axis in `run` (empty for no run or a run without images)."""
    if not run:
        return {axis: () for axis in AXES}
    with state.cursor() as db:
        try:
            return grid_page(db, GridRequest(run)).choices
        except InputError:
            return {axis: () for axis in AXES}


def _filterable(axis: str, choices: dict[str, tuple[str, ...]]) -> bool:
    """Whether the Grid shows a filter for `axis`: the core axes always, a setting axis when it varies."""
    return axis in ("checkpoint", "weights", "cfg", "seed", "prompt") or len(choices[axis]) > 1


def grid_tab(state, run) -> None:
    """Any two axes as rows and columns, the others as filters (dropdowns of the run's values); click to enlarge."""
    import gradio as gr

    from .cell import cell_details, cell_html

    def show_grid(run, rows, columns, *values):
        *values, page = values  # one filter per axis, in AXES order, then the page
        filters = {axis: value for axis, value in zip(AXES, values) if value and value != DEFAULT}
        with _user_errors():
            return grid_html(state, run, rows, columns, filters, int(page or 0))

    def refresh_filters(run):
        choices = _grid_choices(state, run)
        return [gr.update(choices=[DEFAULT, *choices[axis]], value=DEFAULT, visible=_filterable(axis, choices))
                for axis in AXES]

    def cell(run: str, key: str) -> dict:
        """One grid image's settings, infotext and per-image scores."""
        with state.cursor() as db, _user_errors():
            return cell_details(db, run, key).as_json()

    def enlarge(run, event: gr.EventData):
        key = (getattr(event, "_data", None) or {}).get("key")
        if not key:
            return gr.skip()
        with state.cursor() as db, _user_errors():
            return cell_html(cell_details(db, run, key))

    choices = _grid_choices(state, run.value)
    with gr.Tab("Grid"):
        with gr.Row():
            rows = gr.Dropdown(list(AXES), value="prompt", label="rows")
            columns = gr.Dropdown(list(AXES), value="checkpoint", label="columns")
            page = gr.Number(value=0, precision=0, minimum=0, label="page")
        with gr.Row():
            filters = [gr.Dropdown([DEFAULT, *choices[axis]], value=DEFAULT, label=f"{axis} filter",
                                   allow_custom_value=True, visible=_filterable(axis, choices)) for axis in AXES]
        show = gr.Button("Show grid")
        grid = gr.HTML(js_on_load=GRID_JS, css_template=GRID_CSS)
        enlarged = gr.HTML(js_on_load=LIGHTBOX_JS, css_template=LIGHTBOX_CSS)
        show.click(show_grid, [run, rows, columns, *filters, page], grid, api_name="grid")
        grid.click(enlarge, run, enlarged, api_visibility="private")
        gr.api(cell, api_name="cell")
        run.change(refresh_filters, run, filters, api_visibility="private")


def vote_tab(state, run) -> None:
    import gradio as gr

    with gr.Tab("Blind vote"):
        gr.Markdown("Blind votes have a page of their own, [/vote/](/vote/), that shows nothing but the two "
                    "images and the prompt: send voters there.")


def compare_tab(state, run) -> None:
    """Two checkpoints on one prompt and seed, at one setting or each at its best: overlay slider, metrics, deltas."""
    import gradio as gr

    from .compare import (CompareRequest, compare, compare_choices, comparison_html, comparison_summary,
                          delta_headers, delta_rows)

    def choices_of(run):
        with state.store.thread_view() as store:
            return compare_choices(store, run) if run else None

    def refresh(run):
        c = choices_of(run)
        if c is None:
            return [gr.update(choices=[], value=None)] * 5
        return [gr.update(choices=list(c.checkpoints), value=c.default_a),
                gr.update(choices=list(c.checkpoints), value=c.default_b),
                gr.update(choices=list(c.prompts), value=c.prompts[0] if c.prompts else None),
                gr.update(choices=[str(s) for s in c.seeds], value=str(c.seeds[0]) if c.seeds else None),
                gr.update(choices=[BEST_SETTING, *c.settings], value=BEST_SETTING)]

    def show_compare(run, a, b, prompt, seed, setting):
        with _user_errors():
            try:
                seed = int(seed)
            except (TypeError, ValueError):
                raise InputError(f"seed must be an integer, got {seed!r}") from None
            setting = None if setting in (None, "", BEST_SETTING) else str(setting)
            with state.store.thread_view() as store:
                result = compare(store, CompareRequest(run, a or "", b or "", prompt or "", seed, setting))
        return (comparison_html(result), comparison_summary(result),
                {"headers": delta_headers(result.confidence), "data": delta_rows(result)})

    c = choices_of(run.value)
    with gr.Tab("Compare"):
        with gr.Row():
            a = gr.Dropdown(list(c.checkpoints) if c else [], value=c and c.default_a, label="A")
            b = gr.Dropdown(list(c.checkpoints) if c else [], value=c and c.default_b, label="B")
        with gr.Row():
            prompt = gr.Dropdown(list(c.prompts) if c else [], value=c.prompts[0] if c and c.prompts else None,
                                 label="prompt")
            seed = gr.Dropdown([str(s) for s in c.seeds] if c else [],
                               value=str(c.seeds[0]) if c and c.seeds else None, label="seed")
            cfg = gr.Dropdown([BEST_SETTING, *c.settings] if c else [BEST_SETTING], value=BEST_SETTING,
                              label="setting (best: each at its own best setting; or AXIS=VALUE,...)",
                              allow_custom_value=True)
        go = gr.Button("Compare", variant="primary")
        summary = gr.Markdown()
        view = gr.HTML(js_on_load=SLIDER_JS, css_template=SLIDER_CSS)
        table = gr.Dataframe(headers=delta_headers(), label="metrics (↑ higher is better, ↓ lower)")
        go.click(show_compare, [run, a, b, prompt, seed, cfg], [view, summary, table], api_name="compare")
        run.change(refresh, run, [a, b, prompt, seed, cfg], api_visibility="private")


def curves_tab(state, run) -> None:
    """Every metric against the epoch with intervals and the loss, the recommendation and the latest decision."""
    import gradio as gr

    from .curves import curves_html, decision_markdown, gather_curves, portability_section, recommendation_markdown

    def show_curves(run):
        with _user_errors(), state.store.thread_view() as store:
            curves = gather_curves(store, run or "")
        return (recommendation_markdown(curves.report), decision_markdown(curves.decision),
                portability_section(curves.report) + f'<div class="evs-curves">{curves_html(curves.report)}</div>')

    with gr.Tab("Curves"):
        show = gr.Button("Show curves", variant="primary")
        recommendation = gr.Markdown()
        decision = gr.Markdown()
        plots = gr.HTML(css_template=CURVES_CSS)
        show.click(show_curves, run, [recommendation, decision, plots], api_name="curves")


def leaderboard_tab(state, run) -> None:
    import gradio as gr

    from ..setting import Setting, varying_axes
    from .leaderboard import human_leaderboard, metric_agreement, voted_settings

    def show_leaderboard(run):
        with state.cursor() as db:
            board = human_leaderboard(db, run)
            agreement = metric_agreement(db, run)
            voted = [Setting.from_key(k) for k in voted_settings(db, run)]
            names = dict(db.execute("SELECT sha256, file_name FROM checkpoints").fetchall())
        table = [[i + 1, r.player, round(r.rating), f"{r.ci_low:.0f} to {r.ci_high:.0f}" if r.votes else "no votes",
                  r.votes]
                 for i, r in enumerate(board.ratings)]
        agree = [[a.metric, f"{a.share:.0%}", f"{a.ci_low:.0%} to {a.ci_high:.0%}", a.votes] for a in agreement]
        needed = board.votes_to_separate_top_two
        note = ("no votes yet" if not any(r.votes for r in board.ratings) else
                f"about {needed:.0f} more votes to separate the top two" if needed not in (None, float("inf")) else
                "the top two are tied so far")
        if len(voted) > 1:  # votes at different settings are never pooled
            note += (f"; ranked from the votes at {voted[0].label(varying_axes(voted), names)}, the setting with the most "
                     f"votes ({len(voted)} settings have votes)")
        return table, agree, note

    with gr.Tab("Leaderboard"):
        refresh = gr.Button("Refresh")
        ratings = gr.Dataframe(headers=["rank", "checkpoint", "rating", "95% CI", "votes"])
        agreement = gr.Dataframe(headers=["metric", "agrees with voters", "95% CI", "decisive votes"])
        needed = gr.Markdown()
        refresh.click(show_leaderboard, run, [ratings, agreement, needed], api_name="leaderboard")


def decide_tab(state, run) -> None:
    import gradio as gr

    from ..decisions import decisions, mark_release_candidate

    def decide(run, checkpoint, reason, request: gr.Request):
        with state.cursor() as db, _user_errors():
            mark_release_candidate(db, run, checkpoint or "", _voter(request), reason or "")
        return list_decisions(run)

    def list_decisions(run):
        with state.cursor() as db:
            return [[d.checkpoint, d.decided_by, d.decided_at.strftime("%Y-%m-%d %H:%M"), d.reason]
                    for d in decisions(db, run)]

    with gr.Tab("Decide"):
        checkpoint = gr.Textbox(label="release candidate (checkpoint file name)")
        reason = gr.Textbox(label="why")
        mark = gr.Button("Mark as release candidate")
        history = gr.Dataframe(headers=["checkpoint", "by", "when", "why"])
        mark.click(decide, [run, checkpoint, reason], history, api_name="decide")
        gr.Button("Show decisions").click(list_decisions, run, history, api_name="decisions")


def build_blocks(state):
    """The main page: the run chooser above one tab per view."""
    import gradio as gr

    runs = state.runs()
    with gr.Blocks(title="evalsvc") as blocks:
        gr.Markdown("# evalsvc")
        run = gr.Dropdown(runs, value=state.config.run or (runs[0] if runs else None), label="run")
        for tab in (grid_tab, compare_tab, curves_tab, vote_tab, leaderboard_tab, decide_tab, jobs_tab):
            tab(state, run)
    return blocks


def build_vote_blocks(state, run: str):
    """The blind-vote page: the prompt, two images under opaque ids, four answers, the reveal afterwards.

    Nothing on it names a run, checkpoint, epoch or file before a vote: the run is fixed on the server.
    Its events share one pool of 16 concurrent calls (Gradio's default is one at a time): each call works on
    its own cursor, and a vote is stored once however many arrive at once.
    """
    import gradio as gr

    from ..votes import issue_pair, record_vote

    def next_pair(request: gr.Request):
        with state.cursor() as db:
            try:
                issued = issue_pair(db, run, _voter(request), state.config.vote)
            except InputError as exc:
                raise gr.Error(str(exc)) from None
        left = f'<img src="/vote-image/{issued.left_image}" width="320" alt="A">'
        right = f'<img src="/vote-image/{issued.right_image}" width="320" alt="B">'
        return issued.token, f"**Prompt:** {escape(issued.prompt)}", left, right, ""

    def vote(token: str, answer: str, request: gr.Request) -> str:
        with state.cursor() as db:
            try:
                cast = record_vote(db, token or "", _voter(request), answer)
            except InputError as exc:
                raise gr.Error(str(exc)) from None
        if cast.left_where:
            return (f"Recorded {answer}. A was **{cast.left}** at {escape(cast.left_where)}, B was the same "
                    f"checkpoint at {escape(cast.right_where)}.")
        return f"Recorded {answer}. A was **{cast.left}**, B was **{cast.right}**."

    with gr.Blocks(title="blind vote") as blocks:
        gr.Markdown("# Which image answers the prompt better?")
        token = gr.Textbox(visible=False)
        prompt = gr.Markdown()
        with gr.Row():
            left = gr.HTML()
            right = gr.HTML()
        answer = gr.Textbox(visible=False)
        reveal = gr.Markdown()
        start = gr.Button("Next pair", variant="primary")
        at_once = {"concurrency_limit": 16, "concurrency_id": "vote-page"}
        start.click(next_pair, None, [token, prompt, left, right, reveal], api_name="next_pair", **at_once)
        gr.api(vote, api_name="vote", **at_once)
        with gr.Row():
            for label, value in (("A is better", "A"), ("B is better", "B"), ("Tie", "tie"), ("Both bad", "both_bad")):
                gr.Button(label).click(lambda v=value: v, None, answer, api_visibility="private").then(
                    vote, [token, answer], reveal, api_visibility="private", **at_once)
    return blocks
