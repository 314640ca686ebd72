"""The server scrubs proxy passwords out of what a node answers, without garbling the text."""

from __future__ import annotations

from server.services.commands import _without


def test_long_passwords_are_scrubbed_anywhere_short_ones_in_urls_only() -> None:
    text = "proxy http://alice:s3cret-pw@10.0.0.1:3128 refused; retried with s3cret-pw"
    assert _without(text, {"s3cret-pw"}) == "proxy http://alice:***@10.0.0.1:3128 refused; retried with ***"
    short = "proxy http://u:p@127.0.0.1:9 refused the connection"
    assert _without(short, {"p"}) == "proxy http://u:***@127.0.0.1:9 refused the connection"
    assert _without(None, {"p"}) is None
