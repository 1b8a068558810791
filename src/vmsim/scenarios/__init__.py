"""Scenario engines: the stories the ``vmsim demo`` commands tell, run on model machines and
returned as data (dataclasses holding each step's numbers and explanations). Nothing here
prints and nothing here parses options: ``vmsim.cli`` does that, and tests drive these
engines directly.

- :mod:`vmsim.scenarios.cow`: copy-on-write after fork(), frame by frame.
- :mod:`vmsim.scenarios.enomem`: munmap() failing with ENOMEM at vm.max_map_count.
- :mod:`vmsim.scenarios.walk`: one page-table walk, level by level.
- :mod:`vmsim.scenarios.pressure`: a workload bigger than RAM (reclaim, swap, zswap, KSM, OOM).
- :mod:`vmsim.scenarios.hugepages`: huge pages (TLB reach, THP, compaction, hugetlbfs).

Errors: a scenario raises :class:`ScenarioParameterError` for parameters it cannot run with,
:class:`ScenarioDeviation` when the model strays from Linux's rules mid-story (the story
cannot go on), and :class:`ScenarioError` for anything else that ends it.
"""

from __future__ import annotations


class ScenarioError(Exception):
    """The scenario cannot go on; the message says why, in one line."""


class ScenarioParameterError(ScenarioError, ValueError):
    """A parameter the scenario cannot run with. The message is ``f"{parameter} {problem}"``
    (``problem`` starts with the value given), so a caller that took the parameter from an
    option of its own can name that option instead."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter} {problem}")
        self.parameter = parameter
        self.problem = problem


class ScenarioDeviation(ScenarioError):
    """The model did something Linux's rules say it does not, and the story cannot go on."""


__all__ = ["ScenarioDeviation", "ScenarioError", "ScenarioParameterError"]
