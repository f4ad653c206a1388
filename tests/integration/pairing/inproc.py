"""The relay app served by a real uvicorn server (same WebSocket options as ``serve``) inside
the test process, so a test can shorten the pairing limits (timeouts, budgets, clean-up)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from metadata_relay import status
from metadata_relay.config import load_settings
from metadata_relay.http_edge import EdgeMiddleware
from metadata_relay.pairing.component import PairingComponent
from metadata_relay.pairing.limits import PairingLimits
from metadata_relay.pairing.routes import routes as pairing_routes
from metadata_relay.runtime import Runtime
from tests.tools import free_port, free_tcp_udp_port

PRODUCT_WS = "metadata_relay.pairing.wsproto:RelayWebSocketProtocol"  # as cli.serve() passes


@asynccontextmanager
async def serve_inproc(tmp_path: Path, limits: PairingLimits,
                       env: dict[str, str] | None = None,
                       ws: str = PRODUCT_WS) -> AsyncIterator[tuple[str, Path]]:
    db_path = tmp_path / "inproc.db"
    settings = load_settings({
        "SQLITE_DB_PATH": str(db_path), "TURN_PUBLIC_IP": "127.0.0.1",
        "TURN_PORT": str(free_tcp_udp_port()), "TURN_SECRET": "inproc-secret",
        **(env or {}),
    })

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings)
        app.state.runtime = runtime
        comp = PairingComponent(runtime, limits)
        await comp.start()
        runtime.components["pairing"] = comp
        try:
            yield
        finally:
            await comp.stop()
            await runtime.db.close()

    app = Starlette(routes=[*status.routes, *pairing_routes], lifespan=lifespan)
    port = free_port()
    config = uvicorn.Config(EdgeMiddleware(app), host="127.0.0.1", port=port, ws=ws,  # type: ignore[arg-type]
                            ws_max_size=64 * 1024, lifespan="on", log_config=None,
                            access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", db_path
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)
