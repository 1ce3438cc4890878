"""Online pairwise losses against a second sample: Nash-MD and XPO.

Both compare a policy sample ``y ~ pi`` with a second response to the same prompt: Nash-MD's
``y'`` comes from the geometric mixture of the policy and the reference
(:mod:`alignkit.engine.mixture`), XPO's ``y_ref`` from the reference. Their inputs are not the
``[B, K]`` sequence log-probs of the preference losses alone (Nash-MD needs per-token
log-probs, XPO the column of the reference sample), so they are pure functions here and run as
updates of the sampling loop (:mod:`alignkit.train.nash_xpo`), not entries of ``LOSSES``.
Losses are per prompt ``[B]``; the trainer reduces them (:func:`alignkit.losses.global_mean`).
"""

from __future__ import annotations

import torch

from alignkit.losses.batch import RankedBatch
from alignkit.losses.preference import dpo

Tensor = torch.Tensor


def nash_md_loss(policy_token_logps: Tensor, ref_token_logps: Tensor, mask: Tensor, probability: Tensor, *,
                 beta: float = 0.1) -> tuple[Tensor, dict[str, Tensor]]:
    """Nash-MD policy gradient (Munos et al. 2023, arXiv 2312.00886, sec. 7, Nash-MD-PG), as a loss.

    The paper's update ascends ``E_{y ~ pi, y' ~ pi_mix}[P(y > y' | x)] - beta KL(pi || pi_ref)``;
    with the score-function estimator, 1/2 as the control variate and the per-token KL of TRL::

        L = beta * sum_t sg(log pi(y_t) - log pi_ref(y_t)) * log pi(y_t)  -  (P(y > y') - 1/2) * sum_t log pi(y_t)

    (``sg``: stop-gradient). Its gradient is ``-(P - 1/2) grad log pi(y) + beta grad KL`` for
    ``y ~ pi``: the REINFORCE estimate of both terms.

    Shapes: ``policy_token_logps`` ``[B, T]`` (log pi of the policy sample's tokens, with
    gradient), ``ref_token_logps`` ``[B, T]``, ``mask`` ``[B, T]`` bool (real response tokens),
    ``probability`` ``[B]`` the judge's ``P(y > y')`` (no gradient). Returns ``(losses [B], metrics)``:
    ``score`` (the REINFORCE term), ``kl`` (``sum_t`` log-ratio, the sequence KL estimate), ``probability``.
    """
    logps = policy_token_logps.float().masked_fill(~mask, 0.0)  # [B, T]
    ref = ref_token_logps.float().masked_fill(~mask, 0.0)
    score = (probability.float() - 0.5) * logps.sum(1)  # [B]
    log_ratio = (logps - ref).detach()  # [B, T]
    kl_loss = (log_ratio * logps).sum(1)  # [B]
    losses = beta * kl_loss - score
    metrics = {"score": score.detach().mean(), "kl": log_ratio.sum(1).mean(), "probability": probability.float().mean()}
    return losses, metrics


def xpo_loss(batch: RankedBatch, reference_sample: Tensor, *, beta: float = 0.1,
             alpha: float = 1e-5) -> tuple[Tensor, dict[str, Tensor]]:
    """XPO (Xie et al. 2024, "Exploratory Preference Optimization", arXiv 2405.21046, Algorithm 1, line 6).

    ``L = DPO(y_w, y_l) + alpha * log pi(y_ref | x)``: the DPO loss of the judged pair (alignkit's
    :func:`~alignkit.losses.preference.dpo`, eq. 7 of Rafailov et al.) plus the exploration term, which
    lowers the likelihood of what the reference samples (optimism towards responses it rarely
    gives). In the paper and TRL the pair is ``{y ~ pi, y_ref ~ pi_ref}`` ranked by the judge, so
    ``y_ref`` is one of its two columns. ``alpha = 0`` is exactly ``dpo``.

    Shapes: ``batch`` ``[B, 2]`` (chosen, rejected; ``beta`` as DPO's), ``reference_sample`` ``[B]``
    long: the column (0 or 1) holding ``y_ref``. Returns ``(losses [B], metrics)``: DPO's metrics plus
    ``xpo/logps_ref_sample`` (log pi(y_ref)) and ``xpo/exploration`` (alpha times it).
    """
    losses, metrics = dpo(batch, beta=beta)  # [B]
    rows = torch.arange(batch.batch_size, device=batch.policy_logps.device)
    ref_sample_logps = batch.policy_logps[rows, reference_sample.to(rows.device)].float()  # [B]
    exploration = alpha * ref_sample_logps  # [B]
    metrics = {**metrics, "xpo/logps_ref_sample": ref_sample_logps.detach().mean(),
               "xpo/exploration": exploration.detach().mean()}
    return (losses if alpha == 0 else losses + exploration), metrics  # alpha 0: DPO's own tensor
