"""A small OCI image for the tests, from Debian's packages: no registry is reachable here.

Built once per machine (mmdebstrap's `essential` variant, about 20 s) and kept in podman's store
and in CACHE, so that later runs only look it up."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

IMAGE = "localhost/neocloud-test:bookworm"
CACHE = Path("/var/cache/neocloud/rootfs-essential.tar")


def built_image() -> str:
    """The image's name, built and imported if need be; a skip (a failure in CI) without the tools."""
    podman, runc = shutil.which("podman"), shutil.which("runc")
    if podman is None or runc is None:
        pytest.skip("podman and runc are needed for images (apt install podman runc)")
    if subprocess.run([podman, "image", "exists", IMAGE]).returncode == 0:
        return IMAGE
    if not CACHE.exists():
        if shutil.which("mmdebstrap") is None:
            pytest.skip("mmdebstrap is needed to build the test image (apt install mmdebstrap)")
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        part = CACHE.with_suffix(".part")
        subprocess.run(["mmdebstrap", "--variant=essential", "--mode=root", "--format=tar", "--quiet", "bookworm",
                        str(part)], check=True, timeout=600)
        part.rename(CACHE)
    subprocess.run([podman, "import", "--quiet", str(CACHE), IMAGE], check=True, capture_output=True, timeout=300)
    return IMAGE
