"""Progress of the CLI's long stages on stderr (results go to stdout)."""

from __future__ import annotations

import sys
import time

import click


class Progress:
    """Progress of a long stage on stderr: a bar redrawn in place on a terminal, otherwise a few
    plain lines per stage (its start, every 25%, its end) that read well in a log file."""

    def __init__(self, unit: str = "bars", tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.unit = unit
        self.last: tuple[str, int] = ("", -1)
        self.began = self.seen = time.perf_counter()  # the stage's start: the previous stage's last report

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage != self.last[0]:
            self.began = self.seen
        self.seen = now
        percent = done * 100 // max(total, 1)
        step = percent if self.tty else (100 if done >= total else percent // 25 * 25)
        if (stage, step) == self.last:
            return
        self.last = (stage, step)
        bar = "#" * (percent // 5) + "." * (20 - percent // 5)
        line = f"{stage:>9} [{bar}] {done}/{total} {self.unit} {now - self.began:5.1f}s"
        if self.tty:
            click.echo(f"\r{line}", err=True, nl=done >= total)
        else:
            click.echo(line, err=True)
