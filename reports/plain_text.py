"""User text (model, card and run names) drawn by matplotlib, never parsed as mathtext.

A name such as ``Model $\\foo$`` would otherwise be parsed as TeX math: a crash on bad math,
or silently different text. Every figure the reports draw is built inside ``plain_text()``.
"""

from __future__ import annotations

import contextlib
from typing import Any


def plain_text() -> contextlib.AbstractContextManager[Any]:
    """Matplotlib settings under which every text is drawn literally (``$`` included)."""
    import matplotlib

    return matplotlib.rc_context({"text.parse_math": False})


def plain_figure(fig: Any) -> Any:
    """Turn mathtext off on every text already in ``fig`` (for figures built elsewhere)."""
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    return fig
