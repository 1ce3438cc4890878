"""Nash-MD and XPO losses: hand-worked values, gradients, identities, and the last TRL release that shipped
them (1.13.0) on the same log-probs and judge outputs.

The peer functions below are transcriptions of TRL 1.13.0 (the last release with NashMDTrainer and
XPOTrainer; 1.14.0 removed them), so the check runs without the old wheel:

- ``trl/experimental/nash_md/nash_md_trainer.py`` lines 367-385, ``NashMDTrainer._compute_losses``, with
  ``probability = F.sigmoid(model_scores - mixture_scores)`` from ``training_step`` (line 477);
- ``trl/experimental/xpo/xpo_trainer.py`` lines 305-343, ``XPOTrainer._compute_losses`` (``loss_type:
  sigmoid``), with ``chosen_mask = model_scores >= ref_scores`` from ``training_step``.

Conventions aligned: TRL returns the batch mean, alignkit per-example losses (``.mean()`` compared);
TRL zeroes padded token log-probs with ``masked_fill`` before summing, alignkit masks inside the loss.
"""

import math

import torch
import torch.nn.functional as F
from helpers import batch

from alignkit.losses import LOSSES
from alignkit.losses.nash_xpo import nash_md_loss, xpo_loss

# ---------------------------------------------------------------- TRL 1.13.0, transcribed


def trl_nash_md_compute_losses(beta, model_logprobs_model_data, ref_logprobs_model_data, probability):
    score = (probability - 0.5) * model_logprobs_model_data.sum(1)
    with torch.no_grad():
        log_ratio = model_logprobs_model_data - ref_logprobs_model_data
        kl_div_log = log_ratio.sum(1)
    kl_div_loss = (log_ratio * model_logprobs_model_data).sum(1)
    loss = beta * kl_div_loss - score
    return loss.mean(), score, kl_div_log


def trl_xpo_compute_losses(beta, alpha, model_logprobs_model_data, model_logprobs_ref_data, ref_logprobs_ref_data,
                           ref_logprobs_model_data, chosen_mask):
    model_logprobs_model_data_sum = model_logprobs_model_data.sum(1)
    model_logprobs_ref_data_sum = model_logprobs_ref_data.sum(1)
    ref_logprobs_ref_data_sum = ref_logprobs_ref_data.sum(1)
    ref_logprobs_model_data_sum = ref_logprobs_model_data.sum(1)
    chosen_model_logprobs = torch.where(chosen_mask, model_logprobs_model_data_sum, model_logprobs_ref_data_sum)
    chosen_ref_logprobs = torch.where(chosen_mask, ref_logprobs_model_data_sum, ref_logprobs_ref_data_sum)
    chosen_log_ratios = chosen_model_logprobs - chosen_ref_logprobs
    rejected_model_logprobs = torch.where(~chosen_mask, model_logprobs_model_data_sum, model_logprobs_ref_data_sum)
    rejected_ref_logprobs = torch.where(~chosen_mask, ref_logprobs_model_data_sum, ref_logprobs_ref_data_sum)
    rejected_log_ratios = rejected_model_logprobs - rejected_ref_logprobs
    logits = chosen_log_ratios - rejected_log_ratios
    dpo_losses = -F.logsigmoid(beta * logits)
    xpo_losses = alpha * model_logprobs_ref_data_sum
    loss = (dpo_losses + xpo_losses).mean()
    return loss, dpo_losses, xpo_losses


# ---------------------------------------------------------------- Nash-MD


def test_nash_md_loss_by_hand():
    """One sample, tokens log pi = (-1, -2), log pi_ref = (-1.5, -1), P = 0.8, beta = 0.1:
    score = (0.8 - 0.5) * (-3) = -0.9; log-ratios (0.5, -1); KL term = 0.5 * -1 + -1 * -2 = 1.5;
    L = 0.1 * 1.5 - (-0.9) = 1.05. Gradient wrt log pi_t: beta * ratio_t - (P - 1/2) = (0.05 - 0.3, -0.1 - 0.3)."""
    logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    losses, metrics = nash_md_loss(logps, torch.tensor([[-1.5, -1.0]]), torch.ones(1, 2, dtype=torch.bool),
                                   torch.tensor([0.8]), beta=0.1)
    assert torch.allclose(losses, torch.tensor([1.05]))
    assert math.isclose(float(metrics["score"]), -0.9, abs_tol=1e-6)
    assert math.isclose(float(metrics["kl"]), -0.5, abs_tol=1e-6)
    losses.sum().backward()
    assert torch.allclose(logps.grad, torch.tensor([[0.05 - 0.3, -0.1 - 0.3]]))


