import base64
import hashlib
import hmac

from metadata_relay.turn.credentials import rest_credential


def test_rest_credential_format() -> None:
    user, password = rest_credential("s3cret", "sess", 3600, 1_700_000_000.7)
    assert user == "1700003600:sess"
    expected = hmac.new(b"s3cret", user.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected
    assert rest_credential("other", "sess", 3600, 1_700_000_000)[1] != password
