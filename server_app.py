"""The Flower ServerApp of pfl-app (pyproject's ``serverapp``). Wiring only: the app is
:mod:`pfl_app.server.app`, where an app of a user's own finds it too."""

from pfl_app.server.app import app

__all__ = ["app"]
