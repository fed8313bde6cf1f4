"""`neocloud node check` on this machine's CPU: the same measuring code as on GPUs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from neocloud.agent import check
from tests.cli.test_cli import neocloud


def test_the_quick_check_passes_here_and_reports_every_measure() -> None:
    res = neocloud("node", "check", "--quick", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["passed"] is True and report["device"] == "cpu"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["cpu fp32 matmul"]["value"] > 0 and checks["cpu memory bandwidth"]["value"] > 0
    assert checks["cpu FP32 product vs float64"]["ok"] is True


def test_a_node_below_its_datasheet_fails() -> None:
    res = neocloud("node", "check", "--quick", "--json", "--expect-tflops", "1000000")
    assert res.returncode == 1
    matmul = next(c for c in json.loads(res.stdout)["checks"] if c["name"] == "cpu fp32 matmul")
    assert (matmul["expected"], matmul["needed"], matmul["ok"]) == (1e6, 1e6 * check.MATMUL_SHARE, False)


def test_silent_data_corruption_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    class Flaky(check._Cpu):
        def matmul(self, a, b, out) -> None:
            super().matmul(a, b, out)
            out.flat[17] += 1.0  # one wrong element, as a bad SM would leave

    monkeypatch.setattr(check, "devices", lambda: [Flaky()])
    report = check.run_check(quick=True)
    probe = next(c for c in report.checks if "float64" in c.name)
    assert probe.ok is False and not report.passed


def test_measures_are_in_the_right_units() -> None:
    dev = check._Cpu()
    assert 0 < check.matmul_tflops(dev, 256, "fp32", 0.05) < 100  # no CPU here does 100 TFLOPS
    assert 0.1 < check.memory_gbps(dev, 8 << 20, 0.05) < 10_000
    assert check.corruption(dev) < check.SDC_TOLERANCE
    assert check._expected("NVIDIA H200", None).name == "H200-SXM"
    assert check._expected("Some Accelerator", None) is None
    assert np.isclose(check._against("x", 600, "TFLOPS", 989, 0.55).needed, 543.95)
