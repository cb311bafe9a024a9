"""How mtbench prints: only its own fixed styles are markup; every text is literal.

Rich reads ``[...]`` in a plain string as markup, so a run named ``[bold]x[/]``, a folder named
``out[1]`` or an error that mentions ``[data]`` would crash the print or lose words. Every line
and table therefore goes through here: styles are separate arguments and texts become rich
``Text``, which is never parsed. Message lines never wrap, so a path stays whole on one line
of a log and can be searched for; tables may still wrap their cells.
"""

from __future__ import annotations

from typing import Any, Union

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

Part = Union[object, tuple[str, str]]
"""A piece of a line: anything shown as ``str(it)``, or ``(literal text, style)``."""

LOG_WIDTH = 200
"""Width of tables when the output is a file or a pipe (rich's default of 80 cuts columns)."""


def make_console(stderr: bool = False) -> Console:
    """A console that never highlights numbers or paths by itself (a log should read as written)."""
    return Console(stderr=stderr, highlight=False)


def wide(console: Console) -> Console:
    """``console``, or a wider one on the same stream when the output is not a terminal."""
    if console.is_terminal or console.width >= LOG_WIDTH:
        return console
    return Console(file=console.file, width=LOG_WIDTH, highlight=False)


def line(*parts: Part, style: str = "") -> Text:
    """One literal line from parts; only the styles given here are applied."""
    return Text.assemble(*(p if isinstance(p, tuple) else str(p) for p in parts), style=style)


def say(console: Console, *parts: Part, style: str = "") -> None:
    """Print one message line, literally and unwrapped: ``say(err, ("error:", "bold red"), " ", msg)``."""
    console.print(line(*parts, style=style), soft_wrap=True)


def literal(value: Any) -> RenderableType | None:
    """A string as ``Text`` (never markup); other renderables and None as they are."""
    return Text(value) if isinstance(value, str) else value


class LiteralTable(Table):
    """A rich ``Table`` whose title, caption, headers and cells are literal text, never markup."""

    def __init__(self, *headers: Any, title: Any = None, caption: Any = None, **kwargs: Any) -> None:
        super().__init__(*headers, title=literal(title), caption=literal(caption), **kwargs)

    def add_column(self, header: Any = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(literal(header), *args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(literal(c) for c in cells), **kwargs)
