"""The pieces every page is made of: escaping, the page shell, tables, and data for a
page's script. Standard library only.

A page opens from ``file://`` with no network: its CSS and script are inline, and its
Content-Security-Policy forbids fetching anything (``default-src 'none'``) and runs only
the page's own script (by its hash), so that markup that slipped through escaping could
neither load nor run anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Sequence
from typing import Any


class Raw(str):
    """Markup already built (and escaped) by this package: a table cell that is not text."""

    __slots__ = ()


def esc(text: object) -> str:
    """Text for HTML content or a quoted attribute value."""
    return html.escape(str(text), quote=True)


def cell(value: object) -> str:
    """A table cell's inside: markup as it is, anything else as escaped text."""
    return value if isinstance(value, Raw) else esc("" if value is None else value)


def table(
    header: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    cls: str = "",
    numeric: Iterable[int] = (),
) -> Raw:
    """A table: each cell text (escaped) or :class:`Raw` markup; the ``numeric`` columns
    right-aligned."""
    right = set(numeric)

    def td(tag: str, i: int, value: object) -> str:
        return (
            f'<{tag} class="num">{cell(value)}</{tag}>'
            if i in right
            else f"<{tag}>{cell(value)}</{tag}>"
        )

    head = "".join(td("th", i, h) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(td("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows
    )
    klass = f' class="{esc(cls)}"' if cls else ""
    return Raw(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def json_data(element_id: str, data: Any) -> Raw:
    """``data`` as JSON inside ``<script type="application/json">``, which the browser
    never runs: ``<``, ``>`` and ``&`` are written as JSON escapes, so no text in it can
    close the element (``</script>``) or open a comment. Read it back with
    ``JSON.parse(document.getElementById(id).textContent)``."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    # U+2028 and U+2029 are valid in JSON strings; escaped all the same for any reader
    # that takes the text for JavaScript.
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Raw(f'<script type="application/json" id="{esc(element_id)}">{text}</script>')


BASE_CSS = """
:root{--ok:#1b7f3b;--bad:#c62828;--warn:#a15c00;--muted:#666;--line:#ddd;--soft:#f6f6f6}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
  max-width:1400px;margin:20px auto;padding:0 16px}
h1{font-size:1.45em;margin:0 0 .3em}
h2{font-size:1.15em;margin:1.5em 0 .4em;border-bottom:1px solid var(--line);padding-bottom:.2em}
h3{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:left;vertical-align:top}
th{background:var(--soft)}
.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.muted{color:var(--muted)}
pre,.pre{white-space:pre-wrap;overflow-wrap:anywhere;
  font:12.5px/1.4 ui-monospace,Menlo,Consolas,monospace;background:var(--soft);
  padding:6px 8px;margin:.3em 0;max-height:28em;overflow:auto}
"""


def page(title: str, body: str, *, css: str = "", script: str = "") -> str:
    """A whole HTML document: ``title`` is text (escaped), ``body`` markup, ``css`` and
    ``script`` inline. The policy lets nothing be fetched and no other script run."""
    policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    if script:
        digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
        policy += f"; script-src 'sha256-{digest}'"
    return "".join(
        [
            "<!DOCTYPE html>\n",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{esc(policy)}">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>{esc(title)}</title>",
            f"<style>{BASE_CSS}{css}</style></head><body>",
            body,
            f"<script>{script}</script>" if script else "",
            "</body></html>\n",
        ]
    )
