"""A shop's own web site, for the chat embedded in it (static/widget.js): pages served from
another origin than the chat's (another port on 127.0.0.1), in a thread of this process.

    with Shop() as shop:                 # shop.url: http://127.0.0.1:<port>
        shop.chat_url = chat.url         # allowed by the shop's CSP
        shop.pages["/"] = shop_page(chat.url, "Home")
"""

from __future__ import annotations

import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def shop_page(chat_url: str, title: str, links: tuple[str, ...] = (), **options: str) -> str:
    """A shop page with the snippet of docs/embed.md; `options` become its data-* attributes."""
    attributes = "".join(f' data-{name}="{html.escape(value)}"' for name, value in options.items())
    anchors = "".join(f'<a href="{html.escape(link)}">{html.escape(link)}</a> ' for link in links)
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{anchors}</p>"
        f'<script src="{chat_url}/static/widget.js" async{attributes}></script></body></html>'
    )


class Shop:
    """Serves `pages` ({path: HTML or JavaScript}) with the Content-Security-Policy a careful shop
    sends (docs/embed.md): its own files only, plus the script and the frame of `chat_url`."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        self.chat_url = ""
        self.frames: list[str] = []  # other origins the shop frames (an ad, a payment form)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805 - the handler's own self; the shop's is `self`
                body = self.pages.get(handler.path.split("?")[0])
                if body is None:
                    handler.send_error(404)
                    return
                data = body.encode()
                kind = "text/javascript" if handler.path.endswith(".js") else "text/html; charset=utf-8"
                handler.send_response(200)
                handler.send_header("Content-Type", kind)
                handler.send_header("Content-Length", str(len(data)))
                handler.send_header("Content-Security-Policy", self.policy())
                handler.send_header("Cache-Control", "no-store")
                handler.end_headers()
                handler.wfile.write(data)

            def log_message(handler, *args):  # noqa: N805
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def policy(self) -> str:
        policy = "default-src 'self'; style-src 'self'; object-src 'none'"
        if self.chat_url:
            framed = " ".join(["'self'", self.chat_url, *self.frames])
            policy += f"; script-src 'self' {self.chat_url}; frame-src {framed}"
        return policy

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Shop:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
