"""The GDC token never reaches stdout, stderr, a log file or an exception text, wherever it hides."""

from __future__ import annotations

import logging

import pytest
import requests

import mmsurv.cli
from mmsurv.cli import main
from mmsurv.gdc.client import GdcError, _describe, _server_message
from mmsurv.gdc.redact import MASK, RedactingFilter, redact, register_secret


class FakeResponse:
    def __init__(self, text: str, as_json: bool):
        self.text, self._json = text, as_json

    def json(self):
        if not self._json:
            raise ValueError("not JSON")
        return {"message": self.text}


@pytest.mark.parametrize("as_json", [True, False])
def test_token_at_every_offset_of_a_long_body_is_replaced(token, as_json):
    filler = "0123456789abcdef" * 40  # 640 characters, longer than the 300-character excerpt
    for offset in range(len(filler) + 1):
        body = filler[:offset] + token + filler[offset:]
        message = _server_message(FakeResponse(body, as_json), token)
        assert token not in message and token[:12] not in message, offset
        assert len(message) <= 300
        if offset < 280:
            assert MASK in message


def test_a_token_longer_than_any_limit_is_still_replaced():
    secret = "S" * 350 + "-long-token"
    register_secret(secret)
    body = "denied for " + secret + " sorry"
    message = _server_message(FakeResponse(body, True), None)
    assert "SSSSSSSSSS" not in message and message.startswith("denied for " + MASK)


def test_echoed_auth_header_and_request_exceptions_are_redacted(token):
    register_secret(token)
    echo = '{"headers": {"X-Auth-Token": "some-other-secret-value", "Host": "api"}}'
    assert "some-other-secret-value" not in redact(echo) and "X-Auth-Token" in redact(echo)
    error = requests.ConnectionError(f"connection to api failed while sending token {token}")
    assert token not in _describe(error)
    assert token not in str(GdcError(f"query failed: {token} " * 50))


def test_log_records_and_tracebacks_are_redacted(token, caplog):
    register_secret(token)
    logger = logging.getLogger("mmsurv.test_redact")
    handler_filter = RedactingFilter()
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(logging.Formatter().format(record))
    handler.addFilter(handler_filter)
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"server said {token}")
        except RuntimeError:
            logger.exception("failed with %s", token)
    finally:
        logger.removeHandler(handler)
    assert records and all(token not in record for record in records)
    assert MASK in records[0] and "RuntimeError" in records[0]


@pytest.mark.parametrize("status", [401, 403, 500])
def test_cli_never_prints_or_logs_the_token_from_a_long_error_body(status, gdc_server, payload, token, tmp_path,
                                                                   capsys, monkeypatch):
    served = gdc_server.add_file(payload(1000), filename="slide.svs")
    served.faults.status = status
    served.faults.message = "x" * 290 + "{token}" + "y" * 200 + " again {token} X-Auth-Token: {token}"
    token_file = tmp_path / "token.txt"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    log_file = tmp_path / "download.log"
    monkeypatch.setattr(mmsurv.cli, "setup_logging", mmsurv.cli.setup_logging)
    argv = ["--log-file", str(log_file), "gdc", "download", "--ids", served.file_id, "--out-dir", str(tmp_path / "out"),
            "--api", gdc_server.url, "--no-progress", "--retries", "0", "--token-file", str(token_file)]
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 1
    assert gdc_server.requests_for(served.file_id)[-1].headers.get("X-Auth-Token") == token  # it was sent
    for text in (captured.out, captured.err, log_file.read_text()):
        assert token not in text and token[:16] not in text
    assert "FAILED" in captured.err and MASK in captured.err + log_file.read_text()


def test_an_unsafe_name_from_the_gdc_lookup_says_where_it_came_from(gdc_server, payload, tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr(mmsurv.cli, "setup_logging", lambda *args, **kwargs: None)
    served = gdc_server.add_file(payload(100), filename="../evil.svs")
    code = main(["gdc", "download", "--ids", served.file_id, "--out-dir", str(tmp_path), "--api", gdc_server.url,
                 "--no-progress", "--retries", "0"])
    error = capsys.readouterr().err
    assert code == 1
    assert f"unsafe file name '../evil.svs' (from the GDC lookup of id {served.file_id})" in error
    assert "in the manifest" not in error
