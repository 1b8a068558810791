"""The fast lane: a compiled path for replaying strace traces (issue 11), built in parts.

The Python replay (:mod:`vmsim.trace.replay` over :mod:`vmsim.mm`) is the reference; the lane
is a faster execution of the same model, twin-tested against it, which declines whatever it
does not model before changing anything. ``book`` keeps the report's running figures for a
run of calls the lane replayed.
"""
