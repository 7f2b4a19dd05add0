"""The Flower ClientApp of pfl-app (pyproject's ``clientapp``). Wiring only: the app is
:mod:`pfl_app.client.app`, where an app of a user's own finds it too."""

from pfl_app.client.app import app

__all__ = ["app"]
