"""Markdown and HTML writing of report blocks: escaping, table padding, code fences."""
from __future__ import annotations

from pathlib import Path

import pytest

from keeptune.report.document import Code, Heading, Image, Items, Table, Text, to_html, to_markdown, to_text


def test_markdown_table_is_padded_and_escaped():
    table = Table(["name", "n"], [["a|b", "7"], ["平均", "12"]])
    assert to_markdown([table]) == (
        "| name |   n |\n"
        "| ---- | --: |\n"
        "| a\\|b |   7 |\n"
        "| 平均 |  12 |\n"  # two wide characters take four columns
    )


def test_markdown_text_cannot_inject_html():
    assert to_markdown([Heading("x <b>y</b>", 1), Text("a\\<i>"), Items(["<br>"])]) == (
        "# x \\<b>y\\</b>\n\n" "a\\\\\\<i>\n\n" "- \\<br>\n")


def test_code_fence_outlasts_backticks_in_text():
    assert to_markdown([Code("run ```x```", lang="sh")]) == "````sh\nrun ```x```\n````\n"


def test_html_escapes_every_text(tmp_path: Path):
    page = to_html([Heading("<x1>"), Text("a & b"), Items(["<x2>"]), Table(["<x3>"], [["<x4>"]]),
                    Code("if a < b:", summary="<x5>")], "<x6>", tmp_path)
    for raw in ("<x1>", "<x2>", "<x3>", "<x4>", "<x5>", "<x6>", "a & b", "a < b"):
        assert raw not in page
    for escaped in ("<h2>&lt;x1&gt;</h2>", "<p>a &amp; b</p>", "<li>&lt;x2&gt;</li>", "<th>&lt;x3&gt;</th>",
                    "<td>&lt;x4&gt;</td>", "<pre><code>if a &lt; b:</code></pre>", "<summary>&lt;x5&gt;</summary>",
                    "<title>&lt;x6&gt;</title>"):
        assert escaped in page


LINKS = ["[click](javascript:alert(1))", "[d](data:text/html;base64,PHNjcmlwdD4=)", "[v](VBScript:msgbox(1))",
         "![i](javascript:alert(2))", "[r]\n\n[r]: javascript:alert(3)", "<javascript:alert(4)>",
         "[n](https://example.com/a_(b))", "[f][r]\n[r]: javascript:alert(5)", "[a [b] c](javascript:alert(6))",
         "[x]\\](javascript:alert(7))", "  [r]: javascript:alert(8)\n[r]", "[[i]](javascript:alert(9))"]


def rendered(markdown: str) -> str:
    """The HTML a CommonMark renderer that trusts every address (as some previewers do) makes of `markdown`."""
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders the Markdown")
    renderer = markdown_it.MarkdownIt("commonmark").enable("table")
    renderer.validateLink = lambda url: True
    return renderer.render(markdown)


@pytest.mark.parametrize("text", LINKS)
def test_markdown_text_makes_no_link(text):
    """Issue 28: a `javascript:` link in a task description stayed live in report.md."""
    blocks = [Heading(text), Text(text), Items([text]), Table(["description"], [[text]]), Image(text, Path("p.png"))]
    page = rendered(to_markdown(blocks)).replace('<img src="p.png"', "")
    assert "<a " not in page and "<img" not in page and "href" not in page, page
    assert '<a href="javascript:alert(1)">x</a>' in rendered("[x](javascript:alert(1))")  # the oracle sees links


INTERVALS = ["F1 21.59 [16.8, 26.4]", "[0.0, 11.7]", "retention 92.50% [72.5, 112.5], P(>= 90%) 0.46"]


@pytest.mark.parametrize("text", INTERVALS)
def test_an_interval_is_written_as_typed_and_rendered_as_brackets(text):
    """Issue 25: every bracket was escaped, so report.md read `21.59 \\[16.8, 26.4\\]`; a bracket pair that is
    not followed by `(`, `[` or `:` makes no link and needs no escape."""
    blocks = [Heading(text), Text(text), Items([text]), Table(["F1"], [[text]])]
    markdown = to_markdown(blocks)
    assert "\\" not in markdown and markdown.count(text) == 4
    page = rendered(markdown)
    assert page.count(text.replace(">", "&gt;")) == 4 and "\\" not in page and "<a " not in page


def test_text_is_the_markdown_layout_unescaped():
    """`keeptune runs` prints this: the same padded table, the cells as they are (no backslash before | or <)."""
    blocks = [Heading("Runs", 1), Text("a <b> [1.0, 2.0]"), Table(["name", "n"], [["a|b", "7"], ["平均", "12"]])]
    assert to_text(blocks) == (
        "# Runs\n\n"
        "a <b> [1.0, 2.0]\n\n"
        "| name |   n |\n"
        "| ---- | --: |\n"
        "| a|b  |   7 |\n"
        "| 平均 |  12 |\n")
