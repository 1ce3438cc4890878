"""The four diffusion alignment losses, pure functions over per-example tensors.

Shapes: ``B`` examples (kept samples, chains or pairs), ``T`` denoising steps. Every function
returns ``(losses [B], metrics)``; :func:`alignkit.losses.global_mean` reduces, as for language
models. Log-probs are per dimension (:mod:`alignkit.diffusion.policy`); denoising errors are
``||eps - eps_theta||^2 / D``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from alignkit.diffusion.registry import register_diffusion_method


def _mean(x: torch.Tensor) -> float:
    return float(x.detach().float().mean()) if x.numel() else 0.0


@register_diffusion_method("diffusion_raft", feedback="best_of_k", inputs="denoising_error", needs_reference="anchor")
def diffusion_raft(err: torch.Tensor, eps_gap: torch.Tensor | None = None, *, anchor: float = 0.0):
    """RAFT for diffusion, Dong et al. 2023, arXiv 2304.06767, sec. 3 and 4.2 (Stable Diffusion).

    Reward-ranked fine-tuning: sample K images per prompt, keep the best (or the top fraction of a
    global ranking) and fine-tune on the kept images with the ordinary DDPM loss,
    L = ||eps - eps_theta(x_t, t, c)||^2 (Ho et al. 2020, eq. 14), ``err`` ``[B]`` on kept samples.

    ``anchor`` > 0 adds a pull to the start model on the same noised inputs,
    L = ||eps - eps_theta(x_t, t, c)||^2 + anchor ||eps_theta(x_t, t, c) - eps_ref(x_t, t, c)||^2,
    ``eps_gap`` ``[B]`` the second norm (over D). Each denoising step is a Gaussian whose mean is linear
    in eps, so the step's KL to the start model is a t-dependent multiple of that norm and the term is a
    KL regulariser of the chain: the one of KL-regularised supervised fine-tuning in DPOK (Fan et al.
    2023, arXiv 2305.16381, sec. 4). Without it, fine-tuning on the model's own samples also teaches
    their sampling artifacts (the digits demo: KL 113 and a lower reward than the start model).
    At each noised input the minimiser is eps_theta = (E[eps | x_t] + anchor eps_ref) / (1 + anchor).
    0 (the default) is the paper's RAFT.
    """
    if anchor == 0:
        return err, {"denoising_error": _mean(err)}
    return err + anchor * eps_gap, {"denoising_error": _mean(err), "eps_gap": _mean(eps_gap)}


@register_diffusion_method("ddpo", feedback="advantages", inputs="chain_log_prob", needs_reference=False)
def ddpo(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, *,
         clip_range: float = 1e-4, adv_clip_max: float = 5.0):
    """DDPO_IS, Black et al. 2023, arXiv 2305.13301, eq. 4 with PPO's clipped surrogate (sec. 4.3).

    Per step t of a chain sampled by pi_old: rho_t = exp(log pi(x_{t-1}|x_t,c) - log pi_old(...)),
    A = clip(advantage, -adv_clip_max, adv_clip_max),
    L = mean_t max(-A rho_t, -A clip(rho_t, 1 - clip_range, 1 + clip_range)).
    ``log_probs`` ``[B, T]`` under the policy being trained, ``old_log_probs`` ``[B, T]`` recorded at
    sampling, ``advantages`` ``[B]`` (rewards normalised per condition). Defaults from ddpo-pytorch's
    ``config/base.py`` (clip 1e-4 on per-dimension log-probs, advantages clipped at 5).
    """
    adv = advantages.clamp(-adv_clip_max, adv_clip_max)[:, None]  # [B, 1]
    ratio = torch.exp(log_probs - old_log_probs)  # [B, T]
    per_step = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_range, 1 + clip_range))
    clipped = ((ratio - 1).abs() > clip_range).float()
    return per_step.mean(1), {"clipfrac": _mean(clipped),
                              "approx_kl": _mean(0.5 * (log_probs - old_log_probs) ** 2)}


@register_diffusion_method("d3po", feedback="pairs", inputs="chain_log_prob", needs_reference=True)
def d3po(log_probs_w: torch.Tensor, ref_log_probs_w: torch.Tensor, log_probs_l: torch.Tensor,
         ref_log_probs_l: torch.Tensor, *, beta: float = 0.1, clip: float = 0.1):
    """D3PO, Yang et al. 2023, arXiv 2311.13231, sec. 4: DPO on every denoising step.

    Each step is a one-step MDP action, so the DPO loss applies to the step pair
    (x^w_{t-1} | x^w_t) vs (x^l_{t-1} | x^l_t) of a preferred and a dispreferred chain of one condition:
    L_t = -log sigma(beta [c(log pi/pi_ref (x^w_{t-1}|x^w_t)) - c(log pi/pi_ref (x^l_{t-1}|x^l_t))]), L = mean_t L_t,
    where c clamps a step's ratio pi/pi_ref to [1 - clip, 1 + clip] as the authors' code does (a trust
    region: a step already that far from the reference gets no gradient; ``clip`` = 0 would freeze it,
    a large ``clip`` gives the paper's unclipped loss; the authors' 0.1 suits 16k-entry SD latents, the
    digits demo binds at 0.01). The two chains of a pair start from one x_T (the trainer samples them so,
    as the authors' code does): the steps, not the starting noise, decide which image wins. Inputs ``[B, T]`` per-dimension log-probs of the
    policy and the reference (the start model). Preferences come from any labeller (a person, a file
    of choices, a rule); no reward model.
    """
    low, high = math.log(1 - clip) if clip < 1 else -math.inf, math.log(1 + clip)
    ratio_w = (log_probs_w - ref_log_probs_w).clamp(low, high)  # [B, T]
    ratio_l = (log_probs_l - ref_log_probs_l).clamp(low, high)
    h = beta * (ratio_w - ratio_l)
    return F.softplus(-h).mean(1), {"accuracy": _mean((h > 0).float()), "margin": _mean(h)}


@register_diffusion_method("diffusion_dpo", feedback="pairs", inputs="denoising_error", needs_reference=True)
def diffusion_dpo(err_w: torch.Tensor, ref_err_w: torch.Tensor, err_l: torch.Tensor, ref_err_l: torch.Tensor, *,
                  beta: float = 5000.0):
    """Diffusion-DPO, Wallace et al. 2023, arXiv 2311.12908, eq. 14.

    With both images of a pair noised to the same t with the same eps:
    L = -log sigma(beta [(e_ref(x^w) - e(x^w)) - (e_ref(x^l) - e(x^l))]),
    e(x) = ||eps - eps_theta(x_t, t)||^2 / D the denoising error; the paper's T omega(lambda_t) weight
    is folded into ``beta`` as in diffusers' ``train_diffusion_dpo.py`` (default 5000 there for SD 1.5).
    Inputs ``[B]``: errors of the policy and the reference on the preferred (w) and dispreferred (l) image.
    """
    h = beta * ((ref_err_w - err_w) - (ref_err_l - err_l))  # [B]
    return F.softplus(-h), {"accuracy": _mean((h > 0).float()), "margin": _mean(h)}
