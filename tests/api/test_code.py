"""Uploading a job's code: checked, kept per tenant, named by digest; bad archives refused clearly."""

from __future__ import annotations

import http.client
import io
import json
import tarfile
from pathlib import Path

import httpx
import pytest

from neocloud.cli.workdir import pack
from neocloud.client import ApiError, Client
from tests.api.conftest import ADMIN, Server


def _post(srv: Server, data: bytes, token: str = ADMIN, **kw: object) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/code", content=data, headers={"Authorization": f"Bearer {token}",
                                                                    "Content-Type": "application/gzip"}, **kw)


def test_code_goes_up_once_by_digest_and_a_bad_archive_is_a_clear_422(shared_server: Server, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    data = pack(tmp_path)
    first = _post(shared_server, data)
    assert first.status_code == 201, first.text
    assert first.json()["digest"].startswith("sha256:") and first.json()["files"] == 1
    assert _post(shared_server, data).json() == first.json()  # the same code is kept once

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.py")
        tar.addfile(info, io.BytesIO(b""))
    bad = _post(shared_server, buf.getvalue())
    assert bad.status_code == 422 and "cannot be unpacked safely" in bad.json()["detail"]
    assert _post(shared_server, b"not a tar").json()["detail"].startswith("code archive is not a gzipped tar")


def test_a_huge_upload_is_refused_unread_and_a_stranger_gets_401(shared_server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", shared_server.port, timeout=30)
    conn.putrequest("POST", "/v1/code")
    conn.putheader("Authorization", f"Bearer {ADMIN}")
    conn.putheader("Content-Length", str(65 << 20))  # announced, never sent: refused before it is read
    conn.endheaders()
    huge = conn.getresponse()
    assert huge.status == 413 and "64 MiB" in json.loads(huge.read())["detail"]
    conn.close()
    assert _post(shared_server, b"x", token="nope").status_code == 401


def test_a_tenant_uploads_only_for_itself(shared_server: Server) -> None:
    admin = shared_server.client()
    admin.create_tenant("code-team")
    token = admin.create_token("code-team", "test")
    other = _post(shared_server, b"x", token=token, params={"tenant": "someone-else"})
    assert other.status_code == 403 and "its own tenant" in other.json()["detail"]


def _tenant(srv: Server, name: str) -> tuple[Client, str]:
    admin = srv.client()
    admin.create_tenant(name)
    token = admin.create_token(name, "test")
    return srv.client(token), token


def test_a_job_runs_in_its_uploaded_code_and_another_tenant_cannot_name_it(shared_server: Server,
                                                                           tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("import os\nprint('trained in', os.path.basename(os.getcwd()) or '/')\n")
    team, token = _tenant(shared_server, "code-owner")
    digest = _post(shared_server, pack(tmp_path), token=token).json()["digest"]
    job = team.submit({"name": "train", "gpus": 1, "command": "python3 train.py && ls", "code": digest})
    done = team.wait(job["id"], timeout=60)
    assert done["state"] == "COMPLETED", team.events(job["id"])
    assert team.logs(job["id"])["text"].startswith("trained in ") and "train.py" in team.logs(job["id"])["text"]
    thief, _ = _tenant(shared_server, "code-thief")
    with pytest.raises(ApiError) as e:
        thief.submit({"name": "steal", "gpus": 1, "command": "ls", "code": digest})
    assert e.value.status == 422 and "no upload" in str(e.value)
    with pytest.raises(ApiError) as e:
        team.submit({"name": "w", "gpus": 1, "command": "ls", "workdir": "."})
    assert e.value.status == 422 and "neocloud submit` packs and uploads it" in str(e.value)
