"""Server configuration: pydantic-settings, environment variables ``GRADTRACE_SERVER_*``.

Precedence: an explicit argument (``gradtrace serve --db ...`` or
``Settings(db=...)``) beats the environment, which beats the defaults below.

==============================  ===============================  =========================================
variable                        default                          meaning
==============================  ===============================  =========================================
GRADTRACE_SERVER_DB             ``$GRADTRACE_URL`` if it is a    the store: ``sqlite:///path.db`` or
                                database URL, else               ``postgresql://user@host/db``
                                ``sqlite:///./gradtrace.db``
GRADTRACE_SERVER_HOST           ``127.0.0.1``                    address uvicorn binds
GRADTRACE_SERVER_PORT           ``8000``
GRADTRACE_SERVER_WORKERS        ``1``                            uvicorn worker processes
GRADTRACE_SERVER_REQUIRE_AUTH   auto                             tokens required; auto = on unless the
                                                                 host is a loopback address
GRADTRACE_SERVER_MAX_BODY_BYTES ``67108864`` (64 MiB)            largest request body, compressed and
                                                                 after gzip decoding (413 above it)
GRADTRACE_SERVER_METRICS_PUBLIC ``false``                        serve ``/metrics`` without a token
GRADTRACE_SERVER_ACCESS_LOG     ``true``                         JSON-lines access log on stderr
==============================  ===============================  =========================================

Example::

    >>> from gradtrace_server.config import Settings
    >>> s = Settings(db="sqlite:///runs.db", host="0.0.0.0")
    >>> s.auth_required
    True
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB = "sqlite:///./gradtrace.db"


def _default_db() -> str:
    # GRADTRACE_URL is the tracer's destination; on a client it may be the
    # server's own http(s) address, which is no place to store into.
    url = os.environ.get("GRADTRACE_URL", "").strip()
    if url and not url.lower().startswith(("http://", "https://")):
        return url
    return DEFAULT_DB


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything the server needs to start; see the module docstring for the variables."""

    model_config = SettingsConfigDict(env_prefix="GRADTRACE_SERVER_", extra="ignore")

    db: str = Field(default_factory=_default_db, min_length=1)
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    require_auth: bool | None = None
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    metrics_public: bool = False
    access_log: bool = True

    @field_validator("db", mode="before")
    @classmethod
    def _normalise_db(cls, value: object) -> object:
        # A bare path is a SQLite file, as for the embedded store.
        if isinstance(value, str):
            value = value.strip()
            if value and "://" not in value:
                return f"sqlite:///{value}"
        return value

    @model_validator(mode="after")
    def _refuse_http_store(self) -> Settings:
        if self.db.lower().startswith(("http://", "https://")):
            raise ValueError(
                f"db: {self.db!r} is a gradtrace server address; the server needs a database URL "
                "(sqlite:///path.db or postgresql://user@host/db)"
            )
        return self

    @property
    def auth_required(self) -> bool:
        """Tokens are required unless explicitly off, or auto and bound to loopback."""
        if self.require_auth is not None:
            return self.require_auth
        return not is_loopback(self.host)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings from the environment (cached; used by ``create_app()``)."""
    return Settings()
