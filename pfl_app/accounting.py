"""Per-round, per-client bookkeeping: bytes on each link, training and evaluation results.

Flower's simulation reports no traffic, so the strategies measure every message they
send and receive (:func:`pfl_app.records.message_bytes`) and record it here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class RoundLedger:
    """What happened to each node in one round.

    Rows are keyed by node id; each row gathers the bytes sent to and from the node, and
    whatever the strategy records about its train and evaluate replies.
    """

    def __init__(self, server_round: int) -> None:
        self.server_round = server_round
        self._rows: dict[int, dict[str, Any]] = defaultdict(
            lambda: {"bytes_up": 0, "bytes_down": 0}
        )

    def downlink(self, node_id: int, nbytes: int) -> None:
        self._rows[node_id]["bytes_down"] += int(nbytes)

    def uplink(self, node_id: int, nbytes: int) -> None:
        self._rows[node_id]["bytes_up"] += int(nbytes)

    def note(self, node_id: int, **fields: Any) -> None:
        self._rows[node_id].update(fields)

    def note_all(self, **fields: Any) -> None:
        """Set ``fields`` on every node's row so far (facts about the whole round)."""
        for node_id in list(self._rows):
            self._rows[node_id].update(fields)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per node, ordered by client id where known, then node id."""
        out = [{"round": self.server_round, "node": node, **row} for node, row in self._rows.items()]
        return sorted(out, key=lambda r: (r.get("client", 1 << 30), r["node"]))

    def totals(self) -> dict[str, int]:
        rows = self._rows.values()
        return {
            "bytes_up": sum(r["bytes_up"] for r in rows),
            "bytes_down": sum(r["bytes_down"] for r in rows),
        }
