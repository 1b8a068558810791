from __future__ import annotations

import pytest

import vmsim


@pytest.fixture
def p():
    """An empty address space in a machine with the default limit."""
    return vmsim.Machine().spawn()
