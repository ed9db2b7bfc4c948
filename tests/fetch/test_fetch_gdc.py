"""GDC source of fetch_slide: direct download, and the shared slide store that never downloads twice."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from mmsurv.fetch.gdc import VERIFIED_SUFFIX, fetch_gdc, gdc_config, is_verified_in_store
from mmsurv.gdc.client import GdcClient, GdcConfig
from mmsurv.gdc.testserver import Faults, GdcTestServer


@pytest.fixture()
def served():
    with GdcTestServer() as server:
        data = os.urandom(300_000)
        file = server.add_file(data, filename="TCGA-AB-1234-01Z-00-DX1.X.svs")
        sample = {"slide": "TCGA-AB-1234-01Z-00-DX1.X", "slide_id": file.filename, "file_id": file.file_id,
                  "md5": hashlib.md5(data).hexdigest(), "size": len(data)}
        yield server, sample, data


def client_for(server):
    return GdcClient(GdcConfig(api=server.url, read_timeout=2, retries=2, backoff_factor=0.01))


def test_direct_download_lands_verified_at_dest(tmp_path, served):
    server, sample, data = served
    dest = tmp_path / "run/slides/s.svs"
    fetch_gdc(sample, dest, {"source": "gdc", "progress": False}, client=client_for(server))
    assert dest.read_bytes() == data and not dest.is_symlink()


def test_store_is_filled_once_and_shared(tmp_path, served):
    server, sample, data = served
    download = {"source": "gdc", "store": str(tmp_path / "store"), "progress": False}
    first, second = tmp_path / "runA/s.svs", tmp_path / "runB/s.svs"
    fetch_gdc(sample, first, download, client=client_for(server))
    fetch_gdc(sample, second, download, client=client_for(server))
    assert len(server.requests_for(sample["file_id"])) == 1, "the second run must reuse the store"
    stored = tmp_path / "store" / sample["file_id"] / sample["slide_id"]
    assert first.resolve() == second.resolve() == stored.resolve()
    assert is_verified_in_store(stored, size=len(data), md5=sample["md5"])


def test_store_entry_without_verification_record_is_downloaded_again(tmp_path, served):
    server, sample, data = served
    stored = tmp_path / "store" / sample["file_id"] / sample["slide_id"]
    stored.parent.mkdir(parents=True)
    stored.write_bytes(data[:1000])  # a half copy someone left there
    fetch_gdc(sample, tmp_path / "s.svs", {"store": str(tmp_path / "store"), "progress": False}, client=client_for(server))
    assert stored.read_bytes() == data
    assert (stored.parent / (stored.name + VERIFIED_SUFFIX)).exists()


def test_concurrent_jobs_for_one_slide_download_it_once(tmp_path, served):
    server, sample, _ = served
    server.files[sample["file_id"]].faults = Faults(throttle_bps=2_000_000)
    download = {"store": str(tmp_path / "store"), "progress": False}
    threads = [threading.Thread(target=fetch_gdc, args=(sample, tmp_path / f"run{i}/s.svs", download, client_for(server)))
               for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.requests_for(sample["file_id"])) == 1
    assert all((tmp_path / f"run{i}/s.svs").exists() for i in range(3))


def test_config_from_workflow_settings(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("abc123\n")
    token_file.chmod(0o600)
    monkeypatch.delenv("GDC_TOKEN", raising=False)
    config = gdc_config({"api": "http://127.0.0.1:9/", "read_timeout": 5, "retries": 1, "chunk_mb": 2,
                         "token_file": str(token_file)})
    assert (config.api, config.read_timeout, config.retries, config.chunk_size, config.token) == (
        "http://127.0.0.1:9", 5.0, 1, 2 * 1024 * 1024, "abc123")
