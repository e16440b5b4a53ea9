from __future__ import annotations

from paretune.dashboards import format_table


def test_columns_are_aligned_under_their_titles_and_floats_short() -> None:
    text = format_table(["trial", "loss"], [[3, 0.123456789], [12, 2.0]])
    assert text.splitlines() == [
        "trial  loss",
        "-----  --------",
        "3      0.123457",
        "12     2",
    ]


def test_no_line_ends_in_blanks_and_an_empty_table_keeps_its_header() -> None:
    text = format_table(["a long title", "b"], [["x", ""]])
    assert all(line == line.rstrip() for line in text.splitlines())
    assert format_table(["trial", "f0"], []).splitlines() == ["trial  f0", "-----  --"]
