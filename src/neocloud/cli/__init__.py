"""The command line: a thin face over the core, the twin and (later) the server."""
