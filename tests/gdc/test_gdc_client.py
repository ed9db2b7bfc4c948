"""GdcClient.download against a real local HTTP server: resume, retries, verification, auth, token hygiene."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time

import pytest

from mmsurv.gdc.client import (
    FileSpec,
    GdcAuthError,
    GdcClient,
    GdcHttpError,
    GdcIntegrityError,
    GdcNotFoundError,
    GdcTransferError,
    is_complete,
    part_path,
)
from mmsurv.gdc.testserver import Faults
from mmsurv.gdc.token import GdcTokenError, load_token

SIZE = 300_000


def ranges(server, served):
    return [r.headers.get("Range") for r in server.requests_for(served.file_id)]


def download(client, served, dest, **kwargs):
    return client.download(served.file_id, dest, md5=served.md5, size=served.size,
                           filename=served.filename, progress=False, **kwargs)


def test_plain_download(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, filename="slide.svs")
    dest = tmp_path / "out" / "slide.svs"
    assert download(client, served, dest) == dest
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert ranges(gdc_server, served) == [None]


def test_download_without_known_size_or_md5(gdc_server, client, payload, tmp_path):
    data = payload(SIZE, seed=1)
    served = gdc_server.add_file(data)
    dest = client.download(served.file_id, tmp_path / "x.svs", progress=False)
    assert dest.read_bytes() == data


def test_empty_file(gdc_server, client, tmp_path):
    served = gdc_server.add_file(b"")
    assert download(client, served, tmp_path / "empty.svs").read_bytes() == b""
    served = gdc_server.add_file(b"")
    assert client.download(served.file_id, tmp_path / "e2.svs", progress=False).read_bytes() == b""


def test_cut_connection_resumes_from_the_bytes_on_disk(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(cut_after=123_457))
    dest = download(client, served, tmp_path / "a.svs")
    assert ranges(gdc_server, served) == [None, "bytes=123457-"]
    assert dest.read_bytes() == data


def test_repeated_cuts_each_resume_further(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(cut_after=50_000, cut_times=4))
    dest = download(client, served, tmp_path / "a.svs")
    assert ranges(gdc_server, served) == [None, "bytes=50000-", "bytes=100000-", "bytes=150000-", "bytes=200000-"]
    assert dest.read_bytes() == data


def test_existing_part_file_is_resumed(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data)
    dest = tmp_path / "a.svs"
    part_path(dest).write_bytes(data[:70_000])
    download(client, served, dest)
    assert ranges(gdc_server, served) == ["bytes=70000-"]
    assert dest.read_bytes() == data


def test_complete_part_file_is_verified_without_a_request(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data)
    dest = tmp_path / "a.svs"
    part_path(dest).write_bytes(data)
    download(client, served, dest)
    assert ranges(gdc_server, served) == []
    assert dest.read_bytes() == data


def test_complete_part_of_unknown_size_ends_with_416(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data)
    dest = tmp_path / "a.svs"
    part_path(dest).write_bytes(data)
    client.download(served.file_id, dest, progress=False)
    assert ranges(gdc_server, served) == [f"bytes={SIZE}-"]
    assert dest.read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(cut_after=100_000, ignore_range=True))
    dest = download(client, served, tmp_path / "a.svs")
    assert ranges(gdc_server, served) == [None, "bytes=100000-"]  # answered 200 with the whole file
    assert dest.read_bytes() == data


def test_stale_part_with_range_ignored_is_truncated(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(ignore_range=True))
    dest = tmp_path / "a.svs"
    part_path(dest).write_bytes(b"\0" * 1000)  # garbage from some earlier run
    download(client, served, dest)
    assert dest.read_bytes() == data


def test_burst_of_503_then_success(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(fail_statuses=[503, 503, 503]))
    dest = download(client, served, tmp_path / "a.svs")
    assert len(ranges(gdc_server, served)) == 4
    assert dest.read_bytes() == data


def test_503_beyond_the_retries_fails(gdc_server, client, payload, tmp_path):
    served = gdc_server.add_file(payload(1000), faults=Faults(fail_statuses=[503] * 10))
    with pytest.raises(GdcHttpError, match="HTTP 503 after 3 retries") as error:
        download(client, served, tmp_path / "a.svs")
    assert error.value.status == 503
    assert len(ranges(gdc_server, served)) == 4
    assert not (tmp_path / "a.svs").exists()


def test_wrong_md5_is_retried_then_fails_naming_file_and_digests(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, filename="bad.svs", faults=Faults(corrupt_times=-1))
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0xFF
    got = hashlib.md5(corrupted).hexdigest()
    dest = tmp_path / "bad.svs"
    with pytest.raises(GdcIntegrityError) as error:
        download(client, served, dest)
    message = str(error.value)
    assert served.file_id in message and "bad.svs" in message
    assert served.md5 in message and got in message
    assert len(ranges(gdc_server, served)) == 2  # verify_attempts whole downloads
    assert os.listdir(tmp_path) == []  # nothing at dest, no .part


def test_one_corrupt_transfer_is_repaired_by_a_new_download(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(corrupt_times=1))
    dest = download(client, served, tmp_path / "a.svs")
    assert ranges(gdc_server, served) == [None, None]
    assert dest.read_bytes() == data


def test_403_without_token_fails_at_once_with_how_to(gdc_server, client, payload, tmp_path):
    served = gdc_server.add_file(payload(1000), faults=Faults(status=403))
    with pytest.raises(GdcAuthError) as error:
        download(client, served, tmp_path / "a.svs")
    message = str(error.value)
    assert "no token was given" in message and "Download Token" in message and served.file_id in message
    assert len(ranges(gdc_server, served)) == 1
    assert os.listdir(tmp_path) == []


def test_404_names_the_unknown_file_id(gdc_server, client, tmp_path):
    with pytest.raises(GdcNotFoundError, match="nope-123.*unknown to GDC"):
        client.download("nope-123", tmp_path / "a.svs", progress=False)
    assert len(gdc_server.requests) == 1


def test_stall_mid_body_hits_read_timeout_and_resumes(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(stall_after=100_000, stall_seconds=5))
    started = time.monotonic()
    dest = download(client, served, tmp_path / "a.svs")
    assert time.monotonic() - started < 3
    assert ranges(gdc_server, served) == [None, "bytes=100000-"]
    assert dest.read_bytes() == data


def test_stall_before_headers_is_retried(gdc_server, client, payload, tmp_path):
    data = payload(SIZE)
    served = gdc_server.add_file(data, faults=Faults(stall_before_headers=True, stall_seconds=5))
    dest = download(client, served, tmp_path / "a.svs")
    assert ranges(gdc_server, served) == [None, None]
    assert dest.read_bytes() == data


def test_unreachable_server_fails_with_transfer_error(make_config, tmp_path):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with GdcClient(make_config(api=f"http://127.0.0.1:{port}", retries=1)) as dead:
        with pytest.raises(GdcTransferError, match="cannot download file abc"):
            dead.download("abc", tmp_path / "a.svs", progress=False)


def test_token_is_sent_and_never_leaks(gdc_server, make_config, payload, tmp_path, caplog, capsys, token):
    caplog.set_level(logging.DEBUG)
    data = payload(SIZE)
    served = gdc_server.add_file(data, token=token, faults=Faults(cut_after=50_000))
    other = gdc_server.add_file(payload(1000), token="another-users-token")
    config = make_config(token=token)
    with GdcClient(config) as authed:
        authed.download(served.file_id, tmp_path / "a.svs", md5=served.md5, progress=True)
        with pytest.raises(GdcAuthError) as error:
            authed.download(other.file_id, tmp_path / "b.svs", progress=True)
        client_repr = repr(authed)
    assert [r.headers.get("X-Auth-Token") for r in gdc_server.requests_for(served.file_id)] == [token, token]
    assert "rejected the token" in str(error.value)
    captured = capsys.readouterr()
    for text in (caplog.text, captured.out, captured.err, str(error.value), repr(error.value),
                 repr(config), client_repr):
        assert token not in text


def test_token_is_not_sent_to_the_files_endpoint(gdc_server, make_config, token):
    with GdcClient(make_config(token=token)) as authed:
        authed.request_json("POST", "files", json_body={"size": 1})
    assert "X-Auth-Token" not in gdc_server.requests[-1].headers


def test_token_file_readable_by_others_warns(tmp_path, caplog, token):
    path = tmp_path / "gdc-token.txt"
    path.write_text(token + "\n")
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="mmsurv.gdc.token"):
        assert load_token(path) == token
    assert "chmod 600" in caplog.text and token not in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="mmsurv.gdc.token"):
        assert load_token(path) == token
    assert caplog.text == ""


def test_token_sources_in_order(tmp_path, token):
    path = tmp_path / "t"
    path.write_text("from-file")
    path.chmod(0o600)
    assert load_token(environ={}) is None
    assert load_token(environ={"GDC_TOKEN": f" {token}\n"}) == token
    assert load_token(environ={"GDC_TOKEN_FILE": str(path)}) == "from-file"
    assert load_token(environ={"GDC_TOKEN": token, "GDC_TOKEN_FILE": str(path)}) == token
    assert load_token(path, environ={"GDC_TOKEN": token}) == "from-file"


def test_bad_token_files(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(GdcTokenError, match="does not hold a single token"):
        load_token(empty)
    with pytest.raises(GdcTokenError, match="does not exist"):
        load_token(tmp_path / "missing")


def test_download_many_skips_complete_files_and_isolates_failures(gdc_server, client, payload, tmp_path):
    good = [gdc_server.add_file(payload(SIZE, seed=i), filename=f"s{i}.svs") for i in range(3)]
    bad = gdc_server.add_file(payload(1000), filename="missing.svs", faults=Faults(status=404))
    specs = [FileSpec(f.file_id, f.filename, f.md5, f.size) for f in [*good, bad]]
    (tmp_path / "s0.svs").write_bytes(payload(SIZE, seed=0))
    results = client.download_many(specs, tmp_path, workers=3, progress=False)
    assert [r.status for r in results] == ["skipped", "downloaded", "downloaded", "failed"]
    assert "unknown to GDC" in results[3].error
    assert gdc_server.requests_for(good[0].file_id) == []
    assert all(is_complete(tmp_path / f.filename, f.size, f.md5) for f in good)
    again = client.download_many(specs[:3], tmp_path, workers=2, progress=False)
    assert [r.status for r in again] == ["skipped"] * 3


def test_download_many_rejects_unsafe_or_duplicate_names(client, tmp_path):
    from mmsurv.gdc.client import GdcError

    with pytest.raises(GdcError, match="unsafe file name"):
        client.download_many([FileSpec("a", "../evil.svs")], tmp_path, progress=False)
    with pytest.raises(GdcError, match="share the file name"):
        client.download_many([FileSpec("a", "x.svs"), FileSpec("b", "x.svs")], tmp_path, progress=False)


def test_token_header_is_dropped_on_redirect_to_another_host(token):
    import requests

    from mmsurv.gdc.client import GdcConfig, build_session

    session = build_session(GdcConfig())
    original = requests.Request("GET", "https://api.gdc.cancer.gov/data/x", headers={"X-Auth-Token": token}).prepare()
    response = requests.Response()
    response.request = original
    for target, kept in (("https://api.gdc.cancer.gov/data/y", True), ("https://elsewhere.example/y", False)):
        follow = original.copy()
        follow.prepare_url(target, None)
        session.rebuild_auth(follow, response)
        assert ("X-Auth-Token" in follow.headers) is kept
