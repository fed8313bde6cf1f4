"""What the gateway answered, per tenant and service: requests, their latency, and the prompt and
completion tokens OpenAI-compatible answers carried. Counted in memory as requests end (the
gateway's threads and event loop), in /metrics at once, and written to the store by the loop
each FLUSH_S, one row per tenant, service, model and hour: what the invoice prices. A crash loses
at most the last FLUSH_S of counts."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from sqlalchemy import select
from sqlalchemy.orm import Session

from neocloud.serve.usage import Tokens
from neocloud.store.tables import ServiceUsageRow

FLUSH_S = 2.0
RECENT = 5000
HOUR_S = 3600


@dataclass(slots=True)
class _Count:
    requests: int = 0
    errors: int = 0  # answered 5xx, or not at all
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Metering:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[tuple[str, str, str, float], _Count] = defaultdict(_Count)
        # The last RECENT requests' (end, seconds) per service, for the dashboard's rate and percentiles.
        self._recent: defaultdict[tuple[str, str], deque[tuple[float, float]]] = defaultdict(
            lambda: deque(maxlen=RECENT))
        self.requests = PromCounter("neocloud_service_requests", "Requests the gateway answered, by status class",
                                    ["tenant", "service", "code"], registry=registry)
        self.tokens = PromCounter("neocloud_service_tokens", "Tokens in OpenAI-compatible answers, by kind",
                                  ["tenant", "service", "kind"], registry=registry)
        self.latency = Histogram("neocloud_service_request_seconds", "From the request's arrival at the gateway "
                                 "to the end of its answer", ["tenant", "service"], registry=registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))

    def record(self, tenant: str, service: str, model: str, status: int, seconds: float, tokens: Tokens | None,
               at: float) -> None:
        self.requests.labels(tenant, service, f"{status // 100}xx").inc()
        self.latency.labels(tenant, service).observe(seconds)
        if tokens is not None:
            self.tokens.labels(tenant, service, "prompt").inc(tokens.prompt)
            self.tokens.labels(tenant, service, "completion").inc(tokens.completion)
        with self._lock:
            self._recent[(tenant, service)].append((at, seconds))
            c = self._counts[(tenant, service, model, at - at % HOUR_S)]
            c.requests += 1
            c.errors += status >= 500
            if tokens is not None:
                c.prompt_tokens += tokens.prompt
                c.completion_tokens += tokens.completion

    def recent(self, tenant: str, service: str, now: float, window_s: float = 60.0) -> dict[str, float | None]:
        """Requests per second over the last `window_s`, and their latency's median and 99th percentile."""
        with self._lock:
            kept = self._recent.get((tenant, service), deque())
            full = len(kept) == kept.maxlen
            seen = [(at, sec) for at, sec in kept if at > now - window_s]
        if not seen:
            return {"rps": 0.0, "p50_s": None, "p99_s": None}
        span = now - seen[0][0] if full and len(seen) == len(kept) else window_s  # busy: only the last RECENT kept
        p50, p99 = (float(v) for v in np.percentile([sec for _, sec in seen], [50, 99]))
        return {"rps": len(seen) / max(span, 1e-3), "p50_s": p50, "p99_s": p99}

    def flush(self, s: Session) -> None:
        """Add what was counted since the last flush to the store's hourly rows (in the loop's turn)."""
        with self._lock:
            counts, self._counts = self._counts, defaultdict(_Count)
        for (tenant, service, model, hour), c in counts.items():
            row = s.scalars(select(ServiceUsageRow).where(
                ServiceUsageRow.tenant == tenant, ServiceUsageRow.service == service, ServiceUsageRow.model == model,
                ServiceUsageRow.hour == hour)).first()
            if row is None:
                row = ServiceUsageRow(tenant=tenant, service=service, model=model, hour=hour, requests=0, errors=0,
                                      prompt_tokens=0, completion_tokens=0)
                s.add(row)
            row.requests += c.requests
            row.errors += c.errors
            row.prompt_tokens += c.prompt_tokens
            row.completion_tokens += c.completion_tokens
