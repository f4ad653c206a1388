"""Fake MusicBrainz (``/ws/2``) and Cover Art Archive (``/caa``) with an archive.org stand-in
on a second port, as unkind as the real services:

- MusicBrainz refuses a request less than ``min_gap`` (1 s) after the last one it served with
  its real 503 answer, refuses a User-Agent that names no application and contact (403), and
  demands ``fmt=json`` and exactly the original relay's ``inc=`` set per entity (400);
- the Cover Art Archive redirects (307) every image to the archive host, which redirects
  again (302) before serving bytes with a per-release content type; releases without a
  ``front-500`` thumbnail, without any front image, and an archive that answers an HTML page
  or redirects forever are there too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiohttp import web

from tests.doubles.fake_upstream import Call, LoopbackFake, odd_json

MB_RATE_ERROR = ("Your requests are exceeding the allowable rate limit. Please see "
                 "https://musicbrainz.org/doc/MusicBrainz_API/Rate_Limiting for more "
                 "information.")
INC = {
    "artist": "url-rels+genres+release-groups",
    "release": "recordings+artist-credits+labels+release-groups+genres",
    "release-group": "releases+artist-credits+genres",
    "recording": "releases+artist-credits+genres",
}
# releases the fake archive knows: mbid → (content type, image bytes)
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-bytes" * 300
PNG = b"\x89PNG\r\n\x1a\n" + b"png-bytes" * 300
MBID_JPEG = "76df3287-6cda-33eb-8e9a-044b5e15ffdd"
MBID_PNG = "1b022e01-4da6-387b-8658-8678046e4cef"
MBID_FRONT_ONLY = "f268b8bc-2768-426b-901b-c7966e76de29"  # no front-500 thumbnail
MBID_NONE = "00000000-0000-4000-8000-000000000000"  # no cover art at all
MBID_HTML = "5b11f4ce-a62d-471e-81fc-a69a8278c7da"  # the archive answers an HTML page
MBID_LOOP = "9162580e-5df4-32de-80cc-f45a8d8a9b1d"  # redirects forever
MB_NOT_FOUND = "11111111-1111-4111-8111-111111111111"
_UA = re.compile(r"\S+/\S+ \( \S+ \)")


@dataclass
class FakeMusic(LoopbackFake):
    sites: int = 2  # 0: MusicBrainz and the Cover Art Archive, 1: the archive host
    min_gap: float = 1.0  # MusicBrainz: seconds between two served requests
    refused: int = 0  # MusicBrainz 503s for going too fast
    last_served: float = float("-inf")
    images: dict[str, tuple[str, bytes]] = field(default_factory=lambda: {
        MBID_JPEG: ("image/jpeg", JPEG), MBID_PNG: ("image/png", PNG),
        MBID_FRONT_ONLY: ("image/jpeg", JPEG),
    })

    def env(self) -> dict[str, str]:
        return {"MUSICBRAINZ_BASE_URL": self.url("/ws/2"), "COVERART_BASE_URL": self.url("/caa")}

    def mb_starts(self) -> list[float]:
        """When MusicBrainz calls arrived (every call, refused ones included)."""
        return sorted(c.at for c in self.api_calls("/ws/2/"))

    def failure(self, status: int, headers: dict[str, str]) -> web.Response:
        return web.json_response({"error": "upstream trouble"}, status=status, headers=headers)

    async def answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        if request.path.startswith("/ws/2/"):
            return self._musicbrainz(request, call)
        if request.path.startswith("/caa/release/"):
            return self._coverart(request.path.removeprefix("/caa/release/"))
        if request.path.startswith(("/download/", "/ia/")):
            return self._archive(request.path)
        return web.Response(status=404, text="nope")

    # --- MusicBrainz -----------------------------------------------------------------------
    def _musicbrainz(self, request: web.Request, call: Call) -> web.Response:
        with self._lock:
            if call.at - self.last_served < self.min_gap:
                self.refused += 1
                return web.json_response({"error": MB_RATE_ERROR}, status=503)
            self.last_served = call.at
        if not _UA.fullmatch(request.headers.get("User-Agent", "")):
            return web.Response(status=403, text="Your requests are being blocked: please "
                                "send a meaningful User-Agent")
        if call.params.get("fmt") != "json":
            return web.Response(status=400, text="<error>fmt=json expected</error>",
                                content_type="application/xml")
        kind, _, mbid = request.path.removeprefix("/ws/2/").partition("/")
        if not mbid:  # a search: /ws/2/<type>?query=...
            if "query" not in call.params or kind not in INC:
                return web.json_response({"error": "Invalid search"}, status=400)
            return web.Response(body=odd_json({"count": 1, "search": kind,
                                               "params": call.params}),
                                content_type="application/json")
        inc = call.params.get("inc", "").replace(" ", "+")
        if kind not in INC or inc != INC[kind]:
            return web.json_response({"error": f"{inc} is not a valid inc parameter for the "
                                      f"{kind} resource."}, status=400)
        if mbid == MB_NOT_FOUND:
            return web.json_response({"error": "Not Found", "help": "For usage, please see: "
                                      "https://musicbrainz.org/development/mmd"}, status=404)
        return web.Response(body=odd_json({"id": mbid, "kind": kind, "params": call.params}),
                            content_type="application/json")

    # --- Cover Art Archive and the archive host ------------------------------------------------
    def _coverart(self, rest: str) -> web.Response:
        mbid, _, size = rest.partition("/")
        known = mbid in self.images or mbid in (MBID_HTML, MBID_LOOP)
        if not known or size not in ("front", "front-500") or (
                size == "front-500" and mbid == MBID_FRONT_ONLY):
            return web.Response(status=404, text=f"No cover art found for release {mbid}",
                                content_type="text/plain")
        target = self.url(f"/download/mbid-{mbid}/mbid-{mbid}-{size}.jpg", site=1)
        return web.Response(status=307, headers={"Location": target},
                            text="See: " + target)

    def _archive(self, path: str) -> web.Response:
        mbid = path.split("/")[2].removeprefix("mbid-")
        if path.startswith("/download/"):  # archive.org sends a second hop to a data node
            if mbid == MBID_LOOP:
                return web.Response(status=302, headers={"Location": path})
            return web.Response(status=302, headers={
                "Location": "/ia/" + path.removeprefix("/download/")})
        if mbid == MBID_HTML:
            return web.Response(text="<html><body>Item not available</body></html>",
                                content_type="text/html")
        kind, data = self.images[mbid]
        return web.Response(body=data, content_type=kind)
