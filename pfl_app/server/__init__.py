"""Server-side wiring of a run: config, strategy, results."""

from .run import run_server

__all__ = ["run_server"]
