"""Money: contracts, usage, invoices, the backlog and customer concentration.

Amounts are Decimals rounded half-up to the cent per invoice line; quantities are GPU-hours. A
reserved contract's commitment is billed in full when it is take-or-pay (its usage is then shown
and covered); otherwise its usage is billed at the contract's price. Usage beyond a guarantee is
billed at the on-demand or spot price in force when the attempt started. Guaranteed GPU-time a
node failure cost (detection, recomputation, restart) is credited back at the contract's price.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from neocloud.errors import NeocloudError

CENT = Decimal("0.01")
HOUR = Decimal(3600)
HOUR_S = 3600.0
CONCENTRATION_LIMIT = 0.30  # the share of backlog one customer may hold before a warning
CLASSES = ("reserved", "on-demand", "spot", "service")
MILLION = Decimal(1_000_000)
ANY_MODEL = "*"  # a token price for every model with none of its own


@dataclass(frozen=True, slots=True)
class Contract:
    contract: int
    version: int
    tenant: str
    gpu_type: str
    gpus: int
    start: float
    end: float
    price: Decimal  # per GPU-hour
    take_or_pay: bool = True
    valid_from: float = float("-inf")
    valid_to: float | None = None  # None: the version in force

    def in_force(self, t: float) -> bool:
        """Whether this version's terms hold at `t`."""
        a, b = self.window(t, float("inf"))
        return a <= t < b

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """The part of [t0, t1) this version covers: its term, while it was the version in force."""
        end = self.end if self.valid_to is None else min(self.end, self.valid_to)
        return max(self.start, self.valid_from, t0), min(end, t1)


@dataclass(frozen=True, slots=True)
class Usage:
    job_id: int
    attempt: int
    tenant: str
    usage_class: str
    gpu_type: str
    gpus: float
    start: float
    end: float


