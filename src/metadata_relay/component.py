"""What the application's lifespan starts and stops: each capability is one Component."""

from __future__ import annotations

from typing import Any, Protocol


class Component(Protocol):
    """A long-lived part of the service (proxy, pairing hub, TURN server, ...).

    ``start`` runs in the lifespan before the first request, in registration order; ``stop``
    runs in reverse order on shutdown and must release every socket, task and file it holds.
    ``health`` returns ``"ok"``, ``"degraded"`` or ``"disabled"`` (shown in ``/health``);
    ``stats`` returns the component's section of ``/stats``.
    """

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def health(self) -> str: ...

    def stats(self) -> dict[str, Any]: ...
