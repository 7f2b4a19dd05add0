"""Fault injection, for testing how runs cope: a ClientApp mod that makes chosen clients fail
or send corrupt updates.

Off by default (``faults.fail-fraction = faults.corrupt-fraction = 0``). Each train round,
a seeded draw picks which clients fail (their ClientApp raises, and Flower returns an error
reply) and which send an update full of NaN; the same seed picks the same clients.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from .client.context import client_identity, run_config
from .records import from_arrayrecord, to_arrayrecord


class InjectedFault(RuntimeError):
    """A failure the run was configured to inject."""


def faulty_clients(seed: int, server_round: int, num_clients: int, fail: float, corrupt: float) -> tuple[set, set]:
    """``(failing, corrupting)`` client ids of a round: disjoint, of sizes round(fraction * n)."""
    order = np.random.default_rng([seed, server_round, 0xFA17]).permutation(num_clients)
    n_fail = int(round(fail * num_clients))
    n_corrupt = min(int(round(corrupt * num_clients)), num_clients - n_fail)
    return set(order[:n_fail].tolist()), set(order[n_fail:n_fail + n_corrupt].tolist())


def fault_injection_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Fail or corrupt the train reply of the clients :func:`faulty_clients` picks."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    cfg = run_config(context)
    if cfg.faults.fail_fraction == 0 and cfg.faults.corrupt_fraction == 0:
        return call_next(msg, context)
    client_id, num_clients = client_identity(context)
    server_round = int(msg.content["config"]["server-round"])
    failing, corrupting = faulty_clients(cfg.seed, server_round, num_clients,
                                         cfg.faults.fail_fraction, cfg.faults.corrupt_fraction)
    if client_id in failing:
        raise InjectedFault(f"injected fault: client {client_id} fails in round {server_round}")
    reply = call_next(msg, context)
    if client_id in corrupting and not reply.has_error() and "arrays" in reply.content.array_records:
        tensors = from_arrayrecord(reply.content["arrays"])
        reply.content["arrays"] = to_arrayrecord({k: np.full_like(v, np.nan) for k, v in tensors.items()})
    return reply
