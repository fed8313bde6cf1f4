"""One family of errors whose messages tell the user what to fix.

Faces (CLI, API) print these without a traceback; anything else escaping is a bug.
"""


class NeocloudError(Exception):
    """Base of every error a user can act on."""


class ConfigError(NeocloudError):
    """A fleet, trace or job file is malformed; the message names file, path and fix."""

    def __init__(self, source: str, path: str, problem: str) -> None:
        self.source, self.path, self.problem = source, path, problem
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {problem}")


class SchedulingError(NeocloudError):
    """A request the scheduler can never satisfy (bigger than the fleet, unknown GPU type...)."""
