"""A report as a list of blocks, written out as Markdown or as one self-contained HTML page.

Markdown tables are padded to column width, so the file reads well in a
terminal too; text from the data is escaped for Markdown (``\\``, ``<``, ``|``, and a ``]`` that could close a
link: no raw HTML, no table break, no link) and for HTML (`html.escape`: no tag, so no link either); `to_text`
writes the same layout unescaped for a terminal. HTML images
are embedded as base64 ``data:`` URIs and the CSS is inline: the page needs no other file and no
network.
"""
from __future__ import annotations

import base64
import html
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """One paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Items:
    """A bullet list of plain text."""

    items: Sequence[str]


@dataclass(frozen=True)
class Table:
    """Rows of cell texts; the first `left` columns are left-aligned, the others (numbers) right-aligned."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    left: int = 1


@dataclass(frozen=True)
class Image:
    """A PNG file, `path` relative to the report's folder."""

    title: str
    path: Path


@dataclass(frozen=True)
class Code:
    """Verbatim text in language `lang` (a Markdown fence label); `summary` folds it away in HTML."""

    text: str
    lang: str = ""
    summary: str | None = None


Block = Heading | Text | Items | Table | Image | Code

CSS = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.75rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre { background: #f6f8fa; padding: 0.75rem; overflow-x: auto; }
figure { margin: 1rem 0; }
img { max-width: 100%; }
"""


# --- Markdown --------------------------------------------------------------------------

def to_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as Markdown, one blank line between blocks."""
    return "\n\n".join(_markdown(block, md_escape) for block in blocks) + "\n"


def to_text(blocks: Sequence[Block]) -> str:
    """The blocks laid out as `to_markdown` does but nothing escaped: for a terminal, where a Markdown escape
    would show as a backslash."""
    return "\n\n".join(_markdown(block, _one_line) for block in blocks) + "\n"


def _one_line(text: str, every_bracket: bool = False) -> str:
    return " ".join(text.splitlines())


# A `]` followed by `(` (inline link or image), `[` (reference link) or `:` (a reference definition, which a
# shortcut `[label]` would then use) is the only way brackets make a link; a bracket pair such as an interval
# `[16.8, 26.4]` makes none, so it stays as typed instead of reading `\\[16.8, 26.4\\]` in the file.
_LINK_CLOSE = re.compile(r"\](?=[(\[:])")


def md_escape(text: str, every_bracket: bool = False) -> str:
    """Plain text for Markdown: no raw HTML, no table break, no link (so no `javascript:` one), one line.

    `every_bracket` for text inside brackets (an image's alt text), where any unbalanced one would end it."""
    for char in "\\<|[]" if every_bracket else "\\<|":  # the backslash first
        text = text.replace(char, "\\" + char)
    if not every_bracket:
        text = _LINK_CLOSE.sub(r"\\]", text)
        text = re.sub(r"^(\s*)\[(?=[ xX]\])", r"\1\\[", text)  # `- [ ] x`: a GFM task list's checkbox
    return " ".join(text.splitlines())


def _markdown(block: Block, escape: Callable[..., str]) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + escape(block.text)
    if isinstance(block, Text):
        return escape(block.text)
    if isinstance(block, Items):
        return "\n".join("- " + escape(item) for item in block.items)
    if isinstance(block, Table):
        return _markdown_table(block, escape)
    if isinstance(block, Image):
        return f"![{escape(block.title, every_bracket=True)}]({block.path.as_posix()})"
    fence = "`" * max(3, _longest_backtick_run(block.text) + 1)
    return f"{fence}{block.lang}\n{block.text.rstrip()}\n{fence}"


def _markdown_table(table: Table, escape: Callable[..., str]) -> str:
    grid = [[escape(h) for h in table.headers]] + [[escape(c) for c in row] for row in table.rows]
    widths = [max(3, *(_width(row[i]) for row in grid)) for i in range(len(table.headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [_pad(text, widths[i], i >= table.left) for i, text in enumerate(cells)]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * widths[i] if i < table.left else "-" * (widths[i] - 1) + ":" for i in range(len(widths))]
    return "\n".join([line(grid[0]), line(rule)] + [line(row) for row in grid[1:]])


def _width(text: str) -> int:
    """Terminal columns of `text` (wide CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


# --- HTML ------------------------------------------------------------------------------

def to_html(blocks: Sequence[Block], title: str, folder: Path) -> str:
    """One self-contained page; images are read from `folder` and embedded."""
    body = "\n".join(_html(block, folder) for block in blocks)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _html(block: Block, folder: Path) -> str:
    esc = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{esc(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, Items):
        return "<ul>\n" + "\n".join(f"<li>{esc(item)}</li>" for item in block.items) + "\n</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{esc(h)}</th>" for h in block.headers)
        rows = ["<tr>" + "".join(_td(c, i >= block.left) for i, c in enumerate(row)) + "</tr>" for row in block.rows]
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"
    if isinstance(block, Image):
        data = base64.b64encode((folder / block.path).read_bytes()).decode("ascii")
        return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{esc(block.title)}\">"
                f"<figcaption>{esc(block.title)}</figcaption></figure>")
    code = f"<pre><code>{esc(block.text.rstrip())}</code></pre>"
    return f"<details><summary>{esc(block.summary)}</summary>\n{code}\n</details>" if block.summary else code


def _td(text: str, numeric: bool) -> str:
    return f'<td class="num">{html.escape(text)}</td>' if numeric else f"<td>{html.escape(text)}</td>"
