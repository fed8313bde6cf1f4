"""An attempt's exit status: the rank that failed, not the ranks stopped because it did."""

from __future__ import annotations

import pytest

from neocloud.backends.base import Exit


@pytest.mark.parametrize("codes, code", [
    ((0, 0), 0), ((0, None), None), ((2, 3), 2),
    ((143, 4), 4),  # rank 1 failed with 4; rank 0 was stopped after it
    ((137, 143), 137),  # only stopped ranks: the first of them
])
def test_the_job_s_exit_status(codes: tuple[int | None, ...], code: int | None) -> None:
    assert Exit(1, 1, codes).code == code
