"""Job arrays in Slurm's syntax: `8` (tasks 0-7), `"0-15%4"`, `"1,3,5-7"`, `"0-20:5"`; `%K` is the
throttle, the most tasks of the array queued or running at once."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TASKS = 10_000  # tasks one array may have
MAX_INDEX = 1_000_000  # the highest task index
_PART = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


@dataclass(frozen=True, slots=True)
class ArraySpec:
    indices: tuple[int, ...]  # ascending, each once
    throttle: int | None = None


def parse_array(value: int | str) -> ArraySpec:
    """The tasks an `array` field asks for; ValueError, saying what to write instead, if it is not valid."""
    if isinstance(value, bool):
        raise ValueError("array is a number of tasks or a string like '0-15%4' or '1,3,5-7'")
    if isinstance(value, int):
        if not 1 <= value <= MAX_TASKS:
            raise ValueError(f"array: {value} tasks; an array has 1 to {MAX_TASKS} tasks")
        return ArraySpec(tuple(range(value)))
    text = value.replace(" ", "")
    spec, _, limit = text.partition("%")
    throttle = None
    if limit or text.endswith("%"):
        if not limit.isdigit() or int(limit) < 1:
            raise ValueError(f"array {value[:40]!r}: the throttle after '%' must be a whole number of at least 1")
        throttle = int(limit)
    indices: set[int] = set()
    for part in spec.split(","):
        m = _PART.match(part)
        if m is None:
            raise ValueError(f"array {value[:40]!r}: {part[:20]!r} is not an index or a range; write e.g. "
                             "'0-15', '1,3,5-7' or '0-15%4'")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if hi < lo or step < 1:
            raise ValueError(f"array {value[:40]!r}: range {part!r} must go up, with a step of at least 1")
        if hi > MAX_INDEX:
            raise ValueError(f"array {value[:40]!r}: task indices go up to {MAX_INDEX}")
        if (hi - lo) // step + 1 + len(indices) > MAX_TASKS:
            raise ValueError(f"array {value[:40]!r}: more than {MAX_TASKS} tasks; an array has at most {MAX_TASKS}")
        indices.update(range(lo, hi + 1, step))
    return ArraySpec(tuple(sorted(indices)), throttle)
