"""``guarded``: the editor window's slots report a failure instead of crashing the app."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

from netstudio.errors import NetStudioError

log = logging.getLogger("netstudio.ui.main_window")

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Keep the app alive: a slot that fails reports the error instead of crashing."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except NetStudioError as e:
            self.status(str(e))
        except Exception as e:  # noqa: BLE001 - last line of defence for the UI
            log.exception("unexpected error in %s", fn.__name__)
            self.report_unexpected(e)
        return None

    return wrapper  # type: ignore[return-value]
