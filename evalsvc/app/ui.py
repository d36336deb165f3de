"""The Gradio layout: tabs and event wiring only; every answer comes from `evalsvc` modules.

The main page at `/` (tabs Grid, Compare, Curves, Blind vote, Leaderboard, Decide, Jobs; named API endpoints
`runs`, `grid`, `grid_filters`, `cell`, `compare`, `compare_choices`, `curves`, `leaderboard`, `decide_choices`,
`decide`, `decisions`, `queue_job`, `cancel_job`, `jobs`) for reviewers and admins; the blind-vote page is `vote_page`.
Each tab is built by one `*_tab(state, run)` function, `run` being the page's run dropdown; a tab's choices
are read again when it is opened, so checkpoints, seeds and settings sampled after the app started show up.
"""

from html import escape

from ..errors import InputError
from .assets import CURVES_CSS, GRID_CSS, GRID_JS, LIGHTBOX_CSS, LIGHTBOX_JS, SLIDER_CSS, SLIDER_JS
from .feedback import user_errors
from .grid import AXES, GridRequest, grid_page
from .jobs_tab import jobs_tab

DEFAULT = "(first)"
BEST_SETTING = "best"  # the Compare tab's setting choice: each checkpoint at its own best setting
CLEAR_TOASTS_JS = "() => document.querySelectorAll('.toast-close').forEach(button => button.click())"


def kept(value, choices, fallback):
    """`value` when it is still one of `choices`, else `fallback` (a refresh keeps what the user chose)."""
    return value if value in choices else fallback


def opened(tab, fn, inputs, outputs, api_name=None):
    """Read a tab's choices again whenever it is opened, and clear the toasts of the tab left behind."""
    if fn is not None:
        tab.select(fn, inputs, outputs, api_name=api_name, api_visibility="public" if api_name else "private")
    tab.select(None, None, None, js=CLEAR_TOASTS_JS, api_visibility="private")


NO_GRID = "<p>No images in this run yet: sample it (Jobs tab or <code>evalsvc sample</code>), then Show grid.</p>"


def grid_html(state, run: str, rows: str, columns: str, filters: dict[str, str], page: int) -> str:
    """One grid page as an HTML table of `/image/...` thumbnails with each cell's settings as a tooltip; clicking
    one shows it enlarged with its infotext and scores (`data-key` names the image)."""
    with state.cursor() as db:
        request = GridRequest(run, rows, columns, filters, int(page), state.config.rows_per_page)
        result = grid_page(db, request, state.grid_axes.get(db, run))
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
            return state.grid_axes.get(db, run).choices
        except InputError:
            return {axis: () for axis in AXES}


def _filterable(axis: str, choices: dict[str, tuple[str, ...]]) -> bool:
    """Whether the Grid shows a filter for `axis`: the core axes always, a setting axis when it varies."""
    return axis in ("checkpoint", "weights", "cfg", "seed", "prompt") or len(choices[axis]) > 1


