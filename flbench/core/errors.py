"""User-facing errors: the CLI turns these into one line on stderr and exit status 2."""


class FlbenchError(Exception):
    """A user mistake or an unusable input. The message names the bad value and what is accepted."""


class WireError(FlbenchError):
    """A message on the wire was malformed, did not match what the receiver expected, or held NaN/Inf."""
