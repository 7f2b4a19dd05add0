"""Differential privacy of the shared tensors: clipping, the fixed-cohort mean, accounting.

Run-config keys ``dp.*`` (see docs/privacy.md). Two modes, both from Flower's own pieces:

- **central** (``dp.mode = central``): every update of the shared tensors is clipped to L2
  norm ``C`` (``dp.clipping-norm``) — on the client before it is encoded
  (``dp.clipping = client``, the config key Flower's
  ``DifferentialPrivacyClientSideFixedClipping`` writes) and, in every case, on the server
  once decoded (quantization and error feedback can push a clipped update a little past
  ``C``; ``dp.clipping = server`` clips there alone; ``dp.clipping = adaptive`` moves ``C``
  each round toward a quantile of the update norms, Flower's
  ``DifferentialPrivacyClientSideAdaptiveClipping``). The server averages the clipped updates
  with equal weights over the planned cohort size ``n`` (:func:`fixed_cohort_mean`) and
  Flower's wrapper adds Gaussian noise of std ``z C / n`` (``z``: ``dp.noise-multiplier``).
  A client's LoRA, and whatever else it keeps, never leaves it and is never noised.
- **local** (``dp.mode = local``): each client clips and noises its own update before it
  leaves (Flower's ``LocalDpMod``), at ``(dp.epsilon, dp.delta)`` per round.

The privacy spent is the ε of the whole run at ``dp.delta``
(:func:`privacy_summary`, in ``summary.json``), from Flower's RDP accountant (the
``dp-accounting`` package) for central DP, and by basic composition of the per-round
guarantees for local DP. Only model updates are covered: train and evaluation metrics travel
in the clear.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

DP_NONE, DP_CENTRAL, DP_LOCAL = "none", "central", "local"
DP_MODES = (DP_NONE, DP_CENTRAL, DP_LOCAL)
CLIP_CLIENT, CLIP_SERVER, CLIP_ADAPTIVE = "client", "server", "adaptive"
CLIP_SITES = (CLIP_CLIENT, CLIP_SERVER, CLIP_ADAPTIVE)
#: How the clients of a round were drawn (the accountant's sampling models, by Flower's names).
SAMPLING_UNIFORM = "without-replacement"  # a fixed-size uniform sample, as Flower's FedAvg draws
SAMPLING_NONE = "no-amplification"  # every client, or a draw that is not uniform (a scheduler)


def _arrived(mask: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Where tensor ``name``'s elements arrived (the wireless mask is nonzero), in its shape."""
    return np.asarray(mask[name]).reshape(shape) != 0


def update_norm(tensors: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray],
                mask: Mapping[str, np.ndarray] | None = None) -> float:
    """The L2 norm of ``tensors - current`` over every tensor together; with ``mask``, over the
    elements that arrived only (nonzero in the mask)."""
    total = 0.0
    for name, value in tensors.items():
        diff = np.asarray(value, np.float64) - np.asarray(current[name], np.float64)
        if mask is not None:
            diff = diff * _arrived(mask, name, diff.shape)
        total += float(np.sum(diff * diff))
    return math.sqrt(total)


def clip_update(tensors: Mapping[str, np.ndarray], current: Mapping[str, np.ndarray], clipping_norm: float,
                mask: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], float]:
    """``current`` plus the update ``tensors - current`` scaled to L2 norm at most
    ``clipping_norm`` (over every tensor together, as Flower's ``compute_clip_model_update``),
    and the update's norm before clipping. With ``mask``, the norm counts the elements that
    arrived only, and the others keep their (zeroed) values.

    A non-finite update stays non-finite, for the update checks to reject.
    """
    norm = update_norm(tensors, current, mask)
    scale = min(1.0, clipping_norm / norm) if norm > 0 else 1.0
    out = {}
    for name, value in tensors.items():
        base = np.asarray(current[name], np.float32)
        clipped = base + (np.asarray(value, np.float32) - base) * np.float32(scale)
        if mask is not None:
            clipped = np.where(_arrived(mask, name, clipped.shape), clipped, value)
        out[name] = clipped.astype(np.float32)
    return out, norm


def fixed_cohort_mean(updates: Sequence[Mapping[str, np.ndarray]], masks: Sequence[Mapping[str, np.ndarray] | None],
                      current: Mapping[str, np.ndarray], cohort: int) -> dict[str, np.ndarray]:
    """``current + sum_k mask_k * (x_k - current) / cohort``: the unweighted mean over a
    cohort of ``cohort`` clients, where a client that sent nothing (lost, failed, rejected) and
    an element that did not arrive count as no change.

    This is the mean the Gaussian mechanism's std ``z C / n`` is calibrated for: one client
    moves it by at most ``C / n`` whatever the others did. The weighted average, or a mean over
    the updates that happened to arrive, would let one client move it by more.
    """
    if cohort < 1:
        raise ValueError(f"the cohort size must be >= 1, not {cohort}")
    out = {}
    for name, base in current.items():
        base = np.asarray(base, np.float64)
        total = np.zeros_like(base)
        for tensors, mask in zip(updates, masks, strict=True):
            diff = np.asarray(tensors[name], np.float64) - base
            if mask is not None:
                diff = diff * _arrived(mask, name, diff.shape)
            total += diff
        out[name] = (base + total / cohort).astype(np.float32)
    return out


