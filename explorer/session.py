"""What one browser session owns, and how it lets go of it when the session ends.

A session's views must be reachable only from its own Bokeh document. HoloViews keeps every element's plot
options (hooks included) in process-wide tables that are emptied only when the element is collected; a hook that
holds its view keeps the view, its element and so the whole session alive for ever. Hooks therefore hold their
view weakly (`weak_hook`), and `release` drops the session's objects when Bokeh destroys the session.
"""
from __future__ import annotations

import asyncio
import logging
import weakref

import panel as pn
from tornado.websocket import WebSocketClosedError

log = logging.getLogger(__name__)


def weak_hook(method):
    """A HoloViews hook calling the bound `method` while its object lives, without keeping that object alive."""
    ref = weakref.WeakMethod(method)

    def hook(*args):
        bound = ref()
        if bound is not None:
            bound(*args)

    return hook


def release_on_close(page, state) -> None:
    """When Bokeh destroys this session (tab closed, connection lost): the views stop following the selection and
    the page lets go of them, so the session's objects go at once instead of waiting for the cycle collector.
    Panel itself cleans up its panes, widgets and periodic callbacks, HoloViews its plots and streams.
    Outside a served session (tests, benchmarks) there is nothing to register: Panel would keep the callback for
    every later session of the process."""
    if pn.state.curdoc is None or pn.state.curdoc.session_context is None:
        return

    def release(_session_context) -> None:
        for watchers in state.param.watchers.values():
            for watcher in [w for kind in watchers.values() for w in kind]:
                state.param.unwatch(watcher)
        page.dashboard = None

    pn.state.on_session_destroyed(release)


def quiet_closed_pages(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """A page closed while the server was still sending it an update leaves a write that Panel never awaits, and
    asyncio logs its WebSocketClosedError as a traceback ("Task exception was never retrieved"). Nothing is lost:
    the page and its session are gone. Log one line for those; every other exception goes to the handler before.
    `loop`: the server's running loop by default (none outside a server: nothing to do)."""
    try:
        loop = loop or asyncio.get_running_loop()
    except RuntimeError:
        return
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_closed_pages", False):
        return

    def handler(loop, context) -> None:
        if isinstance(context.get("exception"), WebSocketClosedError):
            log.info("a page closed while an update was being sent to it")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.quiets_closed_pages = True
    loop.set_exception_handler(handler)
