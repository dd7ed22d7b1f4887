"""Self-contained HTML pages of results (one file to attach to an email: plots embedded as data URIs, no
script, no link outside it): a run's page (`python -m evaluation.report RUN --html FILE`) and a reproduced
table's page (`reproduce` writes <table>.html beside its Markdown).

The Markdown of the tables is turned into HTML by python-markdown (its `tables` extension), which TensorBoard
already depends on.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = """body{font:14px/1.45 system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}h1{font-size:1.6em}h2{margin-top:1.6em}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}code,pre{background:#f6f6f6;font-size:12px}
pre{padding:.6em;overflow-x:auto}.meta td{text-align:left}"""


def escape(text) -> str:
    return html.escape(str(text))


def image(path: Path, alt: str) -> str:
    """An <img> holding the PNG itself (base64), so the page needs no other file."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"><figcaption>' \
           f"{html.escape(alt)}</figcaption></figure>"


def markdown(text: str) -> str:
    import markdown as md
    return md.markdown(text, extensions=["tables"])


def page(title: str, body: list[str]) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def meta_table(rows: dict) -> str:
    cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td><code>{html.escape(str(v))}</code></td></tr>"
                    for k, v in rows.items() if v not in (None, "", {}))
    return f'<table class="meta">{cells}</table>'


def table_page(markdown_text: str, figure: Path | None, title: str, seeds: int) -> str:
    """A reproduced table's page: its Markdown (tables, notes, intervals, missing cells) and its figure."""
    body = [markdown(markdown_text)]
    if figure is not None and figure.is_file():
        body.append(image(figure, f"{title}: bars mean ± std over {seeds} seeds" if seeds > 1
                          else f"{title}: bars one seed's values (no spread)"))
    return page(title, body)
