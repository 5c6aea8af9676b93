"""The progress bar as a terminal shows it."""

import io

import pytest

from lance_ref.progress import Progress, duration


class Terminal(io.StringIO):
    def isatty(self):
        return True


def shown(terminal: Terminal) -> list:
    """The lines a terminal displays for what was written: a carriage return moves back to
    column 0 and later characters overwrite the line from there."""
    lines = []
    for physical in terminal.getvalue().split("\n"):
        screen = []
        for segment in physical.split("\r"):
            screen[: len(segment)] = segment
        lines.append("".join(screen).rstrip())
    return lines


def test_a_shorter_redraw_leaves_no_tail_of_the_longer_one():
    terminal, values = Terminal(), ["0.989897", "0.1", "0.16888", "1"]
    bar = Progress(range(4), label="epoch 1/1", stream=terminal)
    for step in bar:
        if step > 0:  # the bar was redrawn with the figures set in the step before
            assert shown(terminal)[-1].endswith(f"acc={values[step - 1]}")
        bar.set(acc=values[step])
    assert shown(terminal)[-2].endswith("acc=1") and shown(terminal)[-1] == ""


def test_floats_have_four_decimals_and_the_final_line_has_the_summary():
    terminal = Terminal()
    bar = Progress(range(2), label="fine-tune epoch 1/2", stream=terminal, summary=lambda: dict(test="98.10%"))
    for _ in bar:
        bar.set(loss=0.1)
    final = shown(terminal)[-2]
    assert final.startswith("fine-tune epoch 1/2 [########################] 2/2 ")
    assert final.endswith("loss=0.1000 test=98.10%") and "eta" not in final


def test_off_a_terminal_only_the_final_line_is_written():
    log = io.StringIO()
    bar = Progress(iter(range(5)), label="calibrate", stream=log)
    assert list(bar) == list(range(5))
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue() and log.getvalue().startswith("calibrate 5 ")


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (12.3, "12s"), (83, "1m23s"), (4000, "1h06m")])
def test_durations(seconds, text):
    assert duration(seconds) == text
