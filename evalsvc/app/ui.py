"""The Gradio layout: tabs and event wiring only; every answer comes from `evalsvc` modules.

Two pages: the main one at `/` (grid, leaderboard, decision; named API endpoints `grid`, `leaderboard`,
`decide`, `decisions`) and the blind-vote page at `/vote/` (`next_pair`, `vote`), which shows nothing that
identifies a checkpoint before the vote.
"""

from html import escape

from ..errors import InputError
from .grid import AXES, GridRequest, grid_page

DEFAULT = "(first)"


def _voter(request) -> str:
    return getattr(request, "username", None) or "local"


def grid_html(state, run: str, rows: str, columns: str, filters: dict[str, str], page: int) -> str:
    """One grid page as an HTML table of `/image/...` thumbnails with each cell's settings as a tooltip."""
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
            title = escape(f"{image.checkpoint} ({image.weights}) | {image.prompt} | seed {image.seed} | "
                           f"CFG {image.cfg:g}")
            cells.append(f'<td><a href="/image/{image.image}" target="_blank"><img src="/image/{image.image}" '
                         f'title="{title}" width="128" loading="lazy"></a></td>')
        body.append(f"<tr><th>{escape(row)}</th>{''.join(cells)}</tr>")
    pinned = ", ".join(f"{a} = {v}" for a, v in result.pinned.items())
    return (f"<p>page {result.page + 1} of {result.pages}; {escape(pinned)}</p><table><tr><th>{escape(rows)} \\ "
            f"{escape(columns)}</th>{head}</tr>{''.join(body)}</table>")


def build_blocks(state):
    import gradio as gr

    from ..decisions import decisions, mark_release_candidate
    from .leaderboard import human_leaderboard, metric_agreement

    runs = state.runs()
    first_run = state.config.run or (runs[0] if runs else None)

    def show_grid(run, rows, columns, checkpoint, weights, cfg, seed, prompt, page):
        filters = {axis: value for axis, value in zip(AXES, (checkpoint, weights, cfg, seed, prompt))
                   if value and value != DEFAULT}
        try:
            return grid_html(state, run, rows, columns, filters, int(page or 0))
        except InputError as exc:
            raise gr.Error(str(exc)) from None

    def show_leaderboard(run):
        with state.cursor() as db:
            board = human_leaderboard(db, run)
            agreement = metric_agreement(db, run)
        table = [[i + 1, r.player, round(r.rating), f"{r.ci_low:.0f} to {r.ci_high:.0f}", r.votes]
                 for i, r in enumerate(board.ratings)]
        agree = [[a.metric, f"{a.share:.0%}", f"{a.ci_low:.0%} to {a.ci_high:.0%}", a.votes] for a in agreement]
        needed = board.votes_to_separate_top_two
        note = ("no votes yet" if not any(r.votes for r in board.ratings) else
                f"about {needed:.0f} more votes to separate the top two" if needed not in (None, float("inf")) else
                "the top two are tied so far")
        return table, agree, note

    def decide(run, checkpoint, reason, request: gr.Request):
        with state.cursor() as db:
            try:
                mark_release_candidate(db, run, checkpoint or "", _voter(request), reason or "")
            except InputError as exc:
                raise gr.Error(str(exc)) from None
        return list_decisions(run)

    def list_decisions(run):
        with state.cursor() as db:
            return [[d.checkpoint, d.decided_by, d.decided_at.strftime("%Y-%m-%d %H:%M"), d.reason]
                    for d in decisions(db, run)]

    with gr.Blocks(title="evalsvc") as blocks:
        gr.Markdown("# evalsvc")
        run = gr.Dropdown(runs, value=first_run, label="run")
        with gr.Tab("Grid"):
            with gr.Row():
                rows = gr.Dropdown(list(AXES), value="prompt", label="rows")
                columns = gr.Dropdown(list(AXES), value="checkpoint", label="columns")
                page = gr.Number(value=0, precision=0, minimum=0, label="page")
            with gr.Row():
                filters = [gr.Textbox(value=DEFAULT, label=f"{axis} filter") for axis in AXES]
            show = gr.Button("Show grid")
            grid = gr.HTML()
            show.click(show_grid, [run, rows, columns, *filters, page], grid, api_name="grid")
        with gr.Tab("Blind vote"):
            gr.Markdown("Blind votes have a page of their own, [/vote/](/vote/), that shows nothing but the two "
                        "images and the prompt: send voters there.")
        with gr.Tab("Leaderboard"):
            refresh = gr.Button("Refresh")
            ratings = gr.Dataframe(headers=["rank", "checkpoint", "rating", "95% CI", "votes"])
            agreement = gr.Dataframe(headers=["metric", "agrees with voters", "95% CI", "decisive votes"])
            needed = gr.Markdown()
            refresh.click(show_leaderboard, run, [ratings, agreement, needed], api_name="leaderboard")
        with gr.Tab("Decide"):
            checkpoint = gr.Textbox(label="release candidate (checkpoint file name)")
            reason = gr.Textbox(label="why")
            mark = gr.Button("Mark as release candidate")
            history = gr.Dataframe(headers=["checkpoint", "by", "when", "why"])
            mark.click(decide, [run, checkpoint, reason], history, api_name="decide")
            gr.Button("Show decisions").click(list_decisions, run, history, api_name="decisions")
    return blocks


def build_vote_blocks(state, run: str):
    """The blind-vote page: the prompt, two images under opaque ids, four answers, the reveal afterwards.

    Nothing on it names a run, checkpoint, epoch or file before a vote: the run is fixed on the server.
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
        start.click(next_pair, None, [token, prompt, left, right, reveal], api_name="next_pair")
        gr.api(vote, api_name="vote")
        with gr.Row():
            for label, value in (("A is better", "A"), ("B is better", "B"), ("Tie", "tie"), ("Both bad", "both_bad")):
                gr.Button(label).click(lambda v=value: v, None, answer, api_visibility="private").then(
                    vote, [token, answer], reveal, api_visibility="private")
    return blocks
