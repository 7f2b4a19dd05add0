"""The Flower ServerApp of pfl-app. Wiring only: the logic lives in pfl_app.server."""

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from pfl_app.server import run_server

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, context)
