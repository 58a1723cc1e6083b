"""Many GPU nodes: a router above one round loop (engine, planner, executor) per node.

Sequence parallelism stays inside a node (NVLink); across nodes only whole requests move.
`router` decides which node takes a request; `multinode` runs K nodes in one simulated clock
(`tetriopt solve/bench --nodes K --router NAME`); `ray_serve` runs one node actor per GPU node
behind the HTTP front-end (`tetriopt serve --ray`).
"""

from .router import ROUTERS, Move, NodeView, Router, make_router

__all__ = ["ROUTERS", "Move", "NodeView", "Router", "make_router"]
