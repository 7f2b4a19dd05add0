"""Rounds of a cell without Flower and without training: the helper of bench/cell_air_time.py and
bench/scheduling_channel.py.

A round is driven as a run drives it, through the app's own code:

1. the strategy a run builds (``build_strategy`` on the run config: the method, composed with
   ``ChannelScheduled`` and ``OverTheAir``) samples and schedules the clients on a fake grid and
   writes the train messages (``configure_train``: the shared tensors, the config, the cohort);
2. each train message goes through the wireless mod (:class:`~pfl_app.wireless.mod.WirelessMod`,
   its default channel factory: ``LinkChannel`` or ``CellChannel`` under ``wireless.access``),
   with a stand-in for the ClientApp that trains nothing and replies with the shared tensors it
   received, plus the metrics and client records a task client sends (so the reply has the size a
   real one has);
3. the strategy aggregates the replies (``aggregate_train``: lost updates left out, AirComp's power
   control booked per client), and the round's rows are read from its ledger, as
   ``on_round_end`` would receive them; ``pfl_app.results.round_air_time`` gives the round's time
   on the air as the recorder computes it.

What this leaves out: the clients' training (the update equals the global tensors it received, so
AirComp's difference signal is zero; the air time, energies and power control do not depend on
it), evaluation, and Flower's transport. Every client has the same number of examples (the
aggregation weights are equal).

Message sizes are those of the real model: :func:`shared_tensors` builds the configured model
once (the embedded default: SmolLM2-135M-Instruct) and takes the initial values of the method's
shared groups, as the ServerApp does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from pfl_app.config import RunConfig, parse_run_config
from pfl_app.data.assignment import task_slot
from pfl_app.protocol import (
    ARRAYS_KEY,
    CLIENT_ID_KEY,
    CLIENT_KEY,
    METRICS_KEY,
    NUM_EXAMPLES_KEY,
    NUM_PARTITIONS_NODE_KEY,
    PARTITION_ID_NODE_KEY,
    RUN_DIR_KEY,
    TASK_KEY,
    TRAIN_SECONDS_KEY,
)
from pfl_app.records import message_bytes, to_arrayrecord
from pfl_app.results import round_air_time
from pfl_app.strategies import STRATEGIES
from pfl_app.strategies.server_optimizers import build_strategy
from pfl_app.wireless.mod import WirelessMod

#: The run folder every train message names (its length changes the downlink by a few bytes).
RUN_DIR = "/work/pfl-app/results/cell-bench"
#: A node's id in the fake grid: client c is node NODE_BASE + c.
NODE_BASE = 1000


def shared_tensors(cfg: RunConfig, groups: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The initial values of ``groups`` on the model ``cfg`` builds (built once per process)."""
    from pfl_app.models.personalized import shared_model_bundle

    return shared_model_bundle(cfg).initial_tensors(groups)


class _Grid:
    """Only what FedAvg's sampling asks of a Grid."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


def _identity() -> None:
    # Flower builds message metadata from the current task's identity; a runtime sets it.
    from flwr.supercore.task_identity import TaskIdentity  # noqa: PLC0415

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0


@dataclass
class Cell:
    """One run's strategy and clients, without Flower.

    Parameters
    ----------
    run_config : dict
        Run-config overrides (flat keys, as ``-c`` takes them).
    num_clients : int
        Clients in the federation (nodes of the fake grid).
    tensors : dict
        The shared tensors of the method (:func:`shared_tensors`).
    """

    run_config: dict[str, Any]
    num_clients: int
    tensors: dict[str, np.ndarray]
    cfg: RunConfig = field(init=False)

    def __post_init__(self) -> None:
        _identity()
        self.cfg = parse_run_config(dict(self.run_config))
        n = self.num_clients
        self.strategy = build_strategy(self.cfg.method, STRATEGIES, optimizer=self.cfg.server_optimizer,
                                       learning_rate=self.cfg.server_learning_rate,
                                       proximal_mu=self.cfg.proximal_mu, run_config=self.cfg,
                                       fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n,
                                       min_evaluate_nodes=n, min_available_nodes=n)
        self.nodes = [NODE_BASE + c for c in range(n)]
        self.mod = WirelessMod()
        self.arrays = to_arrayrecord(self.tensors)
        tasks = self.cfg.data.tasks
        self._task = {c: tasks[task_slot(c, n, len(tasks))[0]] for c in range(n)}
        self._contexts = {c: Context(run_id=1, node_id=NODE_BASE + c,
                                     node_config={PARTITION_ID_NODE_KEY: c, NUM_PARTITIONS_NODE_KEY: n},
                                     state=RecordDict(), run_config=dict(self.run_config)) for c in range(n)}

    def reply(self, msg: Message, client: int) -> Message:
        """What a task client sends back (``ClientSession.reply``), its update the tensors it got."""
        return Message(content=RecordDict({
            METRICS_KEY: MetricRecord({NUM_EXAMPLES_KEY: 100, "train-loss": 0.5, "train-steps": 6,
                                       TRAIN_SECONDS_KEY: 0.0}),
            CLIENT_KEY: ConfigRecord({CLIENT_ID_KEY: client, TASK_KEY: self._task[client]}),
            ARRAYS_KEY: msg.content[ARRAYS_KEY],
        }), reply_to=msg)

    def round(self, server_round: int) -> dict[str, Any]:
        """Run ``server_round``: its rows (one per scheduled client), its time on the air, and the
        sizes of its messages."""
        msgs = list(self.strategy.configure_train(server_round, self.arrays, ConfigRecord({RUN_DIR_KEY: RUN_DIR}),
                                                  _Grid(self.nodes)))
        replies, sizes = [], []
        for m in msgs:
            client = m.metadata.dst_node_id - NODE_BASE

            def call_next(msg: Message, context: Context, c: int = client) -> Message:
                reply = self.reply(msg, c)
                sizes.append(message_bytes(reply))
                return reply

            replies.append(self.mod(m, self._contexts[client], call_next))
        self.strategy.aggregate_train(server_round, replies)
        # The rows on_round_end would get (it runs after evaluation, which is left out here).
        rows = self.strategy._ledger_for(server_round).rows()
        return {"rows": rows, "round_air_time_s": round_air_time(rows, self.cfg.wireless.deadline_s),
                "bytes_down": sorted({message_bytes(m) for m in msgs}), "bytes_up": sorted(set(sizes))}


__all__ = ["Cell", "shared_tensors"]
