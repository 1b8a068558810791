"""The trace-reader fuzzer in CI (bounded: a few seconds): real lines from
tests/fixtures/traces, mutated (see ``trace_fuzz.py`` for the mutations and the invariants).

hypothesis draws the ``random.Random`` that builds each case, so a failure shrinks and
replays. The long exploration run is ``tests/property/explore_trace_fuzz.py``.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trace_fuzz import check, check_decoders, corpus, make_case

CI = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_corpus_has_both_formats() -> None:
    formats = {fmt for fmt, _ in corpus()}
    assert formats == {"strace", "ltrace"}
    assert sum(len(lines) for _, lines in corpus()) > 10_000


@CI
@given(st.randoms(use_true_random=False))
def test_readers_survive_mutated_real_lines(rng: random.Random) -> None:
    case = make_case(rng)
    check(case)


@CI
@given(st.randoms(use_true_random=False))
def test_decoders_survive_mutated_arguments(rng: random.Random) -> None:
    case = make_case(rng, max_lines=8)
    for line in case.lines:
        check_decoders(rng, line)
