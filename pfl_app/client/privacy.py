"""Local differential privacy on the client (run-config ``dp.mode = local``; see
:mod:`pfl_app.privacy`).

:func:`local_dp_mod` runs Flower's ``LocalDpMod`` on the train handler's reply when the run
asks for local DP, and passes every message through untouched otherwise. It is registered on
the train handler alone (``@app.train(mods=[local_dp_mod])``): an evaluate reply carries no
tensors, and inside the wireless mod it noises the update before the channel sees it.
"""

from __future__ import annotations

import functools

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp.mod import LocalDpMod

from ..privacy import DP_LOCAL
from ..protocol import CONFIG_KEY, DP_EPSILON_KEY, METRICS_KEY, SERVER_ROUND_KEY
from .context import client_identity, run_config


@functools.lru_cache(maxsize=4)
def _mod(clipping_norm: float, epsilon: float, delta: float) -> LocalDpMod:
    # Sensitivity 2C: two updates clipped to norm C differ by at most 2C (replace-one, as
    # pfl_app.privacy accounts central DP); Flower's mod takes it apart from the clipping norm.
    return LocalDpMod(clipping_norm=clipping_norm, sensitivity=2 * clipping_norm, epsilon=epsilon, delta=delta)


def local_dp_mod(msg: Message, context: Context, call_next) -> Message:
    """Clip the reply's update to ``dp.clipping-norm`` and add Gaussian noise for
    ``(dp.epsilon, dp.delta)`` (Flower's ``LocalDpMod``), and note the epsilon in its metrics."""
    cfg = run_config(context)
    if cfg.dp.mode != DP_LOCAL:
        return call_next(msg, context)
    client_id, _ = client_identity(context)
    server_round = int(msg.content[CONFIG_KEY][SERVER_ROUND_KEY])

    def handler_then_seed(m: Message, c: Context) -> Message:
        out = call_next(m, c)
        # LocalDpMod draws its noise from numpy's global generator right after this returns:
        # seeded by the run, the round and the client, a rerun draws the same noise.
        np.random.seed((cfg.seed * 1_000_003 + server_round * 7919 + client_id) % 2**32)
        return out

    reply = _mod(cfg.dp.clipping_norm, cfg.dp.epsilon, cfg.dp.delta)(msg, context, handler_then_seed)
    if not reply.has_error() and METRICS_KEY in reply.content.metric_records:
        reply.content.metric_records[METRICS_KEY][DP_EPSILON_KEY] = cfg.dp.epsilon
    return reply
