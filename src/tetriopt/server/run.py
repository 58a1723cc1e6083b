"""Running the app on uvicorn with a drain on SIGTERM/SIGINT instead of an abrupt stop.

uvicorn on its own stops taking connections and waits only for open HTTP requests; async jobs
would be lost. Here the first signal starts the service's drain (new requests get 503, accepted
jobs finish, results are fetched) and only then asks uvicorn to exit; a second signal exits now.
"""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn

from .app import create_app
from .config import ServerConfig


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        if self._draining or self._loop is None or not hasattr(app, "state"):
            self.should_exit = True
            self.force_exit = self._draining
            return
        self._draining = True
        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.state.drain()))

    def request_exit(self) -> None:
        self.should_exit = True


def build_server(cfg: ServerConfig, make_app=create_app) -> DrainingServer:
    """uvicorn on `make_app(cfg, on_drained=...)` (the Ray front-end passes its own app factory)."""
    holder: list[DrainingServer] = []
    app = make_app(cfg, on_drained=lambda: holder[0].request_exit())
    server = DrainingServer(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None,
                                           access_log=True, timeout_graceful_shutdown=5,
                                           lifespan="on"))
    holder.append(server)
    return server


def serve(cfg: ServerConfig, make_app=create_app) -> None:
    from .logs import setup_logging

    setup_logging(cfg.log_level)
    build_server(cfg, make_app).run()