def money(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def gpu_hours(gpus: float, seconds: float) -> Decimal:
    """GPU-hours of `gpus` GPUs over `seconds`, exact to the millisecond."""
    return Decimal(str(gpus)) * Decimal(round(max(seconds, 0.0) * 1000)) / 1000 / HOUR


def month(period: str) -> tuple[float, float]:
    """[start, end) of a calendar month in UTC, from 'YYYY-MM'."""
    try:
        first = dt.datetime.strptime(period, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise NeocloudError(f"{period!r} is not a month: give it as YYYY-MM, e.g. 2026-11") from None
    nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first.timestamp(), nxt.timestamp()


@dataclass(frozen=True, slots=True)
class Tokens:
    """A service's tokens in one hour (the gateway's count), priced per million as at the hour's end:
    a price set during an hour is that hour's."""

    tenant: str
    model: str
    hour: float
    prompt: int
    completion: int


@dataclass(frozen=True, slots=True)
class Credit:
    tenant: str
    at: float
    gpu_type: str
    gpu_hours: Decimal
    reason: str = ""


def invoice(tenant: str, t0: float, t1: float, contracts: Iterable[Contract], usage: Iterable[Usage],
            prices: dict[tuple[str, str], list[tuple[float, Decimal]]],
            credits: Iterable[Credit] = (), tokens: Iterable[Tokens] = ()) -> dict[str, Any]:
    """A tenant's invoice for [t0, t1): commitments, usage by class and GPU type, tokens by model,
    SLA credits, total.

    `prices` maps (GPU type, class) to [(since, price per GPU-hour)], oldest first, and (model,
    'prompt-tokens' or 'completion-tokens') to prices per million tokens. A service's replicas are
    billed at the 'service' price of their GPU type, or on demand where it has none. A credit gives
    back guaranteed GPU-hours a failure cost, at the price of the contract then in force.
    """
    lines: list[dict[str, Any]] = []
    mine = [c for c in contracts if c.tenant == tenant]
    for c in sorted(mine, key=lambda c: (c.contract, c.version)):
        a, b = c.window(t0, t1)
        if b > a and c.take_or_pay:
            qty = gpu_hours(c.gpus, b - a)
            lines.append({"kind": "reserved commitment", "contract": c.contract, "version": c.version,
                          "gpu_type": c.gpu_type, "gpu_hours": qty, "price": c.price, "amount": money(qty * c.price),
                          "from": a, "to": b})
    used: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    priced: dict[tuple[str, str], Decimal] = defaultdict(Decimal)  # GPU-hours x price, summed before rounding
    for u in usage:
        if u.tenant != tenant:
            continue
        a, b = max(u.start, t0), min(u.end, t1)
        if b <= a:
            continue
        qty = gpu_hours(u.gpus, b - a)
        key = (u.usage_class, u.gpu_type)
        used[key] += qty
        if u.usage_class == "reserved":
            contract = _contract_for(mine, u.gpu_type, u.start)
            if contract is not None and not contract.take_or_pay:
                priced[key] += qty * contract.price
        else:
            priced[key] += qty * price_at(prices, u.gpu_type, u.usage_class, u.start)
    for (cls, gpu), qty in sorted(used.items(), key=lambda kv: (CLASSES.index(kv[0][0]), kv[0][1])):
        covered = cls == "reserved" and priced[(cls, gpu)] == 0
        lines.append({"kind": f"{cls} usage" + (" (covered by the commitment)" if covered else ""),
                      "gpu_type": gpu, "gpu_hours": qty, "price": None if covered else _unit(priced[(cls, gpu)], qty),
                      "amount": money(priced[(cls, gpu)])})
    lines += _token_lines(tenant, t0, t1, tokens, prices)
    owed_back: dict[str, tuple[Decimal, Decimal]] = {}  # GPU type -> (GPU-hours, amount)
    for cr in credits:
        contract = _contract_for(mine, cr.gpu_type, cr.at)
        if cr.tenant != tenant or not t0 <= cr.at < t1 or contract is None:
            continue
        hours, amount = owed_back.get(cr.gpu_type, (Decimal(0), Decimal(0)))
        owed_back[cr.gpu_type] = (hours + cr.gpu_hours, amount + cr.gpu_hours * contract.price)
    for gpu, (hours, amount) in sorted(owed_back.items()):
        lines.append({"kind": "SLA credit (guaranteed GPU-time lost to failures)", "gpu_type": gpu,
                      "gpu_hours": hours, "price": _unit(amount, hours), "amount": -money(amount)})
    total = sum((line["amount"] for line in lines), Decimal(0))
    return {"tenant": tenant, "from": t0, "to": t1, "lines": lines, "total": money(total), "currency": "USD"}


def _token_lines(tenant: str, t0: float, t1: float, tokens: Iterable[Tokens],
                 prices: dict[tuple[str, str], list[tuple[float, Decimal]]]) -> list[dict[str, Any]]:
    counted: dict[tuple[str, str], int] = defaultdict(int)
    priced: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for t in tokens:
        if t.tenant != tenant or not t0 <= t.hour < t1:
            continue
        for kind, n in (("prompt", t.prompt), ("completion", t.completion)):
            if n:
                counted[(t.model, kind)] += n
                priced[(t.model, kind)] += n * token_price(prices, t.model, kind, t.hour + HOUR_S) / MILLION
    return [{"kind": f"{kind} tokens of {model}", "model": model, "tokens": n,
             "price": _unit(priced[key] * MILLION, n), "unit": "per million tokens", "amount": money(priced[key])}
            for key, n in sorted(counted.items()) for model, kind in [key]]


def token_price(prices: dict[tuple[str, str], list[tuple[float, Decimal]]], model: str, kind: str,
                at: float) -> Decimal:
    for key in ((model, f"{kind}-tokens"), (ANY_MODEL, f"{kind}-tokens")):
        if current := [p for since, p in prices.get(key, []) if since <= at]:
            return current[-1]
    raise NeocloudError(f"no price for {kind} tokens of {model} at {at:.0f}: set one with PUT /v1/prices/tokens")


def _unit(amount: Decimal, qty: Decimal | int) -> Decimal | None:
    return (amount / qty).quantize(Decimal("0.0001")) if qty else None


def _contract_for(contracts: list[Contract], gpu_type: str, at: float) -> Contract | None:
    return next((c for c in contracts if c.gpu_type == gpu_type and c.in_force(at)), None)


def price_at(prices: dict[tuple[str, str], list[tuple[float, Decimal]]], gpu_type: str, cls: str, at: float) -> Decimal:
    history = prices.get((gpu_type, cls), [])
    current = [p for since, p in history if since <= at]
    if not current and cls == "service":  # serving has no price of its own: on demand
        return price_at(prices, gpu_type, "on-demand", at)
    if not current:
        raise NeocloudError(f"no {cls} price for {gpu_type} at {at:.0f}: set one with `neocloud prices set`")
    return current[-1]


# -- backlog and concentration -------------------------------------------------------------------
def quarter(t: float) -> str:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return f"{d.year}-Q{(d.month - 1) // 3 + 1}"


def _quarter_bounds(t: float) -> tuple[float, float]:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    first = dt.datetime(d.year, 3 * ((d.month - 1) // 3) + 1, 1, tzinfo=dt.UTC)
    nxt = dt.datetime(first.year + (first.month == 10), (first.month + 2) % 12 + 1, 1, tzinfo=dt.UTC)
    return first.timestamp(), nxt.timestamp()


def backlog(contracts: Iterable[Contract], now: float, limit: float = CONCENTRATION_LIMIT) -> dict[str, Any]:
    """Contracted value not yet delivered, by customer and quarter of delivery, and how concentrated it is."""
    by: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for c in contracts:
        if c.valid_to is not None:
            continue  # superseded: its successor carries the terms in force
        t = max(c.start, now)
        while t < c.end:
            q0, q1 = _quarter_bounds(t)
            b = min(q1, c.end)
            by[c.tenant][quarter(t)] += gpu_hours(c.gpus, b - t) * c.price
            t = b
    totals = {tenant: money(sum(qs.values(), Decimal(0))) for tenant, qs in by.items()}
    grand = sum(totals.values(), Decimal(0))
    shares = {t: float(v / grand) if grand else 0.0 for t, v in totals.items()}
    largest = max(shares.items(), key=lambda kv: kv[1], default=(None, 0.0))
    return {
        "as_of": now,
        "total": money(grand),
        "customers": [{"tenant": t, "total": totals[t], "share": round(shares[t], 4),
                       "quarters": {q: money(v) for q, v in sorted(by[t].items())}}
                      for t in sorted(totals, key=lambda t: -totals[t])],
        "quarters": {q: money(sum((by[t].get(q, Decimal(0)) for t in by), Decimal(0)))
                     for q in sorted({q for qs in by.values() for q in qs})},
        "largest_customer": largest[0], "largest_share": round(largest[1], 4),
        "hhi": round(sum(s * s for s in shares.values()) * 10_000),
        "limit": limit,
        "over_limit": sorted(t for t, s in shares.items() if s > limit),
    }
