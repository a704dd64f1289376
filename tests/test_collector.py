"""The garbage collector kept off long-lived heaps (hubdelta.kernel.collector) and the CLI's frozen exit."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from hubdelta import cli
from hubdelta.kernel.collector import frozen_gc, paused_gc


class Node:
    """An object that can sit in a reference cycle and be watched with a weak reference."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def collector_as_found() -> Iterator[None]:
    """Each test starts and ends with the collector on and nothing frozen, whatever it asserted."""
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def test_paused_gc_turns_the_collector_off_and_back_as_it_was() -> None:
    with paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with paused_gc():
        assert not gc.isenabled()
    assert not gc.isenabled()  # it was off before: it stays off
    gc.enable()
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("a failed import")
    assert gc.isenabled()


def test_frozen_gc_hides_what_was_alive_and_hands_it_back_after() -> None:
    before = Node()
    watch = weakref.ref(before)
    with frozen_gc():
        assert gc.get_freeze_count() > 0
        del before
        gc.collect()
        assert watch() is not None  # frozen: its cycle is not looked at
        made_inside = weakref.ref(Node())
        gc.collect()
        assert made_inside() is None  # objects made within the block are collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert watch() is None  # handed back on exit: the garbage frozen meanwhile is collected


def test_frozen_gc_hands_everything_back_when_the_block_fails() -> None:
    with pytest.raises(ValueError), frozen_gc():
        raise ValueError("a failed run")
    assert gc.get_freeze_count() == 0


def test_the_cli_exits_with_the_heap_frozen(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["hubdelta", "--help"])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 0 and "Usage" in capsys.readouterr().out
    assert gc.get_freeze_count() > 0  # the interpreter's last collections will not walk it
