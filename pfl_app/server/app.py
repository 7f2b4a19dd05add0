"""pfl-app's Flower ServerApp, importable from the installed package.

The project's ``server_app.py`` is this app, and so is a user's Flower app that names it in
its ``pyproject.toml`` (``serverapp = "pfl_app.server.app:app"``) or re-exports it from a
``server_app.py`` of its own.
"""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from .run import run_server

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, context)