def grid_tab(state, run) -> None:
    """Any two axes as rows and columns, the others as filters (dropdowns of the run's values); click to enlarge.
    Pages count from 1, with previous and next."""
    import gradio as gr

    from .cell import cell_details, cell_html

    def show_grid(run, rows, columns, *values):
        *values, page = values  # one filter per axis, in AXES order, then the page (from 1)
        filters = {axis: value for axis, value in zip(AXES, values) if value and value != DEFAULT}
        with user_errors():
            if page is None or int(page) < 1:
                raise InputError(f"page must be 1 or more, got {page}")
            return grid_html(state, run, rows, columns, filters, int(page) - 1)

    def step(delta):
        return lambda page: max(1, int(page or 1) + delta)

    def first_page() -> str:
        """Page 1 of the starting run at the tab's default axes, shown on arrival (a hint when there is none)."""
        try:
            return grid_html(state, run.value, "prompt", "checkpoint", {}, 0) if run.value else NO_GRID
        except InputError:
            return NO_GRID

    def refresh_filters(run, *current):
        choices = _grid_choices(state, run)
        return [gr.update(choices=[DEFAULT, *choices[axis]], value=kept(value, choices[axis], DEFAULT),
                          visible=_filterable(axis, choices)) for axis, value in zip(AXES, current)]

    def cell(run: str, key: str) -> dict:
        """One grid image's settings, infotext and per-image scores."""
        with state.cursor() as db, user_errors():
            return cell_details(db, run, key, state.neighbours).as_json()

    def enlarge(run, event: gr.EventData):
        key = (getattr(event, "_data", None) or {}).get("key")
        if not key:
            return gr.skip()
        with state.cursor() as db, user_errors():
            return cell_html(cell_details(db, run, key, state.neighbours))

    choices = _grid_choices(state, run.value)
    with gr.Tab("Grid") as tab:
        with gr.Row():
            rows = gr.Dropdown(list(AXES), value="prompt", label="rows")
            columns = gr.Dropdown(list(AXES), value="checkpoint", label="columns")
        with gr.Row():
            filters = [gr.Dropdown([DEFAULT, *choices[axis]], value=DEFAULT, label=f"{axis} filter",
                                   allow_custom_value=True, visible=_filterable(axis, choices)) for axis in AXES]
        with gr.Row():
            show = gr.Button("Show grid", variant="primary")
            previous = gr.Button("◀ Previous page")
            page = gr.Number(value=1, precision=0, minimum=1, label="page")
            following = gr.Button("Next page ▶")
        grid = gr.HTML(first_page, js_on_load=GRID_JS, css_template=GRID_CSS)
        enlarged = gr.HTML(js_on_load=LIGHTBOX_JS, css_template=LIGHTBOX_CSS)
        inputs = [run, rows, columns, *filters, page]
        show.click(show_grid, inputs, grid, api_name="grid")
        for button, delta in ((previous, -1), (following, 1)):
            button.click(step(delta), page, page, api_visibility="private").then(
                show_grid, inputs, grid, api_visibility="private")
        grid.click(enlarge, run, enlarged, api_visibility="private")
        gr.api(cell, api_name="cell")
        run.change(refresh_filters, [run, *filters], filters, api_visibility="private")
        opened(tab, refresh_filters, [run, *filters], filters, api_name="grid_filters")


def vote_tab(state, run) -> None:
    import gradio as gr

    with gr.Tab("Blind vote") as tab:
        gr.Markdown("Blind votes have a page of their own, [/vote/](/vote/), that shows nothing but the two "
                    "images and the prompt: send voters there. Give voters the `voter` role in the auth file: "
                    "it opens only that page, so they cannot look a pair up in the grid. A reviewer's login "
                    "cannot vote (it sees every checkpoint by name); an admin's can.")
        opened(tab, None, None, None)


def compare_tab(state, run) -> None:
    """Two checkpoints on one prompt and seed, at one setting or each at its best: overlay slider, metrics, deltas."""
    import gradio as gr

    from .compare import (CompareRequest, compare, compare_choices, comparison_html, comparison_summary,
                          delta_headers, delta_rows)

    def choices_of(run):
        with state.store.thread_view() as store:
            return compare_choices(store, run) if run else None

    def refresh(run, a=None, b=None, prompt=None, seed=None, setting=None):
        """The run's choices, keeping the ones made where they still exist."""
        c = choices_of(run)
        if c is None:
            return [gr.update(choices=[], value=None)] * 5
        seeds = [str(s) for s in c.seeds]
        return [gr.update(choices=list(c.checkpoints), value=kept(a, c.checkpoints, c.default_a)),
                gr.update(choices=list(c.checkpoints), value=kept(b, c.checkpoints, c.default_b)),
                gr.update(choices=list(c.prompts), value=kept(prompt, c.prompts, c.prompts[0] if c.prompts else None)),
                gr.update(choices=seeds, value=kept(seed, seeds, seeds[0] if seeds else None)),
                gr.update(choices=[BEST_SETTING, *c.settings], value=kept(setting, c.settings, BEST_SETTING))]

    def show_compare(run, a, b, prompt, seed, setting):
        with user_errors():
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
    with gr.Tab("Compare") as tab:
        with gr.Row():
            # choices are read again when the tab opens; a name typed or sent by the API is checked by `compare`
            a = gr.Dropdown(list(c.checkpoints) if c else [], value=c and c.default_a, label="A",
                            allow_custom_value=True)
            b = gr.Dropdown(list(c.checkpoints) if c else [], value=c and c.default_b, label="B",
                            allow_custom_value=True)
        with gr.Row():
            prompt = gr.Dropdown(list(c.prompts) if c else [], value=c.prompts[0] if c and c.prompts else None,
                                 label="prompt", allow_custom_value=True)
            seed = gr.Dropdown([str(s) for s in c.seeds] if c else [],
                               value=str(c.seeds[0]) if c and c.seeds else None, label="seed",
                               allow_custom_value=True)
            cfg = gr.Dropdown([BEST_SETTING, *c.settings] if c else [BEST_SETTING], value=BEST_SETTING,
                              label="setting (best: each at its own best setting; or AXIS=VALUE,...)",
                              allow_custom_value=True)
        go = gr.Button("Compare", variant="primary")
        summary = gr.Markdown()
        view = gr.HTML(js_on_load=SLIDER_JS, css_template=SLIDER_CSS)
        table = gr.Dataframe(headers=delta_headers(), label="metrics (↑ higher is better, ↓ lower)")
        go.click(show_compare, [run, a, b, prompt, seed, cfg], [view, summary, table], api_name="compare")
        run.change(refresh, run, [a, b, prompt, seed, cfg], api_visibility="private")
        opened(tab, refresh, [run, a, b, prompt, seed, cfg], [a, b, prompt, seed, cfg], api_name="compare_choices")


