"""Health signals about a node and the rules that turn them into actions.

Node agents and exporters report what they see (an XID from the driver, ECC counts, a temperature,
link flaps, GPUs busy without drawing power, an active check's verdict). The first rule that
matches a signal decides: watch (keep it on record), cordon (no new work), drain (no new work, on
the way out), or triage (stop the node's jobs now, requeue them elsewhere, and look at the node).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    WATCH = "watch"
    CORDON = "cordon"
    DRAIN = "drain"
    TRIAGE = "triage"


# XIDs of failed hardware (NVIDIA's XID catalogue): double-bit and uncontained ECC errors, row-remap
# failure, NVLink errors, fallen off the bus, high single-bit error rate, contained ECC error, GSP
# timeouts and errors, unrecovered ECC.
HARDWARE_XIDS = frozenset({48, 64, 74, 79, 92, 94, 95, 119, 120, 140})
# XIDs an application causes (illegal address, MMU fault from user code, channel reset, cleanup).
APPLICATION_XIDS = frozenset({13, 31, 43, 45})
THERMAL_LIMIT_C = 90.0
CORRECTABLE_LIMIT = 1000  # correctable ECC errors in one report before the node is cordoned
FLAP_LIMIT = 3  # link flaps in one report before the node is drained
STALL_S = 60.0  # GPUs busy without power this long: the job is hung


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    when: str  # what it matches, in words
    action: Action
    test: Callable[[Mapping[str, Any]], bool]


RULES: tuple[Rule, ...] = (
    Rule("xid", f"code in {sorted(HARDWARE_XIDS)} (failed hardware)", Action.TRIAGE,
         lambda s: s["code"] in HARDWARE_XIDS),
    Rule("xid", f"code in {sorted(APPLICATION_XIDS)} (caused by the application)", Action.WATCH,
         lambda s: s["code"] in APPLICATION_XIDS),
    Rule("xid", "any other code", Action.CORDON, lambda s: True),
    Rule("ecc", "uncorrectable > 0", Action.TRIAGE, lambda s: s["uncorrectable"] > 0),
    Rule("ecc", f"correctable >= {CORRECTABLE_LIMIT}", Action.CORDON, lambda s: s["correctable"] >= CORRECTABLE_LIMIT),
    Rule("ecc", "otherwise", Action.WATCH, lambda s: True),
    Rule("thermal", f"temperature_c >= {THERMAL_LIMIT_C:g} or slowdown", Action.DRAIN,
         lambda s: s["temperature_c"] >= THERMAL_LIMIT_C or s["slowdown"]),
    Rule("thermal", "otherwise", Action.WATCH, lambda s: True),
    Rule("link_flap", f"flaps >= {FLAP_LIMIT}", Action.DRAIN, lambda s: s["flaps"] >= FLAP_LIMIT),
    Rule("link_flap", "otherwise", Action.WATCH, lambda s: True),
    Rule("stall", f"busy without power for >= {STALL_S:g} s (a hung job)", Action.TRIAGE,
         lambda s: s["for_s"] >= STALL_S),
    Rule("stall", "otherwise", Action.WATCH, lambda s: True),
    Rule("active_check", "failed", Action.TRIAGE, lambda s: not s["passed"]),
    Rule("active_check", "passed (a node in burn-in goes to production)", Action.WATCH, lambda s: True),
)
KINDS = tuple(dict.fromkeys(r.kind for r in RULES))


def judge(signal: Mapping[str, Any], rules: tuple[Rule, ...] = RULES) -> Rule:
    """The first rule for the signal's kind that matches it."""
    return next(r for r in rules if r.kind == signal["kind"] and r.test(signal))
