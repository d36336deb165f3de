"""The blind-vote page at `/vote/`: a pair on arrival, large A and B labels, one click or key per vote, the
reveal of the last vote beside the next pair, and the voter's count of votes.

Nothing on it names a run, checkpoint, epoch or file before a vote: the run is fixed on the server, the
images are fetched by opaque ids bound to the voter's session (`/vote-image/...`). Named API endpoints:
`next_pair` (a new pair; an open one is skipped) and `vote` (answer the pair, returns the reveal); the
buttons answer and bring the next pair in one call. Its events share one pool of 16
concurrent calls; each works on its own cursor, and a vote is stored once however many arrive at once.
"""


import threading
from collections import defaultdict
from html import escape

from ..errors import InputError
from .assets import VOTE_CSS, VOTE_KEYS_JS
from .feedback import user_errors

ANSWER_BUTTONS = (("A", "A is better", "1 / a"), ("B", "B is better", "2 / b"), ("tie", "Tie", "3 / t"),
                  ("both_bad", "Both bad", "4 / x"))


class VoterLocks:
    """One lock per voter, so a voter's two quick requests cannot both leave a pair open."""

    def __init__(self):
        self._locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def of(self, voter: str) -> threading.Lock:
        with self._guard:
            return self._locks[voter]


def pair_html(left_image: str, right_image: str) -> str:
    return ('<div class="evs-vote-pair">'
            f'<figure><figcaption>A</figcaption><img src="/vote-image/{left_image}" alt="A"></figure>'
            f'<figure><figcaption>B</figcaption><img src="/vote-image/{right_image}" alt="B"></figure></div>')


def reveal_text(cast) -> str:
    """What the last vote was between, in words (HTML)."""
    if cast.left_where:
        return (f'<div class="evs-reveal">Your last vote: <b>{escape(cast.answer)}</b>. A was '
                f"<b>{escape(cast.left)}</b> at {escape(cast.left_where)}, B was the same checkpoint at "
                f"{escape(cast.right_where)}.</div>")
    return (f'<div class="evs-reveal">Your last vote: <b>{escape(cast.answer)}</b>. A was <b>{escape(cast.left)}</b>, '
            f"B was <b>{escape(cast.right)}</b>.</div>")


def build_vote_blocks(state, run: str):
    """The page's Blocks for `run`."""
    import gradio as gr

    from ..votes import issue_pair, record_vote, vote_count
    from .gate import logout_link

    locks = VoterLocks()

    def cast(token: str, answer: str, request):
        state.require(request, "may_vote")
        voter = state.user(request)
        with state.cursor() as db:
            return record_vote(db, token or "", voter, answer, state.session_id(request))

    def pair_outputs(request, reveal: str):
        """[token, prompt, pair, reveal, count, *buttons] for a new pair (or the reason there is none)."""
        state.require(request, "may_vote")
        voter = state.user(request)
        with locks.of(voter), state.cursor() as db:
            count = vote_count(db, run, voter)
            try:
                issued = issue_pair(db, run, voter, state.config.vote, session=state.session_id(request))
            except InputError as exc:
                return ["", "", f"<p>{escape(str(exc))}</p>", reveal, _count(count),
                        *[gr.update(interactive=False)] * len(ANSWER_BUTTONS)]
        return [issued.token, f"**Prompt:** {escape(issued.prompt)}", pair_html(issued.left_image, issued.right_image),
                reveal, _count(count), *[gr.update(interactive=True)] * len(ANSWER_BUTTONS)]

    def next_pair(request: gr.Request):
        with user_errors():
            return pair_outputs(request, "")

    def vote(token: str, answer: str, request: gr.Request) -> str:
        with user_errors():
            return reveal_text(cast(token, answer, request))

    def vote_next(token: str, answer: str, request: gr.Request):
        with user_errors():
            reveal = reveal_text(cast(token, answer, request))
            return pair_outputs(request, reveal)

    with gr.Blocks(title="blind vote") as blocks:
        with gr.Row(equal_height=True):
            gr.Markdown("## Which image answers the prompt better?")
            if state.gate is not None:
                gr.HTML(logout_link())
        count = gr.Markdown()
        token = gr.Textbox(visible=False)
        prompt = gr.Markdown()
        pair = gr.HTML(css_template=VOTE_CSS)
        with gr.Row():
            buttons = {answer: gr.Button(f"{label}  [{keys}]", elem_id=f"evs-vote-{answer}", interactive=False,
                                         variant="primary" if answer in ("A", "B") else "secondary")
                       for answer, label, keys in ANSWER_BUTTONS}
        gr.HTML("<p>Keys: <b>1</b> or <b>a</b>: A is better · <b>2</b> or <b>b</b>: B is better · <b>3</b> or "
                "<b>t</b>: tie · <b>4</b> or <b>x</b>: both bad</p>", js_on_load=VOTE_KEYS_JS)
        reveal = gr.HTML(css_template=VOTE_CSS)
        outputs = [token, prompt, pair, reveal, count, *buttons.values()]
        at_once = {"concurrency_limit": 16, "concurrency_id": "vote-page"}
        blocks.load(next_pair, None, outputs, api_name="next_pair", **at_once)
        gr.api(vote, api_name="vote", **at_once)
        answer = gr.Textbox(visible=False)
        for value, button in buttons.items():
            button.click(lambda v=value: v, None, answer, api_visibility="private").then(
                vote_next, [token, answer], outputs, api_visibility="private", **at_once)
    return blocks


def _count(count: int) -> str:
    return f"**{count}** vote{'s' if count != 1 else ''} so far"
