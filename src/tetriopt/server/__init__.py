"""`tetriopt serve`: an OpenAI-compatible image API in front of the round scheduler.

Imports FastAPI, uvicorn and prometheus-client (the `serve` extra), so nothing in the solver
library imports this package; `tetriopt.commands.serve_cmd` loads it lazily.
"""

from __future__ import annotations

from .config import ServerConfig

__all__ = ["ServerConfig"]
