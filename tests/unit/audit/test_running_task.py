"""``shared_scope`` reads Python 3.11's running-task registry itself
(``audit.log._RUNNING``); it must name the task ``asyncio.current_task`` names, on
the stock loop and on uvloop (which ``serve`` runs), in tasks and in callbacks."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from audit import log


def registry_task(loop: asyncio.AbstractEventLoop) -> object:
    assert log._RUNNING is not None
    return log._RUNNING.get(loop)


async def checks() -> None:
    loop = asyncio.get_running_loop()
    assert registry_task(loop) is asyncio.current_task() is not None

    async def child() -> object:
        await asyncio.sleep(0)
        return registry_task(loop), asyncio.current_task()

    seen, current = await asyncio.create_task(child())
    assert seen is current is not None and seen is not asyncio.current_task()
    # A thread that inherited the context has no running loop: shared_scope raises,
    # as asyncio.current_task() does there, instead of reading the loop's task.
    token = log._SCOPE.set(log.SharedScope())
    try:
        assert log.shared_scope() is not None
        with pytest.raises(RuntimeError, match="no running event loop"):
            await asyncio.to_thread(log.shared_scope)
    finally:
        log._SCOPE.reset(token)
    in_callback: list[object] = []
    loop.call_soon(lambda: in_callback.append(registry_task(loop)))
    await asyncio.sleep(0)
    assert in_callback == [None]  # no task runs a plain callback


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ asks asyncio.current_task")
@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_the_registry_names_the_running_task(
    run: Callable[[Coroutine[Any, Any, None]], None],
) -> None:
    run(checks())