def central_events(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The noised releases of a run, one per round, from its result rows: the strategy notes
    ``dp_sample_size``, ``dp_population`` and ``dp_sampling`` on every row of a round whose
    aggregate it noised (:class:`pfl_app.strategies.privacy.CentralPrivacy`)."""
    events: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r.get("dp_sample_size") and int(r["round"]) not in events:
            events[int(r["round"])] = {"round": int(r["round"]), "sample_size": int(r["dp_sample_size"]),
                                       "population": int(r["dp_population"]), "sampling": str(r["dp_sampling"])}
    return [events[k] for k in sorted(events)]


def central_epsilon(events: Sequence[Mapping[str, Any]], noise_multiplier: float, delta: float) -> float:
    """ε at ``delta`` after ``events`` (:func:`central_events`), by Flower's RDP accountant.

    Neighbouring federations differ in one client's data (replace-one, the relation that
    fixed-size sampling without replacement is analysed under). Replacing one client moves the
    sum of clipped updates by up to ``2 C`` while its noise has std ``z C``: the accountant's
    noise multiplier (std over sensitivity) is ``z / 2``. A round that did not sample uniformly
    (every client, or a scheduler's choice) is accounted without amplification.
    """
    from flwr.serverapp import (  # needs dp-accounting (flwr[dp]); only runs with DP on
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    if not events:
        return 0.0
    by_sampling: dict[str, list[Mapping[str, Any]]] = {}
    for e in events:
        by_sampling.setdefault(e["sampling"], []).append(e)
    # One accountant a sampling model (an accountant holds one); RDP orders compose, and
    # adding the two ε's is a valid (if loose) bound when a run mixes them.
    epsilon = 0.0
    for sampling, group in by_sampling.items():
        # Without sampling, a Gaussian's privacy depends only on std over sensitivity, and the
        # accountant takes that model under the add-or-remove name: at sensitivity 2C it is
        # the replace-one guarantee.
        relation = (NeighboringRelation.ADD_OR_REMOVE_ONE if sampling == SAMPLING_NONE
                    else NeighboringRelation.REPLACE_ONE)
        acct = RdpAccountant(PrivacyConfig(
            target_delta=delta / len(by_sampling), population_size=max(e["population"] for e in group),
            neighboring_relation=relation, sampling_method=SamplingMethod(sampling)))
        # Equal rounds composed at once: the accountant's cost is per distinct event, not per round.
        sizes = [(e["sample_size"], e["population"]) for e in group]
        for sample_size, population in sorted(set(sizes)):
            acct.compose(GaussianPrivacyEvent(noise_multiplier=noise_multiplier / 2, sample_size=sample_size,
                                              population_size=population), count=sizes.count((sample_size, population)))
        epsilon += float(acct.get_privacy_spent().epsilon)
    return epsilon


def local_epsilon(rows: Iterable[Mapping[str, Any]]) -> tuple[float, int]:
    """The largest ε any one client spent under local DP, by basic composition of the per-round
    ``dp_epsilon`` its received updates carry, and that client's number of releases.

    Basic composition (ε and δ add up over releases) is loose but needs no assumption on how the
    rounds' mechanisms relate; written here because it is a sum."""
    spent: dict[Any, list[float]] = {}
    for r in rows:
        if r.get("dp_epsilon"):
            spent.setdefault(r.get("client", r.get("node")), []).append(float(r["dp_epsilon"]))
    if not spent:
        return 0.0, 0
    worst = max(spent.values(), key=sum)
    return float(sum(worst)), len(worst)


def privacy_summary(mode: str, rows: Sequence[Mapping[str, Any]], *, noise_multiplier: float, clipping_norm: float,
                    delta: float, clipping: str, epsilon_per_round: float) -> dict[str, Any] | None:
    """The ``privacy`` entry of ``summary.json``; ``None`` without DP."""
    if mode == DP_NONE:
        return None
    norms = [float(r["update_norm"]) for r in rows if r.get("update_norm") is not None]
    out: dict[str, Any] = {"mode": mode, "clipping_norm": clipping_norm,
                           "updates_clipped": sum(bool(r.get("clipped")) for r in rows),
                           "update_norm_median": float(np.median(norms)) if norms else None}
    if mode == DP_CENTRAL:
        events = central_events(rows)
        last = [r["dp_clipping_norm"] for r in rows if r.get("dp_clipping_norm") is not None]
        if clipping == CLIP_ADAPTIVE and last:
            out["clipping_norm_last"] = float(last[-1])  # adaptive: the norm of the last noised round
        out.update(noise_multiplier=noise_multiplier, clipping=clipping, delta=delta,
                   epsilon=central_epsilon(events, noise_multiplier, delta), releases=len(events),
                   sampling=sorted({e["sampling"] for e in events}),
                   accountant="flwr.serverapp.RdpAccountant (dp-accounting RDP), replace-one")
    else:
        epsilon, releases = local_epsilon(rows)
        out.update(epsilon_per_round=epsilon_per_round, epsilon=epsilon, delta=delta * releases,
                   releases=releases, accountant="basic composition over the busiest client's releases")
    return out
