"""A rank in an OCI image: the walls the sandbox builds, built by podman."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from neocloud.backends.container import ENV_FD, Containers, env_file
from neocloud.backends.identity import Identity
from neocloud.errors import NeocloudError
from tests.backends.images import built_image

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman runs as root")

PROBE = """
echo "uid=$(id -u) cwd=$(pwd) home=$HOME secret=$API_KEY cuda=$CUDA_VISIBLE_DEVICES"
echo "gpus=$(ls /dev | grep nvidia | tr '\\n' ' ')"
test -e "$HOST_DATA" && echo "host data seen" || echo "host data hidden"
echo "work=$(ls /job | tr '\\n' ' ')"
echo "pids=$(ls /proc | grep -c '^[0-9]')"
"""


def _start(argv: list[str], env_text: str, **kw: object) -> subprocess.Popen:
    """Start a rank's podman with its env file on ENV_FD, as the supervisor does."""
    r, w = os.pipe()
    os.write(w, env_text.encode())
    os.close(w)
    try:  # placed on ENV_FD in the child only: the test process's own descriptors are left alone
        return subprocess.Popen(argv, text=True, pass_fds=(ENV_FD,), preexec_fn=lambda: os.dup2(r, ENV_FD),
                                **kw)  # type: ignore[call-overload]
    finally:
        os.close(r)


def test_a_rank_in_an_image_runs_as_its_tenant_and_sees_only_its_own(tmp_path: Path) -> None:
    image = built_image()
    work = tmp_path / "work"
    work.mkdir()
    work.chmod(0o777)
    (work / "train.py").write_text("print('hi')\n")
    devices = tmp_path / "dev"
    devices.mkdir()
    for name, minor in [("nvidia0", 0), ("nvidia1", 1), ("nvidia2", 2), ("nvidiactl", 255)]:
        os.mknod(devices / name, 0o666 | 0o020000, os.makedev(195, minor))
    containers = Containers(devices=devices)
    who = Identity("nobody", 65534, 65534)
    (work / "probe.sh").write_text(PROBE)
    rank, text = containers.rank(image, ["sh", "/job/probe.sh"],
                                 {"API_KEY": "s3cret", "CUDA_VISIBLE_DEVICES": "0,1", "HOST_DATA": str(tmp_path)},
                                 who, work, None, (0, 1), f"neocloud-test-{os.getpid()}")
    assert "s3cret" not in " ".join(rank.argv)  # never in arguments every user can read
    proc = _start(rank.argv, text, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        subprocess.run(rank.after or [], capture_output=True)  # as the supervisor does once podman has ended
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[:4] == ["uid=65534 cwd=/job home=/job secret=s3cret cuda=0,1", "gpus=nvidia0 nvidia1 nvidiactl ",
                         "host data hidden", "work=probe.sh train.py "]
    assert int(lines[4].removeprefix("pids=")) < 10  # its own few processes, none of the host's hundreds


def test_a_missing_image_is_a_clear_reason_and_a_line_break_in_a_value_is_refused() -> None:
    built_image()  # podman is there
    why = Containers().missing("localhost/no-such-image:1")
    assert why is not None and "not on this node" in why and "podman load" in why
    with pytest.raises(NeocloudError, match="line break"):
        env_file({"A": "one\ntwo"})


def test_a_graceful_stop_reaches_the_rank_s_own_process_in_the_image(tmp_path: Path) -> None:
    image = built_image()
    work = tmp_path / "work"
    work.mkdir()
    rank, text = Containers().rank(image, ["sh", "-c", "trap 'echo stopped; exit 7' TERM; echo ready; "
                                                       "while :; do sleep 0.1; done"],
                                   {}, None, work, None, (), f"neocloud-test-stop-{os.getpid()}")
    proc = _start(rank.argv, text, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert rank.stop is not None
        subprocess.run(rank.stop, check=True, capture_output=True, timeout=60)  # as the supervisor's graceful stop
        assert proc.wait(timeout=60) == 7 and proc.stdout.read() == "stopped\n"  # once, with its own status
    finally:
        subprocess.run(rank.after or [], capture_output=True)


def test_the_local_backend_runs_a_rank_in_its_image_stops_it_gracefully_and_refuses_a_missing_one(
        tmp_path: Path) -> None:
    from neocloud.backends.base import Task
    from neocloud.backends.cgroups import Cgroup
    from neocloud.backends.local import LocalBackend
    from tests.api.conftest import wait_for

    image = built_image()
    backend = LocalBackend(tmp_path)
    try:
        backend.launch([Task(1, 1, 'echo "in $(cat /etc/debian_version) as $(id -u) with $SECRET"', {"SECRET": "s3"},
                             (("n0", (0,)),), tenant="alice", image=image)])
        backend.launch([Task(2, 1, "trap 'echo stopping; exit 5' TERM; echo up; while :; do sleep 0.1; done", {},
                             (("n0", (1,)),), tenant="alice", image=image)])
        assert backend.launch([Task(3, 1, "true", {}, (("n0", (2,)),), tenant="alice",
                                    image="localhost/missing:1")]) == [
            (3, "image 'localhost/missing:1' is not on this node (no registry is pulled from): load it first with "
                "`podman load` or `podman import`")]
        wait_for(lambda: b"up" in backend.log_path(2, 0, "stdout").read_bytes(), timeout=120)
        backend.stop(2, 1)
        ended: dict = {}
        wait_for(lambda: ended.update({e.job_id: e.codes for e in backend.poll()}) or len(ended) == 2, timeout=120)
        assert ended == {1: (0,), 2: (5,)}
        out = backend.log_path(1, 0, "stdout").read_text()
        uid = out.split(" as ")[1].split()[0]
        assert out.startswith("in 12.") and out.endswith("with s3\n") and uid != "0"
        assert backend.log_path(2, 0, "stdout").read_text() == "up\nstopping\n"  # the stop came once
        assert Cgroup.leftovers(backend.instance) == []
        assert backend.containers.leftovers(f"neocloud-{backend.instance}-") == []  # removed once ended
    finally:
        backend.reap_orphans(set())
        backend.close()


def test_a_restart_removes_the_containers_of_attempts_it_does_not_keep(tmp_path: Path) -> None:
    from neocloud.backends.local import LocalBackend

    image = built_image()
    backend = LocalBackend(tmp_path)
    names = {key: f"neocloud-{backend.instance}-j{key[0]}-a{key[1]}-r0" for key in ((7, 1), (8, 2))}
    stranger = secrets.token_hex(6)
    other = f"neocloud-{stranger}-j7-a1-r0"  # another neocloud's on this host
    try:
        for name in [*names.values(), other]:  # as a podman killed with its server leaves them: stopped, not removed
            subprocess.run(["podman", "create", "--pull=never", "--name", name, image, "true"], check=True,
                           capture_output=True)
        assert backend.reap_orphans({(8, 2)}) == [(7, 1)]
        assert backend.containers.leftovers(f"neocloud-{backend.instance}-") == [names[(8, 2)]]
        assert backend.containers.leftovers(f"neocloud-{stranger}-") == [other]
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", *names.values(), other], capture_output=True)
        backend.close()
