"""A self-contained HTML page from sections of text, tables and matplotlib figures (PNG embedded as data URIs).

No network: no external CSS, fonts or scripts. Used by `rlscale report`.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
figure{margin:.8em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
.note{background:#f7f7f0;border-left:4px solid #cc9;padding:.5em 1em}.grid{display:flex;flex-wrap:wrap;gap:1em}
.grid figure{flex:1 1 480px}code{background:#f4f4f4;padding:0 .2em}
"""


def figure_png(fig, dpi: int = 110) -> bytes:
    """Render a matplotlib Figure to PNG bytes and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def img(png: bytes, caption: str = "", alt: str = "") -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{uri}" alt="{html.escape(alt or caption)}">{cap}</figure>'


def table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.4g}") -> str:
    """An HTML table from a list of dicts (columns in first-seen order unless given)."""
    if not rows:
        return "<p><em>no rows</em></p>"
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]

    def cell(v) -> str:
        if isinstance(v, float):
            return floatfmt.format(v)
        return html.escape("" if v is None else str(v))

    head = "".join(f'<th class="l">{html.escape(c)}</th>' if i == 0 else f"<th>{html.escape(c)}</th>"
                   for i, c in enumerate(columns))
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{cell(r.get(c))}</td>' if i == 0 else f"<td>{cell(r.get(c))}</td>"
                         for i, c in enumerate(columns)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv_table(d: dict, floatfmt: str = "{:.4g}") -> str:
    """A two-column (key, value) table of a flat dict; lists and dicts are shown as compact JSON."""
    import json

    rows = [{"field": k, "value": json.dumps(v) if isinstance(v, (list, dict, tuple)) else v} for k, v in d.items()]
    return table(rows, ["field", "value"], floatfmt)


def para(text: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f"<p{c}>{html.escape(text)}</p>"


def plain_text(parts: list[str]) -> str:
    """The text of HTML parts (tags dropped, entities unescaped), one paragraph per part, blank lines between."""
    import re

    texts = (html.unescape(re.sub(r"<[^>]+>", " ", part)) for part in parts)
    return "\n\n".join(t for t in (" ".join(x.split()) for x in texts) if t)


@dataclass
class Section:
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, part: str) -> Section:
        self.parts.append(part)
        return self


def page(title: str, sections: list[Section], subtitle: str = "") -> str:
    body = "".join(
        f'<section id="s{i}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
        for i, s in enumerate(sections)
    )
    sub = f"<p>{html.escape(subtitle)}</p>" if subtitle else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            '<link rel="icon" href="data:,">'  # no favicon request (a file:// page would log a 404)
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{sub}{body}</body></html>\n")
