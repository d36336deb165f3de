"""How a page's handler answers bad input: one line on screen and one line in the log.

An `InputError` (a wrong value, a refused action) is shown as a Gradio error toast and logged as one line,
without a traceback; any other exception is a real error, which Gradio logs with its traceback.
"""

from __future__ import annotations

import contextlib
import logging

from ..errors import InputError

LOG = logging.getLogger("evalsvc.app")


@contextlib.contextmanager
def user_errors():
    import gradio as gr

    try:
        yield
    except InputError as exc:
        LOG.warning("refused: %s", exc)
        raise gr.Error(str(exc), print_exception=False) from None
