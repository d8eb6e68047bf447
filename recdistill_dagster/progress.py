"""Training progress in the terminal: one redrawn progress bar on a TTY, plain lines otherwise.

Training steps report progress (step, epoch, samples, samples/s, loss, ETA) through
`assets.common.progress_logger`, which writes to the Dagster run log and also calls `emit`. Whoever
runs the pipeline in this process (the CLI's `run`) attaches a sink to see every update; in a
`dagster dev` run (another process) nothing is attached and `emit` does nothing.
"""

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

Sink = Callable[[str, dict[str, Any]], None]
_sinks: list[Sink] = []
NOTICE = "notice"  # the label of a plain line for whoever watches (a run's warnings in the CLI)


def emit(label: str, progress: dict[str, Any]) -> None:
    """Hand one progress update to every attached sink (never raises into training)."""
    for sink in list(_sinks):
        try:
            sink(label, progress)
        except Exception:  # a broken terminal must not fail a training step
            _sinks.remove(sink)


def notice(text: str) -> None:
    """A line for whoever watches this process: the attached terminal, else stderr."""
    if _sinks:
        emit(NOTICE, {"text": text})
    else:
        print(text, file=sys.stderr, flush=True)


@contextmanager
def attached(sink: Sink) -> Iterator[Sink]:
    _sinks.append(sink)
    try:
        yield sink
    finally:
        if sink in _sinks:
            _sinks.remove(sink)


def duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def remaining_seconds(done: list[tuple[str, float]], todo: list[str]) -> float | None:
    """Time left: each step still to run costs the mean of the finished steps of its kind; None when
    a kind has not run yet (the batch phase says nothing of a streaming day)."""
    means = {}
    for kind in {k for k, _ in done}:
        durations = [seconds for k, seconds in done if k == kind]
        means[kind] = sum(durations) / len(durations)
    if any(kind not in means for kind in todo):
        return None
    return sum(means[kind] for kind in todo)


def describe(label: str, progress: dict[str, Any], bar_width: int = 0) -> str:
    """`teacher 2026-01-03 [#####-----] 52% · step 1,200 · 4,512 samples/s · loss 0.1234 · ETA 12s`."""
    samples = progress.get("samples") or 0
    rate = progress.get("samples_per_s") or 0.0
    eta = progress.get("eta_seconds")
    parts = [label]
    if bar_width and eta is not None and samples:
        fraction = min(samples / (samples + eta * rate), 1.0) if rate > 0 else 0.0
        filled = round(fraction * bar_width)
        parts[0] += f" [{'#' * filled}{'-' * (bar_width - filled)}] {fraction:4.0%}"
    parts.append(f"step {progress.get('step', 0):,}")
    if progress.get("epoch") is not None:
        parts.append(f"epoch {progress['epoch']}")
    parts.append(f"{rate:,.0f} samples/s")
    if progress.get("loss") is not None:
        parts.append(f"loss {progress['loss']:.4f}")
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    return " · ".join(parts)


class TerminalProgress:
    """A sink for `emit` plus the CLI's own phase lines.

    On a TTY the current phase and training step share one line, redrawn in place (`\\r`) at most
    `redraw_s` apart; finished phases are printed as plain lines above it. Elsewhere (a pipe, CI's
    log) every update becomes a plain line, at most one per `plain_every_s` per training step.
    """

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, bar_width: int = 20,
                 redraw_s: float = 0.1, plain_every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.bar_width, self.redraw_s, self.plain_every_s, self.clock = bar_width, redraw_s, plain_every_s, clock
        self.phase_text = ""
        self._last_draw = float("-inf")
        self._last_plain: dict[str, float] = {}
        self._drawn = 0  # characters of the live line on screen

    def _columns(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns

    def _draw(self, text: str) -> None:
        text = text[: max(self._columns() - 1, 10)]  # never wrap: \r only rewinds one line
        self.stream.write("\r" + text + " " * max(self._drawn - len(text), 0))
        self.stream.flush()
        self._drawn = len(text)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self._drawn = 0

    def phase(self, text: str) -> None:
        """A new phase starts (e.g. `[3/10] training 2026-01-04 (streaming)`)."""
        self.phase_text = text
        if self.tty:
            self._draw(f"{text} …")
        else:
            self.line(f"{text} …")

    def __call__(self, label: str, progress: dict[str, Any]) -> None:
        if label == NOTICE:
            self.line(str(progress["text"]))
            if self.tty and self.phase_text:
                self._draw(f"{self.phase_text} …")
            return
        now = self.clock()
        if self.tty:
            if now - self._last_draw >= self.redraw_s:
                self._last_draw = now
                self._draw(f"{self.phase_text} | {describe(label, progress, self.bar_width)}")
            return
        if now - self._last_plain.get(label, float("-inf")) >= self.plain_every_s:
            self._last_plain[label] = now
            self.line(f"    {describe(label, progress)}")

    def line(self, text: str) -> None:
        """A permanent line (phase results, summaries), printed above the live bar."""
        if self.tty:
            self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self._clear()
            self.stream.flush()
