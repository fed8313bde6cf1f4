"""Who listens on a port, from the kernel's socket tables."""

from __future__ import annotations

import os
import socket

from neocloud.backends.listeners import listening_uids


def test_a_listening_socket_is_found_with_its_owner_on_either_family() -> None:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
            assert listening_uids(port) == set()  # bound, not yet listening
            s.listen()
            assert listening_uids(port) == {os.getuid()}
        assert listening_uids(port) == set()
