"""The fast lane: a compiled replay path for strace traces (issue 11; see FASTLANE design).

It is a faster execution of the same model, never a second one: whatever it takes it must
produce exactly what the Python path produces, and anything it does not model it leaves to
the Python path before changing anything. Its parts: :mod:`vmsim.fastlane.scan` (the strace
scanner, a block of lines -> per-line arrays, twin of :mod:`vmsim.trace.strace`), the VMA
engine (``vmas``) and, later, the driver.
"""
