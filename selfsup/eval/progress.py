"""Progress of the long evaluation loops (feature extraction, the linear probe), and their time.

On a terminal, a rich progress bar with counts while the loop runs; in a log (no terminal), one line
when it starts. Then one line that stays, on a terminal and in a log alike: what was done, how
many, and the time spent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextmanager
def progress(
    description: str | None,
    total: int | None,
    unit: str,
    console: Console | None = None,
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; with a ``description``, show a bar of ``total`` steps while the block runs
    (a line saying it started, without a terminal) and print ``"<description>: <count> <unit> in <seconds> s"`` when it ends without an error
    (``count`` is the sum of the ``n`` passed to ``advance``). Without a ``description``, nothing is
    shown or printed."""
    if not description:
        yield lambda n=1: None
        return
    console = console or Console()
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log gets the closing line only
    )
    task = bar.add_task(description, total=total)
    done = 0

    def advance(n: int = 1) -> None:
        nonlocal done
        done += n
        bar.update(task, completed=done)

    if not console.is_terminal:  # no live bar in a log: say what has started
        console.print(
            f"{description}: {'' if total is None else f'{total:,} '}{unit}...",
            highlight=False,
            soft_wrap=True,
        )
    start = time.perf_counter()
    with bar:
        yield advance
    console.print(
        f"{description}: {done:,} {unit} in {time.perf_counter() - start:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
