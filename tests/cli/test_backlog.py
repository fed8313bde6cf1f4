"""`neocloud backlog` on the example contract book, against figures worked out by hand."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from tests.cli.test_cli import EXAMPLES, neocloud


def test_the_example_books_backlog_by_customer_and_quarter_and_its_concentration() -> None:
    res = neocloud("backlog", "--book", str(EXAMPLES / "contracts.yaml"), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    customers = {c["tenant"]: c for c in out["customers"]}
    # media-gen: 2,048 H100 at $2.40 from the book's date (2026-10-01) to its end (2027-01-01): 92 days.
    assert Decimal(customers["media-gen"]["total"]) == Decimal(2048 * 92 * 24) * Decimal("2.40") == \
        Decimal("10852761.60")
    assert customers["media-gen"]["quarters"] == {"2026-Q4": "10852761.60"}
    # fin-quant: 512 B200 at $3.40 for 2027, which has 90 days in its first quarter; none before it starts.
    assert Decimal(customers["fin-quant"]["total"]) == Decimal(512 * 365 * 24) * Decimal("3.40")
    assert Decimal(customers["fin-quant"]["quarters"]["2027-Q1"]) == Decimal(512 * 90 * 24) * Decimal("3.40")
    assert "2026-Q4" not in customers["fin-quant"]["quarters"]
    totals = {t: Decimal(c["total"]) for t, c in customers.items()}
    grand = sum(totals.values())
    assert Decimal(out["total"]) == grand
    assert sum(Decimal(v) for v in out["quarters"].values()) == grand
    shares = {t: v / grand for t, v in totals.items()}
    assert out["largest_customer"] == "anchor-ai" and abs(out["largest_share"] - float(shares["anchor-ai"])) < 1e-4
    assert out["hhi"] == round(sum(float(s) ** 2 for s in shares.values()) * 10_000)
    assert out["over_limit"] == ["anchor-ai"] and out["limit"] == 0.3


def test_the_backlog_as_a_table_says_its_date_and_each_quarter() -> None:
    res = neocloud("backlog", "--book", str(EXAMPLES / "contracts.yaml"))
    assert res.returncode == 0, res.stderr
    assert "backlog as of 2026-10-01" in res.stdout and "2026-Q4" in res.stdout and "anchor-ai" in res.stdout


def test_a_later_date_leaves_less_and_a_bad_book_is_refused(tmp_path: Path) -> None:
    later = json.loads(neocloud("backlog", "--book", str(EXAMPLES / "contracts.yaml"), "--as-of", "2027-07-01",
                                "--json").stdout)
    assert "media-gen" not in {c["tenant"] for c in later["customers"]}
    bad = tmp_path / "book.yaml"
    bad.write_text("contracts:\n  - {tenant: a, gpu_type: H100, gpus: -4, start: 2026-01-01, end: 2027-01-01, "
                   "price_per_gpu_hour: 2}\n")
    res = neocloud("backlog", "--book", str(bad))
    assert res.returncode == 2 and "contracts.0.gpus" in res.stderr and "Traceback" not in res.stderr
