"""gradtrace_server: the team server (FastAPI) in front of a gradtrace store.

Run it with ``gradtrace serve [--db URL] [--host H] [--port P] [--workers N]``
or build the app yourself with :func:`create_app`. Importing this package does
not import TensorFlow (the server never does) nor FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradtrace_server.app import create_app
    from gradtrace_server.config import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from gradtrace_server.app import create_app

        return create_app
    if name == "Settings":
        from gradtrace_server.config import Settings

        return Settings
    raise AttributeError(name)