def curves_tab(state, run) -> None:
    """The recommendation (summary, forest plot, its sentences in a closed fold), the latest decision, and every
    metric against the epoch with intervals and the loss."""
    import gradio as gr

    from .curves import (curves_html, decision_markdown, details_markdown, forest_html, gather_curves,
                         portability_section, recommendation_markdown)

    def show_curves(run):
        with user_errors(), state.store.thread_view() as store:
            curves = gather_curves(store, run or "")
        report = curves.report
        plots = portability_section(report) + f'<div class="evs-curves">{curves_html(report)}</div>'
        return (recommendation_markdown(report), forest_html(report), details_markdown(report),
                decision_markdown(curves.decision), plots)

    with gr.Tab("Curves") as tab:
        show = gr.Button("Show curves", variant="primary")
        recommendation = gr.Markdown()
        forest = gr.HTML(css_template=CURVES_CSS)
        with gr.Accordion("details", open=False):
            details = gr.Markdown()
        decision = gr.Markdown()
        plots = gr.HTML(css_template=CURVES_CSS)
        show.click(show_curves, run, [recommendation, forest, details, decision, plots], api_name="curves")
        opened(tab, None, None, None)


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
        if not any(r.votes for r in board.ratings):  # no ranking to show: every rating would be the prior's
            return [], agree_rows(agreement), ("**No votes yet** for this run, so there is no ranking: send "
                                               "voters to [/vote/](/vote/).")
        table = [[i + 1, r.player, round(r.rating), f"{r.ci_low:.0f} to {r.ci_high:.0f}" if r.votes else "no votes",
                  r.votes]
                 for i, r in enumerate(board.ratings)]
        needed = board.votes_to_separate_top_two
        note = (f"about {needed:.0f} more votes to separate the top two" if needed not in (None, float("inf")) else
                "the top two are tied so far")
        if len(voted) > 1:  # votes at different settings are never pooled
            note += (f"; ranked from the votes at {voted[0].label(varying_axes(voted), names)}, the setting with the most "
                     f"votes ({len(voted)} settings have votes)")
        return table, agree_rows(agreement), note

    def agree_rows(agreement):
        return [[a.metric, f"{a.share:.0%}", f"{a.ci_low:.0%} to {a.ci_high:.0%}", a.votes] for a in agreement]

    with gr.Tab("Leaderboard") as tab:
        refresh = gr.Button("Refresh")
        needed = gr.Markdown()
        ratings = gr.Dataframe(headers=["rank", "checkpoint", "rating", "95% CI", "votes"])
        agreement = gr.Dataframe(headers=["metric", "agrees with voters", "95% CI", "decisive votes"])
        refresh.click(show_leaderboard, run, [ratings, agreement, needed], api_name="leaderboard")
        opened(tab, show_leaderboard, run, [ratings, agreement, needed])


