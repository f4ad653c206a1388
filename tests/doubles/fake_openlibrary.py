"""Fake Open Library (``/ol``): the four routes the relay calls, checking the parameters the
original relay sent (the Books API's ``bibkeys``/``jscmd``/``format``) and answering unknown
works and authors with Open Library's own 404 shape (an unknown ISBN is a 200 ``{}``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from tests.doubles.fake_upstream import Call, LoopbackFake, odd_json

UNKNOWN_WORK = "OL999999999W"
UNKNOWN_ISBN = "9780000000002"


@dataclass
class FakeOpenLibrary(LoopbackFake):
    def env(self) -> dict[str, str]:
        return {"OPENLIBRARY_BASE_URL": self.url("/ol")}

    async def answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        path = request.path.removeprefix("/ol")
        if path == "/search.json":
            return self._json({"numFound": 1, "q": call.params})
        if path == "/api/books":
            if call.params.get("jscmd") != "data" or call.params.get("format") != "json":
                return web.Response(status=400, text="jscmd=data&format=json expected")
            bibkeys = call.params.get("bibkeys", "")
            if not re.fullmatch(r"ISBN:[0-9]{9}[0-9X]|ISBN:[0-9]{13}", bibkeys):
                return web.Response(status=400, text="bad bibkeys")
            if bibkeys == f"ISBN:{UNKNOWN_ISBN}":
                return web.json_response({})
            return self._json({bibkeys: {"title": "A book", "params": call.params}})
        m = re.fullmatch(r"/(works|authors)/(OL[0-9]+[WA])\.json", path)
        if m is None or m.group(2) == UNKNOWN_WORK:
            return web.json_response({"error": "notfound", "key": path.removesuffix(".json")},
                                     status=404)
        return self._json({"key": f"/{m.group(1)}/{m.group(2)}", "params": call.params})

    def _json(self, doc: dict[str, object]) -> web.Response:
        return web.Response(body=odd_json(doc), content_type="application/json")