def test_nash_md_padding_has_no_effect_and_no_gradient():
    logps = torch.tensor([[-1.0, -2.0, -7.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    losses, _ = nash_md_loss(logps, torch.tensor([[-1.5, -1.0, 3.0]]), mask, torch.tensor([0.8]), beta=0.1)
    assert torch.allclose(losses, torch.tensor([1.05]))
    losses.sum().backward()
    assert logps.grad[0, 2] == 0


def test_nash_md_gradient_sign_a_preferred_sample_becomes_likelier():
    """At pi = pi_ref the KL term has no gradient; P > 1/2 raises log pi(y), P < 1/2 lowers it, P = 1/2 does nothing."""
    for p, sign in ((0.9, -1), (0.1, 1), (0.5, 0)):
        logps = torch.tensor([[-1.0, -2.0]], requires_grad=True)
        losses, _ = nash_md_loss(logps, logps.detach().clone(), torch.ones(1, 2, dtype=torch.bool), torch.tensor([p]))
        losses.sum().backward()
        assert torch.all(torch.sign(logps.grad) == sign)


def test_nash_md_matches_trl_1_13():
    torch.manual_seed(0)
    B, T = 5, 7
    logps = -torch.rand(B, T) * 3
    ref = -torch.rand(B, T) * 3
    mask = torch.rand(B, T) > 0.2
    model_scores, mixture_scores = torch.randn(B), torch.randn(B)
    probability = torch.sigmoid(model_scores - mixture_scores)  # TRL: F.sigmoid(model_scores - mixture_scores)
    ours_in = logps.clone().requires_grad_(True)
    ours, metrics = nash_md_loss(ours_in, ref, mask, probability, beta=0.07)
    theirs_in = logps.masked_fill(~mask, 0.0).requires_grad_(True)  # TRL's masked_fill of padding
    theirs, score, kl = trl_nash_md_compute_losses(0.07, theirs_in, ref.masked_fill(~mask, 0.0), probability)
    assert torch.allclose(ours.mean(), theirs, atol=1e-6, rtol=0)
    assert torch.allclose(metrics["score"], score.mean(), atol=1e-6) and torch.allclose(metrics["kl"], kl.mean(), atol=1e-6)
    ours.mean().backward()
    theirs.backward()
    assert torch.allclose(ours_in.grad, theirs_in.grad.masked_fill(~mask, 0.0), atol=1e-7)


# ---------------------------------------------------------------- XPO


def test_xpo_with_alpha_zero_is_dpo_exactly():
    b = batch([[-3.0, -5.0], [-2.0, -1.0]], ref=[[-4.0, -4.5], [-2.5, -1.5]], grad=True)
    column = torch.tensor([1, 0])
    ours, _ = xpo_loss(b, column, beta=0.1, alpha=0.0)
    theirs, _ = LOSSES["dpo"](b, beta=0.1)
    assert torch.equal(ours, theirs)


def test_xpo_loss_by_hand():
    """Row: log pi (chosen, rejected) = (-3, -5), log pi_ref = (-4, -4.5), y_ref in column 1, beta 0.1, alpha 0.5.
    h = 0.1 * ((-3 + 4) - (-5 + 4.5)) = 0.15; DPO = log(1 + e^-0.15) = 0.62096; exploration = 0.5 * -5 = -2.5."""
    b = batch([[-3.0, -5.0]], ref=[[-4.0, -4.5]], grad=True)
    losses, metrics = xpo_loss(b, torch.tensor([1]), beta=0.1, alpha=0.5)
    assert math.isclose(float(losses[0].detach()), math.log1p(math.exp(-0.15)) - 2.5, abs_tol=1e-6)
    assert math.isclose(float(metrics["xpo/exploration"]), -2.5)
    losses.sum().backward()
    sig = 1 / (1 + math.exp(0.15))  # d/dh softplus(-h) = -sigmoid(-h)
    assert torch.allclose(b.policy_logps.grad, torch.tensor([[-0.1 * sig, 0.1 * sig + 0.5]]))


def test_xpo_matches_trl_1_13_on_the_same_pairs():
    """TRL's inputs (policy sample y, reference sample y_ref, judge scores) laid out as alignkit's selector does:
    columns (chosen, rejected), the policy sample chosen when it scores at least as high, y_ref's column known."""
    torch.manual_seed(1)
    B, T = 6, 5
    model_model, model_ref = -torch.rand(B, T) * 3, -torch.rand(B, T) * 3  # log pi of y and of y_ref, per token
    ref_ref, ref_model = -torch.rand(B, T) * 3, -torch.rand(B, T) * 3  # log pi_ref of y_ref and of y
    model_scores, ref_scores = torch.randn(B), torch.randn(B)
    model_scores[0] = ref_scores[0]  # a tie: TRL's >= gives it to the policy sample
    chosen_mask = model_scores >= ref_scores
    theirs, _, _ = trl_xpo_compute_losses(0.1, 0.02, model_model, model_ref, ref_ref, ref_model, chosen_mask)

    pi_y, pi_yref = model_model.sum(1), model_ref.sum(1)
    ref_y, ref_yref = ref_model.sum(1), ref_ref.sum(1)
    policy = torch.stack([torch.where(chosen_mask, pi_y, pi_yref), torch.where(chosen_mask, pi_yref, pi_y)], 1)
    ref = torch.stack([torch.where(chosen_mask, ref_y, ref_yref), torch.where(chosen_mask, ref_yref, ref_y)], 1)
    column = torch.where(chosen_mask, 1, 0)  # y_ref is rejected when the policy sample wins
    ours, _ = xpo_loss(batch(policy.tolist(), ref=ref.tolist()), column, beta=0.1, alpha=0.02)
    assert torch.allclose(ours.mean(), theirs, atol=1e-6, rtol=0)
