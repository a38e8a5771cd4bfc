"""User text inside the page's Markdown (adapter names, descriptions, notes) shows exactly as written: never a link
(written or automatic), an image, HTML, an entity or a table cell. Checked with a CommonMark renderer here, and in
Chromium with Gradio's own renderer (GFM, whose bare-URL autolinks CommonMark does not have)."""
from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from studio.ui.common import md_escape

HOSTILE = [
    # (case, text a person could type as an adapter name or description)
    ("url", "https://evil.example/x?y=1"),
    ("url in a name", "lofi from http://evil.example"),
    ("www", "see www.evil.example now"),
    ("www in capitals", "WWW.EVIL.EXAMPLE"),
    ("e-mail", "mail me@evil.example"),
    ("mailto", "mailto:me@evil.example"),
    ("angle autolink", "<https://evil.example>"),
    ("markdown link", "[click](https://evil.example)"),
    ("reference link", "[click][1] [1]: https://evil.example"),
    ("image", "![x](https://evil.example/x.png)"),
    ("img tag", '<img src="https://evil.example/x.png" onerror=alert(1)>'),
    ("anchor tag", '<a href="https://evil.example">link</a>'),
    ("table pipes", "a | b | c"),
    ("html entities", "&lt;b&gt; &amp; &#60;i&#62; &copy;"),
    ("emphasis and code", "**bold** _it_ `code` ~~gone~~"),
    ("heading and list", "# big\n- item\n1. first"),
    ("backslashes", "C:\\music\\lofi\\"),
    ("plain", "lofi-v2.1 (warm) #3"),
]
IDS = [h[0] for h in HOSTILE]


def shown(text: str) -> str:
    """What a person reads: newlines become spaces (a name is one line)."""
    return text.replace("\n", " ")


@pytest.mark.parametrize("text", [h[1] for h in HOSTILE], ids=IDS)
def test_user_text_renders_as_written_in_a_table_cell(text):
    md = MarkdownIt("commonmark").enable("table")
    page = md.render(f"### {md_escape(text)}\n\n| About | |\n|---|---|\n| Name | {md_escape(text)} |\n")
    for tag in ("<a", "<img", "<em", "<strong", "<code", "<ul", "<ol", "<h1"):
        assert tag not in page, (tag, page)
    assert page.count("<td>") == 2  # one row of two cells: no pipe split a cell
    import html as html_lib
    import re

    texts = [html_lib.unescape(t) for t in re.findall(r"<(?:h3|td)>(.*?)</(?:h3|td)>", page)]
    assert texts[0] == shown(text) and texts[-1] == shown(text), texts



@pytest.mark.browser
def test_gradio_renders_user_text_as_written_never_a_link():
    """Gradio's Markdown (marked, GFM: bare URLs, www. and e-mail addresses become links) in Chromium."""
    from tests.browser_support import sync_api  # skips without Chromium
    import gradio as gr

    from tests.live import BROWSER_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS, free_port

    with gr.Blocks() as demo:
        for i, (_, text) in enumerate(HOSTILE):
            gr.Markdown(f"### {md_escape(text)}\n\n| About | |\n|---|---|\n| Name | {md_escape(text)} |",
                        elem_id=f"md-{i}")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            page.goto(f"http://127.0.0.1:{port}/")
            for i, (case, text) in enumerate(HOSTILE):
                box = page.locator(f"#md-{i}")
                sync_api.expect(box.locator("h3")).to_have_count(1)
                assert box.locator("a, img, em, strong, code, ul, ol, h1").count() == 0, (case, box.inner_html())
                assert box.locator("td").count() == 2, case
                assert box.locator("h3").inner_text() == shown(text), case
                assert box.locator("td").nth(1).inner_text() == shown(text), case
            browser.close()
    finally:
        demo.close()
