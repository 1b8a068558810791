"""The fast lane: a compiled replay path, the twin of the Python model (issue 11, item 4).

The design and its parts are in FASTLANE.md (the lead's notes): part 2, the VMA engine, is
``vmsim.fastlane.vmas`` (Python side) over ``vmsim.fastlane._vmas`` (numba kernels). Whatever
the lane takes it must do exactly as the Python model does; what it does not model it
declines (BAIL) before changing anything.
"""
