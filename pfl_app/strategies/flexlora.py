"""FlexLoRA: average the LoRA updates B·A, not the factors, and re-factorise them by truncated
SVD (Bai et al., "Federated Fine-tuning of Large Language Models under Heterogeneous Tasks and
Client Resources", NeurIPS 2024, arXiv 2402.11505)."""

from __future__ import annotations


import numpy as np

from ..methods import register_method
from ..models.personalized import tensor_group
from .base import AcceptedUpdate
from .fedit import FedIT


def lora_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The ``(A, B)`` tensor names of every LoRA module among ``names``.

    peft names a module's factors alike but for ``.lora_A.`` / ``.lora_B.``
    (``...q_proj.lora_A.default.weight``), so a B is found from its A. An A without its B
    (or a B without its A) is left out: it has no product to average.
    """
    present = set(names)
    pairs = []
    for name in names:
        if tensor_group(name) == "lora_A":
            partner = name.replace(".lora_A.", ".lora_B.")
            if partner in present:
                pairs.append((name, partner))
    return pairs


def svd_of_weighted_sum(
    factors: list[tuple[np.ndarray, np.ndarray]], weights: list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD ``U, S, Vᵀ`` of ``sum_i w_i B_i A_i / sum_i w_i``, in float64.

    The sum is never formed: it equals ``Bcat Acat`` with ``Bcat = [w_1 B_1 ... w_n B_n]``
    (out x nr) and ``Acat`` the ``A_i`` stacked (nr x in), so QR of both leaves an SVD of
    an nr x nr core (``Bcat = Q_b R_b``, ``Acatᵀ = Q_a R_a``, ``R_b R_aᵀ = U_c S V_cᵀ``,
    ``U = Q_b U_c``, ``V = Q_a V_c``). For SmolLM2's 576 x 576 projections and 4 clients of
    rank 16 this is a 64 x 64 SVD in place of a 576 x 576 one per module.

    Parameters
    ----------
    factors : list of (B_i, A_i)
        Each of shape (out, r_i) and (r_i, in).
    weights : list of float
        One per pair, summing to more than zero.

    Returns
    -------
    tuple of ndarray
        ``U`` (out x k), ``S`` (k, descending), ``Vᵀ`` (k x in), ``k = min(out, in, sum r_i)``.
    """
    total = float(sum(weights))
    b_cat = np.concatenate([(w / total) * np.asarray(b, dtype=np.float64)
                            for (b, _), w in zip(factors, weights, strict=True)], axis=1)
    a_cat = np.concatenate([np.asarray(a, dtype=np.float64) for _, a in factors], axis=0)
    q_b, r_b = np.linalg.qr(b_cat)
    q_a, r_a = np.linalg.qr(a_cat.T)
    u_c, s, vt_c = np.linalg.svd(r_b @ r_a.T, full_matrices=False)
    return q_b @ u_c, s, vt_c @ q_a.T


def refactorise(
    u: np.ndarray, s: np.ndarray, vt: np.ndarray, rank: int, spare_a: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """LoRA factors ``(B, A)`` of rank ``rank`` whose ``B @ A`` is the best rank-``rank``
    approximation of ``U diag(S) Vᵀ`` (Eckart-Young, in the Frobenius and spectral norms).

    The SVD truncated to ``rank`` is split evenly between the factors:
    ``B = U_r sqrt(S_r)``, ``A = sqrt(S_r) V_rᵀ``. Directions of zero singular value (a
    product of rank below ``rank``) get a zero column of B and the matching row of
    ``spare_a``: ``B @ A`` is unchanged and, as in LoRA's own initialisation (B zero, A
    not), those directions can still learn; a zero row of A would leave them with no
    gradient ever after.

    Parameters
    ----------
    u, s, vt : ndarray
        A thin SVD, singular values descending (:func:`svd_of_weighted_sum`).
    rank : int
        LoRA's rank r.
    spare_a : ndarray of shape (r, in)
        The rows A takes where a singular value is zero (the A the server sent).

    Returns
    -------
    tuple of ndarray
        ``B`` (out x r) and ``A`` (r x in), float64.
    """
    spare_a = np.asarray(spare_a, dtype=np.float64)
    k = min(rank, s.size)
    root = np.sqrt(s[:k])
    b = np.zeros((u.shape[0], rank))
    a = spare_a.copy()
    # numpy's matrix_rank tolerance: singular values below it are rounding noise.
    tol = (s[0] if s.size else 0.0) * max(u.shape[0], vt.shape[1]) * np.finfo(np.float64).eps
    live = np.flatnonzero(s[:k] > tol)
    b[:, live] = u[:, live] * root[live]
    a[live] = root[live, None] * vt[live]
    return b, a


def _whole(update: AcceptedUpdate, names: tuple[str, ...]) -> bool:
    """Whether every element of the tensors ``names`` of ``update`` arrived."""
    if update.mask is None:
        return True
    return all(name not in update.mask or bool(np.all(np.asarray(update.mask[name]))) for name in names)


@register_method("flexlora")
class FlexLoRA(FedIT):
    """FedIT's sharing (every client trains LoRA A and B, both travel, no personalization),
    aggregated FlexLoRA's way: per LoRA module, the weighted average of the clients' updates
    ``B_i A_i`` (weights: numbers of examples, :meth:`aggregation_weights`), re-factorised to
    the LoRA rank by truncated SVD (:func:`refactorise`).

    Averaging A and B apart, as FedIT does, averages the factors, and the product of averages
    is not the average of the products (``mean(B) mean(A) != mean(B A)``); FlexLoRA averages
    what each client's LoRA adds to the weights. LoRA scales ``B A`` by ``alpha / r``, the
    same on every client (one run config), so averaging the unscaled products is the same
    as averaging the scaled ones. The paper also fits each client's own rank from the
    global SVD; here every client has the run's ``lora.r``, so one truncation serves all.

    A partial update (``wireless.loss-mode = "partial"``) whose A or B of a module lost an
    element is left out of that module's average (a product of factors with lost elements
    is not that client's update); its other modules count. A module no update brought
    whole keeps the factors the server sent. Shared tensors that are not part of a LoRA
    pair are averaged as the base does.

    A server optimizer (``server-optimizer`` other than ``fedavg``) would step from the old
    factors toward the re-factorised ones, but the SVD may turn the factors' basis from one
    round to the next (only ``B A`` is determined), so that step has no clear meaning.
    """

    def aggregate(
        self, updates: list[AcceptedUpdate], weights: list[float], current: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Average the products ``B A`` per LoRA module and re-factorise them.

        Parameters
        ----------
        updates : list of AcceptedUpdate
            The round's accepted updates.
        weights : list of float
            One per update.
        current : dict of str to ndarray
            The shared tensors sent this round: the rank of each module (A's rows), and
            the factors of a module no update brought whole.

        Returns
        -------
        dict of str to ndarray
            A tensor per name of ``current``.
        """
        out = super().aggregate(updates, weights, current)
        for a_name, b_name in lora_pairs(list(current)):
            kept = [(x, w) for x, w in zip(updates, weights, strict=True) if _whole(x, (a_name, b_name))]
            if not kept or sum(w for _, w in kept) <= 0:
                out[a_name], out[b_name] = current[a_name], current[b_name]
                continue
            # Written by hand: no library re-factorises the modules of a LoRA state dict.
            u, s, vt = svd_of_weighted_sum([(x.tensors[b_name], x.tensors[a_name]) for x, _ in kept],
                                           [w for _, w in kept])
            out[b_name], out[a_name] = refactorise(u, s, vt, current[a_name].shape[0], current[a_name])
        return out
