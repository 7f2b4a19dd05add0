"""What a client reads from its Flower context: the run config and who it is."""

from __future__ import annotations

import functools

from flwr.app import Context

from ..config import RunConfig, parse_run_config
from ..protocol import NUM_PARTITIONS_NODE_KEY, PARTITION_ID_NODE_KEY


@functools.lru_cache(maxsize=8)
def _parse(items: tuple) -> RunConfig:
    return parse_run_config(dict(items))


def run_config(context: Context) -> RunConfig:
    """The validated run config, parsed once per process."""
    return _parse(tuple(sorted(context.run_config.items())))


def client_identity(context: Context) -> tuple[int, int]:
    """``(client id, number of clients)`` from the node config.

    Simulation sets ``partition-id`` and ``num-partitions``; a SuperNode gets them from
    ``--node-config``.
    """
    nc = context.node_config
    missing = [k for k in (PARTITION_ID_NODE_KEY, NUM_PARTITIONS_NODE_KEY) if k not in nc]
    if missing:
        raise ValueError(
            f"node config lacks {missing}: start the SuperNode with "
            '--node-config "partition-id=<i> num-partitions=<n>"'
        )
    client_id, num_clients = int(nc[PARTITION_ID_NODE_KEY]), int(nc[NUM_PARTITIONS_NODE_KEY])
    if not 0 <= client_id < num_clients:
        raise ValueError(f"partition-id={client_id} is outside [0, num-partitions={num_clients})")
    return client_id, num_clients
