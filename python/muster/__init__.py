"""A Python client for muster, the service supervisor.

For programs that use services::

    import muster

    endpoint = muster.Client().ensure("coordinator", timeout=120)   # started once, however many ask
    print(endpoint.address)

    async def agent():
        endpoint = await muster.AsyncClient().ensure("coordinator")   # never blocks the loop

For services muster runs::

    muster.status("loading the model")
    muster.ready()                      # with ready = { notify = true }

    async with muster.Watchdog():       # with watchdog = "5s": a blocked loop is restarted
        await serve()

Standard library only; Python 3.9 or newer.
"""

from __future__ import annotations

from ._locate import ConfigError
from .aio import AsyncClient
from .client import Client
from .errors import (
    APIError,
    BadRequest,
    Busy,
    Disconnected,
    EtcdUnavailable,
    Forbidden,
    InvalidConfig,
    MethodNotAllowed,
    MusterError,
    NoAnswer,
    NoCluster,
    NoSupervisor,
    NotFound,
    NotHealthy,
    ProtocolError,
    Refused,
    ShuttingDown,
    Timeout,
    TooLarge,
    Unauthorized,
    UnknownService,
)
from .models import Endpoint, Event, LogLine, Probe, Proxy, Service, Status
from . import notify  # the module: `muster.notify.ready()` reads as well as `muster.ready()`
from .notify import (
    ThreadWatchdog,
    Watchdog,
    extend_timeout,
    heartbeat,
    ready,
    reloading,
    status,
    stopping,
    under_muster,
    watchdog_interval,
)
from .notify import send as send_notify

__version__ = "0.1.0"

__all__ = [
    "Client", "AsyncClient",
    "Endpoint", "Event", "LogLine", "Probe", "Proxy", "Service", "Status",
    "MusterError", "ConfigError", "NoSupervisor", "NoAnswer", "Disconnected", "ProtocolError", "APIError",
    "UnknownService", "NotFound", "MethodNotAllowed", "BadRequest", "NotHealthy", "Timeout",
    "InvalidConfig", "Unauthorized", "Forbidden", "TooLarge", "ShuttingDown", "Refused", "Busy",
    "NoCluster", "EtcdUnavailable",
    "notify", "send_notify", "ready", "status", "heartbeat", "stopping", "reloading", "extend_timeout",
    "under_muster", "watchdog_interval", "Watchdog", "ThreadWatchdog",
]
