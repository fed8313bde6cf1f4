"""Jobs in OCI images over a real server: a rank in an image built here sees its GPUs, and a
missing image is refused at submit with the reason (one gone by the start fails it: see
tests/backends/test_container.py), never a hung job."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.api.conftest import Server, serving
from tests.backends.images import built_image

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman and fake GPU devices need root")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("images")
    devices = root / "dev"
    devices.mkdir()
    for name, minor in [*((f"nvidia{i}", i) for i in range(8)), ("nvidiactl", 255)]:
        os.mknod(devices / name, 0o666 | 0o020000, os.makedev(195, minor))
    with serving(Server(root / "data", None, args=("--gpu-devices", str(devices)))) as srv:
        yield srv


def test_a_rank_in_an_image_built_here_sees_its_gpus_and_only_them(cloud: Server) -> None:
    c = cloud.client()
    job = c.submit({"name": "in-image", "gpus": 2, "image": built_image(),
                    "command": 'echo "debian $(cat /etc/debian_version) gpus $CUDA_VISIBLE_DEVICES"; '
                               "ls /dev | grep '^nvidia[0-9]'"})
    done = c.wait(job["id"], timeout=120)
    assert done["state"] == "COMPLETED", c.events(job["id"])
    out = c.logs(job["id"])["text"].splitlines()
    gpus = [int(g) for g in done["placement"][0]["gpus"]]
    assert out[0].startswith("debian 12.") and out[0].endswith(f"gpus {','.join(map(str, gpus))}")
    assert out[1:] == [f"nvidia{g}" for g in sorted(gpus)]


def test_a_missing_image_is_a_422_at_submit_with_the_reason(cloud: Server) -> None:
    from neocloud.client import ApiError

    with pytest.raises(ApiError) as e:
        cloud.client().submit({"name": "no-image", "gpus": 1, "image": "localhost/not-here:1", "command": "true"})
    assert e.value.status == 422 and "image 'localhost/not-here:1' is not on this node" in str(e.value)


def test_an_image_reference_that_is_not_one_is_a_422(cloud: Server) -> None:
    from neocloud.client import ApiError

    with pytest.raises(ApiError) as e:
        cloud.client().submit({"name": "bad", "gpus": 1, "image": "Not An Image!", "command": "true"})
    assert e.value.status == 422 and "image" in str(e.value)
