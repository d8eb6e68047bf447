"""The terminal progress of `make run`: a redrawn bar on a TTY, plain lines elsewhere."""

import io

from recdistill_dagster import progress
from recdistill_dagster.progress import TerminalProgress, attached, describe, emit, remaining_seconds

UPDATE = {"step": 1200, "epoch": 2, "samples": 50_000, "samples_per_s": 5_000.0, "loss": 0.12345,
          "eta_seconds": 10.0}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_describe_has_the_numbers_and_a_bar() -> None:
    text = describe("teacher 2026-01-03", UPDATE, bar_width=10)
    # 50,000 done, 10 s × 5,000/s left: half way.
    assert text.startswith("teacher 2026-01-03 [#####-----]  50%")
    for part in ("step 1,200", "epoch 2", "5,000 samples/s", "loss 0.1235", "ETA 10s"):
        assert part in text
    assert "[" not in describe("teacher", UPDATE)  # no bar without a width (plain lines)
    assert describe("x", {**UPDATE, "eta_seconds": 125}).endswith("ETA 2m05s")


def test_plain_lines_when_not_a_tty_at_most_one_per_interval() -> None:
    out, clock = io.StringIO(), Clock()
    terminal = TerminalProgress(stream=out, tty=False, plain_every_s=10.0, clock=clock)
    terminal.phase("[6/8] training 2026-01-02 (batch phase)")
    for step in range(5):
        clock.now = step * 3.0  # 0, 3, 6, 9, 12 s: lines at 0 and 12
        terminal("teacher 2026-01-02", {**UPDATE, "step": step})
    terminal.line("  [6/8] done")
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0] == "[6/8] training 2026-01-02 (batch phase) …"
    assert [line.split(" · ")[1] for line in lines[1:3]] == ["step 0", "step 4"]
    assert lines[-1] == "  [6/8] done"


def test_tty_redraws_one_line_and_clears_it_for_permanent_lines() -> None:
    out, clock = io.StringIO(), Clock()
    terminal = TerminalProgress(stream=out, tty=True, redraw_s=0.1, clock=clock)
    terminal.phase("[7/8] training")
    clock.now = 1.0
    terminal("student", UPDATE)
    clock.now = 1.05  # too soon: not redrawn
    terminal("student", {**UPDATE, "step": 9999})
    terminal.line("  [7/8] training  3.0s")
    text = out.getvalue()
    assert "[7/8] training | student [" in text and "step 9,999" not in text
    assert text.endswith("\r  [7/8] training  3.0s\n")  # the bar is wiped before the permanent line
    assert "\n" not in text[: text.index("  [7/8] training  3.0s")]  # the bar never scrolled


def test_emit_reaches_attached_sinks_only_and_survives_a_broken_one() -> None:
    seen = []

    def broken(label, update):
        raise BrokenPipeError

    with attached(lambda label, update: seen.append((label, update["step"]))), attached(broken):
        emit("teacher", UPDATE)
        emit("teacher", UPDATE)  # the broken sink was dropped after its first failure
    emit("student", UPDATE)  # nothing attached any more
    assert seen == [("teacher", 1200), ("teacher", 1200)]
    assert progress._sinks == []


def test_remaining_time_from_steps_of_the_same_kind() -> None:
    done = [("sample streams", 1.0), ("sample streams", 3.0), ("batch phase", 60.0)]
    assert remaining_seconds(done, ["sample streams", "sample streams"]) == 4.0
    assert remaining_seconds(done, ["streaming"]) is None  # no streaming day has run yet
    assert remaining_seconds(done, []) == 0.0
