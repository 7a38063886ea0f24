"""``report.html``: one self-contained page (plots embedded as base64 PNG, no external file, script
or font) that a person opens in a browser and reads top to bottom: what was compared, the
protocol, the tables (``report.tables``), the plots."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from .report import PLOTS, Table, summary

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222;
       line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
p.note { color: #555; font-size: 0.9em; } img { max-width: 100%; border: 1px solid #eee; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""

PROTOCOL = [
    "Every mixer gets the same task, data order, seeds, optimizer, schedule and number of steps at each "
    "training length; only the mixer differs (a preset may give a family its own learning rate, as the "
    "papers do: it is in each run's config).",
    "Each model is scored on the test split at its training length and on the same task rebuilt at longer "
    "lengths (the task's length knob), with the weights as trained: recurrent mixers run in their "
    "linear-cost mode, attention with the positional scheme it was trained with.",
    "A length that is predicted not to fit half the available memory, or the time budget, is skipped and "
    "the reason is recorded; nothing is extrapolated in its place.",
    "Speed and memory are measured in the same run for every mixer, so ratios between rows are "
    "meaningful; absolute seconds depend on the machine and its load.",
]


def _inline(text: str) -> str:
    """Escape, then render the only Markdown the tables use: `code`."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _table(t: Table) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    note = f'<p class="note">{_inline(t.note)}</p>' if t.note else ""
    return f"<h2>{_inline(t.title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _image(title: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<h2>{html.escape(title.capitalize())}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'


def page(results: dict[str, Any], tables: list[Table], plots: dict[str, Path]) -> str:
    spec = results["spec"]
    command = "ssmkit compare " + " ".join(
        f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in spec.items() if v not in (None, [], "") and k not in ("overrides",))
    command += "".join(f" --set {o}" for o in spec.get("overrides", []))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>ssmkit comparison</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>SSMs and their peers vs attention as sequences grow</h1>",
        f"<p>{_inline(summary(results))}</p>",
        f"<p class='note'>Settings: <code>{html.escape(command)}</code></p>",
        "<h2>Protocol</h2><ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in PROTOCOL) + "</ul>",
    ]
    parts += [_table(t) for t in tables]
    parts += [_image(PLOTS[name], path) for name, path in plots.items()]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
