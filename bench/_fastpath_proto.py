"""P1 reference column ``proto``: uvicorn with an HttpToolsProtocol subclass that answers every
GET with prebuilt bytes below ASGI (a per-request join for the date and request id) and no
lookup, metrics or keep-alive timer: the ceiling for ``metadata_relay.http.fastpath``. It was
the prototype measured before the fast path was built (BENCHMARKS.md, P1)."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bench._raw_asgi import app

BODY = Path(os.environ.get("RAW_ASGI_BODY", "/dev/null")).read_bytes()
STATIC = (b"content-type: application/json\r\ncontent-length: %d\r\n"
          b"etag: \"0123456789abcdef0123456789abcdef\"\r\nvary: accept-encoding\r\n" % len(BODY))
CORS = (b"access-control-allow-origin: *\r\n"
        b"access-control-expose-headers: x-request-id, x-cache, age, etag, retry-after\r\n")
_rid = itertools.count(1)


class Proto(HttpToolsProtocol):
    _pending: bytes | None = None

    def on_headers_complete(self) -> None:
        p = self.parser
        if p.get_method() == b"GET" and not p.should_upgrade() and (
                self.cycle is None or self.cycle.response_complete) and not self.pipeline:
            dh = b"".join(b"%s: %s\r\n" % kv for kv in self.server_state.default_headers)
            self._pending = b"".join((
                b"HTTP/1.1 200 OK\r\n", dh, STATIC,
                b"x-cache: HIT\r\nage: %d\r\ncache-control: public, max-age=%d\r\n" % (5, 86400),
                b"x-request-id: abcd-%x\r\n" % next(_rid), CORS, b"\r\n", BODY))
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self.transport.write(pending)
            self.server_state.total_requests += 1
            return
        super().on_message_complete()


def main(argv: list[str]) -> None:
    port = int(argv[0])
    config: Any = uvicorn.Config(app, host="127.0.0.1", port=port, loop="uvloop", http=Proto,
                                 access_log=False, server_header=False, log_level="warning")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main(sys.argv[1:])
