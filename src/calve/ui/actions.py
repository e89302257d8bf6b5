"""Actions from the browser (run now, restart): who may start one, and what became of each.

Contract: `refusal` says why a POST is refused — the server is read-only (no --allow-actions), the
request comes from another site (its Origin is not the server's own, or the browser marks it
cross-site), or it lacks this server's form token — and nothing is started then. `ActionLog.start`
runs the work in a background thread and records its outcome (or its error, never lost in the
thread), so the pages can say what happened.
"""

from __future__ import annotations

import collections
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from calve.errors import CalveError

READ_ONLY = (
    "this calve UI is read-only: actions (run now, restart) are off. Start it with "
    "`calve ui --allow-actions` to allow them"
)


@dataclass(frozen=True)
class Action:
    """What an action started from the UI did (the last ones are shown on the workflows page)."""

    at: float
    what: str
    outcome: str


class ActionLog:
    """The last actions started from this server, newest first, with their outcomes."""

    def __init__(self, keep: int = 20) -> None:
        self._actions: collections.deque[Action] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    def recent(self) -> list[Action]:
        with self._lock:
            return list(self._actions)

    def record(self, what: str, outcome: str) -> None:
        with self._lock:
            self._actions.appendleft(Action(time.time(), what, outcome))

    def start(self, what: str, work: Callable[[], str]) -> None:
        """Run `work` in a background thread; its outcome (or error) is recorded as an action."""

        def target() -> None:
            try:
                outcome = work()
            except CalveError as exc:
                outcome = f"error: {exc}"
            except Exception as exc:  # the thread must not die silently: say what happened
                outcome = f"error: {type(exc).__name__}: {exc}"
            self.record(what, outcome)

        self.record(what, "started")
        threading.Thread(target=target, name=f"calve-ui {what}", daemon=True).start()


async def refusal(request: Request, allow_actions: bool, token: str) -> Response | None:
    """Why an action request is refused (403), or None: read-only server, cross-site, bad token."""
    if not allow_actions:
        return PlainTextResponse(READ_ONLY, status_code=403)
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if (origin is not None and origin != own) or request.headers.get("sec-fetch-site") == "cross-site":
        return PlainTextResponse(
            f"refused: a request from another site ({origin or 'cross-site'}) cannot start runs; use the "
            "buttons of this UI's own pages",
            status_code=403,
        )
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0]
    if not hmac.compare_digest(given.encode(), token.encode()):
        return PlainTextResponse(
            "refused: the form token is missing or stale (the server restarted?): reload the page and "
            "try again",
            status_code=403,
        )
    return None
