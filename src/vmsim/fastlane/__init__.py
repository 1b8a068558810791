"""The fast lane: a compiled path for replaying strace traces (issue 11, item 4).

The Python replay (:mod:`vmsim.trace.replay` over :mod:`vmsim.mm`) is the reference; the lane
is a faster execution of the same model, never a second one: whatever it takes it must do
exactly as the Python path does (twin tests hold it to that), and whatever it does not model
it leaves to the Python path before changing anything. Its parts:

* :mod:`vmsim.fastlane.scan` (over ``_scan``): the strace scanner, a block of lines -> one
  row of numbers per line, the twin of :mod:`vmsim.trace.strace`;
* :mod:`vmsim.fastlane.vmas` (over ``_vmas``): the VMA engine, the VMAs of one address space
  in arrays and the calls over them, the twin of :mod:`vmsim.mm`;
* :mod:`vmsim.fastlane.book`: the report's running figures for a run of calls the lane
  replayed, the twin of ``Replayer.syscall``'s bookkeeping.
"""
