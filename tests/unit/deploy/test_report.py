"""The output stream that keeps secrets out of everything the tool prints."""

from __future__ import annotations

import io

from rich.console import Console

from relay_deploy.report import Redacting, hide


def test_every_known_secret_is_replaced_whatever_prints_it() -> None:
    shared: list[str] = []
    out, err = io.StringIO(), io.StringIO()
    out_r, err_r = Redacting(out, shared), Redacting(err, shared)
    out_r.hide("cf-token-123", "", "abc")  # empty and very short values are not secrets
    console = Console(file=out_r, highlight=False, width=200)  # type: ignore[arg-type]
    errors = Console(file=err_r, highlight=False, width=200)  # type: ignore[arg-type]
    console.print("token cf-token-123 in a message; abc stays")
    hide(console, "turn-secret-generated")
    errors.print("error: the API said: turn-secret-generated and cf-token-123")
    assert out.getvalue() == "token *** in a message; abc stays\n"
    assert err.getvalue() == "error: the API said: *** and ***\n"


def test_longer_secret_wins_over_its_prefix() -> None:
    buf = io.StringIO()
    stream = Redacting(buf)
    stream.hide("secret", "secret-and-more")
    stream.write("secret-and-more|secret")
    assert buf.getvalue() == "***|***"