def decide_tab(state, run) -> list:
    """Mark the run's release candidate: a dropdown of its candidates with the recommendation preselected and its
    evidence one click away; a flagged, significantly worse or unscored choice shows why and needs a
    confirmation, which is recorded with the decision. Returns the controls only admins may use."""
    import gradio as gr

    from ..decisions import decisions, mark_release_candidate
    from .decide import decide_view

    def view_of(run):
        with state.store.thread_view() as store:
            return decide_view(store, run)

    def choices(run, current=None):
        with user_errors():
            if not run:
                return gr.update(choices=[], value=None), ""
            view = view_of(run)
            value = kept(current, view.candidates, view.candidates[0])
            return gr.update(choices=list(view.candidates), value=value), view.evidence(value)

    def evidence(run, checkpoint):
        with user_errors():
            return view_of(run).evidence(checkpoint) if run and checkpoint else ""

    def decide(run, checkpoint, reason, confirmed, request: gr.Request):
        """Mark `checkpoint`; with warnings and not `confirmed`, nothing is recorded and the warnings are shown."""
        with user_errors():
            state.require(request, "may_act")
            if not (reason or "").strip():
                raise InputError("say why (the reason is recorded with the decision)")
            warnings = view_of(run).warnings(checkpoint or "")
            if warnings and not confirmed:
                text = ("**Needs a confirmation:** " + "; ".join(escape(w.rstrip(".")) for w in warnings) +
                        ". Press *Mark anyway* to record it with this warning.")
                return text, gr.update(visible=True), list_decisions(run)
            with state.cursor() as db:
                mark_release_candidate(db, run, checkpoint or "", state.user(request), reason or "",
                                       "; ".join(warnings))
        done = f"Marked **{escape(checkpoint)}**" + (" (confirmed despite the warning)" if warnings else "") + "."
        return done, gr.update(visible=False), list_decisions(run)

    def mark_anyway(run, checkpoint, reason, request: gr.Request):
        return decide(run, checkpoint, reason, True, request)

    def list_decisions(run):
        with state.cursor() as db:
            return [[d.checkpoint, d.decided_by, d.decided_at.strftime("%Y-%m-%d %H:%M"), d.reason, d.overrides]
                    for d in decisions(db, run)]

    with gr.Tab("Decide") as tab:
        # Filled on opening, with the recommendation preselected (a value set here would be kept as the user's
        # choice); custom values pass because the handler checks the name.
        checkpoint = gr.Dropdown([], value=None, label="release candidate (the recommendation first)",
                                 allow_custom_value=True)
        with gr.Accordion("Evidence", open=False):
            shown = gr.Markdown()
        admin = state.gate is None  # with logins, `build_blocks.role_view` enables the controls for admins
        reason = gr.Textbox(label="why", interactive=admin)
        mark = gr.Button("Mark as release candidate", variant="primary", interactive=admin)
        warning = gr.Markdown()
        anyway = gr.Button("Mark anyway", variant="stop", visible=False)
        history = gr.Dataframe(headers=["checkpoint", "by", "when", "why", "confirmed despite"])
        confirmed = gr.Checkbox(False, visible=False)
        mark.click(decide, [run, checkpoint, reason, confirmed], [warning, anyway, history], api_name="decide")
        anyway.click(mark_anyway, [run, checkpoint, reason], [warning, anyway, history], api_visibility="private")
        checkpoint.change(evidence, [run, checkpoint], shown, api_visibility="private")
        gr.Button("Show decisions").click(list_decisions, run, history, api_name="decisions")
        opened(tab, choices, [run, checkpoint], [checkpoint, shown], api_name="decide_choices")
        run.change(choices, run, [checkpoint, shown], api_visibility="private")
    return [reason, mark]


def build_blocks(state):
    """The main page: the run chooser above one tab per view; the tabs' write controls enabled for admins only
    (the handlers check the role too)."""
    import gradio as gr

    from .gate import logout_link

    runs = state.runs()

    def role_view(request: gr.Request):
        account = state.account(request)
        admin = account is not None and account.may_act
        return [gr.update(interactive=admin) for _ in admin_only]

    def refresh_runs(current):
        names = state.runs()
        return gr.update(choices=names, value=kept(current, names, names[0] if names else None))

    with gr.Blocks(title="evalsvc") as blocks:
        with gr.Row():
            gr.Markdown("# evalsvc")
            if state.gate is not None:
                gr.HTML(logout_link())
        run = gr.Dropdown(runs, value=state.config.run or (runs[0] if runs else None), label="run")
        controls = [tab(state, run) for tab in (grid_tab, compare_tab, curves_tab, vote_tab, leaderboard_tab,
                                                 decide_tab, jobs_tab)]
        admin_only = [component for some in controls if some for component in some]
        blocks.load(role_view, None, admin_only, api_visibility="private")
        blocks.load(refresh_runs, run, run, api_name="runs")
    return blocks
