"""Tests for lumbar_edge.progress: plain (non-terminal) output stays short and ends once."""
import io

from lumbar_edge.progress import Progress, track


def test_plain_output_prints_about_ten_lines_and_the_final_state_once():
    out = io.StringIO()
    with Progress(100, "job", stream=out) as bar:
        for _ in range(100):
            bar.update()
    lines = out.getvalue().splitlines()
    assert 9 <= len(lines) <= 12
    assert lines[-1].startswith("job [") and "100/100" in lines[-1]
    assert sum("100/100" in line for line in lines) == 1


def test_postfix_and_disabled_bar():
    out = io.StringIO()
    with Progress(2, "epoch", stream=out) as bar:
        bar.update()
        bar.set_postfix("loss=1.0")
        bar.update()
    assert "loss=1.0" in out.getvalue().splitlines()[-1]
    quiet = io.StringIO()
    with Progress(5, "x", stream=quiet, enabled=False) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""


def test_track_yields_every_item():
    assert list(track([1, 2, 3], "t", enabled=False)) == [1, 2, 3]
