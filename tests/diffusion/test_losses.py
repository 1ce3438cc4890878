"""Hand-worked values, identities, gradient signs and reference re-derivations of the diffusion losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from alignkit.diffusion import DIFFUSION_METHODS, diffusion_hyperparameters, get_diffusion_method
from alignkit.diffusion.losses import d3po, ddpo, diffusion_dpo, diffusion_raft
from alignkit.errors import ConfigError
from alignkit.losses import global_mean


def test_registry_tags_and_errors():
    assert {"diffusion_raft", "ddpo", "d3po", "diffusion_dpo"} <= set(DIFFUSION_METHODS)
    for fn in DIFFUSION_METHODS.values():
        assert fn.feedback in ("best_of_k", "advantages", "pairs")
        assert fn.inputs in ("denoising_error", "chain_log_prob")
    assert diffusion_hyperparameters("ddpo") == {"clip_range": 1e-4, "adv_clip_max": 5.0}
    with pytest.raises(ConfigError, match="unknown diffusion method 'dppo'"):
        get_diffusion_method("dppo")


def test_raft_is_the_denoising_error_of_kept_samples():
    losses, metrics = diffusion_raft(torch.tensor([0.5, 0.25]))
    assert losses.tolist() == [0.5, 0.25] and metrics["denoising_error"] == pytest.approx(0.375)


def test_raft_anchor_adds_the_weighted_gap_to_the_start_model():
    """err [0.5, 0.25], gap [0.1, 0.2], anchor 4: [0.5 + 0.4, 0.25 + 0.8] = [0.9, 1.05]."""
    losses, metrics = diffusion_raft(torch.tensor([0.5, 0.25]), torch.tensor([0.1, 0.2]), anchor=4.0)
    assert losses.tolist() == pytest.approx([0.9, 1.05]) and metrics["eps_gap"] == pytest.approx(0.15)
    assert diffusion_raft(torch.tensor([0.5]), torch.tensor([0.1]))[0].tolist() == [0.5]  # anchor 0: the paper's RAFT


def test_raft_anchor_minimiser_mixes_the_noise_and_the_start_models_prediction():
    """One pixel, eps = 1, eps_ref = -1, anchor 4: d/de [(e - 1)^2 + 4 (e + 1)^2] = 0 at e = (1 - 4) / 5 = -0.6
    (gradient 2 (-1.6) + 8 (0.4) = 0), the docstring's (eps + anchor eps_ref) / (1 + anchor)."""
    eps_theta = torch.tensor([[-0.6]], requires_grad=True)
    noise, eps_ref = torch.tensor([[1.0]]), torch.tensor([[-1.0]])
    loss, _ = diffusion_raft(((eps_theta - noise) ** 2).mean(1), ((eps_theta - eps_ref) ** 2).mean(1), anchor=4.0)
    loss.sum().backward()
    assert eps_theta.grad.item() == pytest.approx(0.0, abs=1e-6)


def test_raft_reads_the_start_model_only_with_an_anchor_and_ranges_are_checked():
    from alignkit.diffusion.registry import check_diffusion_hyperparameters, reference_note, uses_reference

    assert not uses_reference("diffusion_raft", {}) and uses_reference("diffusion_raft", {"anchor": 4.0})
    assert uses_reference("d3po", {}) and not uses_reference("ddpo", {})
    assert reference_note("diffusion_raft") == "reference if anchor > 0" and reference_note("ddpo") == "reference-free"
    given = {"anchor": "1e-1"}  # YAML reads 1e-1 as a string
    check_diffusion_hyperparameters("diffusion_raft", given)
    assert given == {"anchor": 0.1}
    with pytest.raises(ConfigError, match=r"loss.anchor: must be >= 0, got -1.0"):
        check_diffusion_hyperparameters("diffusion_raft", {"anchor": -1})
    with pytest.raises(ConfigError, match=r"loss.beta: must be > 0, got 0.0"):
        check_diffusion_hyperparameters("diffusion_dpo", {"beta": 0})
    with pytest.raises(ConfigError, match=r"loss.clip: expected a number, got 'wide'"):
        check_diffusion_hyperparameters("d3po", {"clip": "wide"})


def test_ddpo_hand_worked():
    """adv 2, clip 0.05. Step 1: ratio 1 -> -2. Step 2: ratio e^0.1 = 1.10517, unclipped -2.21034,
    clipped -2 * 1.05 = -2.1, max -2.1. Mean over steps (-2 - 2.1) / 2 = -2.05.
    adv -1: step 1 -> 1; step 2 max(1.10517, 1.05) = 1.10517; mean 1.052585."""
    logp = torch.tensor([[0.0, 0.1], [0.0, 0.1]])
    old = torch.zeros(2, 2)
    losses, metrics = ddpo(logp, old, torch.tensor([2.0, -1.0]), clip_range=0.05)
    assert losses.tolist() == pytest.approx([-2.05, 1.052585], abs=1e-5)
    assert metrics["clipfrac"] == pytest.approx(0.5)


def test_ddpo_clips_advantages_and_gradient_sign():
    logp = torch.zeros(1, 3, requires_grad=True)
    losses, _ = ddpo(logp, torch.zeros(1, 3), torch.tensor([10.0]), adv_clip_max=5.0)
    assert losses.item() == pytest.approx(-5.0)  # ratio 1, advantage clipped to 5
    losses.sum().backward()
    assert (logp.grad < 0).all()  # descending raises the log-prob of a positive-advantage chain


def test_ddpo_matches_ddpo_pytorch_per_timestep_loss():
    """Independent re-derivation of kvablack/ddpo-pytorch scripts/train.py (the inner loop over
    timesteps j: advantages clamped to +-adv_clip_max, ratio = exp(log_prob - sample log_probs[:, j]),
    loss_j = mean(max(-adv * ratio, -adv * clamp(ratio, 1 - clip, 1 + clip))), gradients accumulated
    over the j's, i.e. averaged). Same tensors, same value and same gradient."""
    torch.manual_seed(0)
    old = torch.randn(6, 5) * 0.01
    new = (old + torch.randn(6, 5) * 1e-3).requires_grad_(True)
    adv = torch.randn(6) * 3
    ref_loss = 0.0
    for j in range(5):
        a = torch.clamp(adv, -5.0, 5.0)
        ratio = torch.exp(new[:, j] - old[:, j])
        unclipped = -a * ratio
        clipped = -a * torch.clamp(ratio, 1.0 - 1e-4, 1.0 + 1e-4)
        ref_loss = ref_loss + torch.mean(torch.maximum(unclipped, clipped)) / 5
    (ref_grad,) = torch.autograd.grad(ref_loss, new)
    ours, _ = ddpo(new, old, adv)
    loss = global_mean(ours.sum(), 6)
    (grad,) = torch.autograd.grad(loss, new)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-7)


def test_d3po_hand_worked_and_identity():
    """beta 1, step margins h = [(0.5 - 0) - (-0.5 - 0), (0 - 0) - (0 - 0)] = [1, 0]:
    softplus(-1) = log(1 + e^-1) = 0.313262, softplus(0) = log 2 = 0.693147; mean 0.503205."""
    win, lose = torch.tensor([[0.5, 0.0]]), torch.tensor([[-0.5, 0.0]])
    losses, metrics = d3po(win, torch.zeros(1, 2), lose, torch.zeros(1, 2), beta=1.0, clip=10.0)
    assert losses.item() == pytest.approx(0.503205, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(0.5)
    x = torch.randn(3, 4)
    same, _ = d3po(x, x, x + 1, x + 1)  # policy = reference: every step at log 2
    assert torch.allclose(same, torch.full((3,), math.log(2)))


def test_d3po_clips_each_steps_ratio_like_the_authors_code():
    """clip 0.1: a log-ratio of 0.5 is clamped to log 1.1 = 0.095310, -0.5 to log 0.9 = -0.105361;
    beta 1: h = 0.095310 + 0.105361 = 0.200671, L = log(1 + e^-0.200671) = log 1.818182 = 0.597837, and no gradient flows
    through a clamped ratio."""
    win = torch.tensor([[0.5]], requires_grad=True)
    losses, _ = d3po(win, torch.zeros(1, 1), torch.tensor([[-0.5]]), torch.zeros(1, 1), beta=1.0, clip=0.1)
    assert losses.item() == pytest.approx(0.597837, abs=1e-6)
    losses.sum().backward()
    assert win.grad.item() == 0.0


def test_d3po_gradient_sign_and_extremes():
    win = torch.zeros(2, 3, requires_grad=True)
    lose = torch.zeros(2, 3, requires_grad=True)
    losses, _ = d3po(win, torch.zeros(2, 3), lose, torch.zeros(2, 3))
    losses.sum().backward()
    assert (win.grad < 0).all() and (lose.grad > 0).all()
    big, _ = d3po(torch.full((1, 2), 1e6), torch.zeros(1, 2), torch.full((1, 2), -1e6), torch.zeros(1, 2), clip=1e9)
    small, _ = d3po(torch.full((1, 2), -1e6), torch.zeros(1, 2), torch.full((1, 2), 1e6), torch.zeros(1, 2), clip=1e9)
    assert big.item() == 0.0 and math.isfinite(small.item()) and small.item() > 1e4


def test_diffusion_dpo_hand_worked():
    """beta 10, e_w 0.1, e_ref_w 0.2, e_l 0.3, e_ref_l 0.25:
    h = 10 ((0.2 - 0.1) - (0.25 - 0.3)) = 10 * 0.15 = 1.5; L = log(1 + e^-1.5) = 0.201413."""
    losses, metrics = diffusion_dpo(torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([0.3]),
                                    torch.tensor([0.25]), beta=10.0)
    assert losses.item() == pytest.approx(0.201413, abs=1e-6)
    assert metrics["margin"] == pytest.approx(1.5)


def test_diffusion_dpo_gradient_sign_identity_and_extremes():
    err_w = torch.tensor([0.2], requires_grad=True)
    err_l = torch.tensor([0.2], requires_grad=True)
    losses, _ = diffusion_dpo(err_w, torch.tensor([0.2]), err_l, torch.tensor([0.2]))
    assert losses.item() == pytest.approx(math.log(2))  # policy = reference
    losses.sum().backward()
    assert err_w.grad.item() > 0 and err_l.grad.item() < 0  # lower the preferred error, raise the other
    far, _ = diffusion_dpo(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([0.0]))
    assert far.item() == 0.0
    wrong, _ = diffusion_dpo(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([1.0]))
    assert wrong.item() == pytest.approx(10000.0)


def test_diffusion_dpo_matches_diffusers_reference_script():
    """Independent re-derivation of diffusers examples/research_projects/diffusion_dpo/train_diffusion_dpo.py
    (the training step: per-image MSE mean over non-batch dims, chunk(2) into w / l,
    model_diff = w - l, ref_diff likewise, logits = ref_diff - model_diff,
    loss = -logsigmoid(beta_dpo * logits).mean()) from the same predictions and noise."""
    torch.manual_seed(1)
    noise = torch.randn(4, 1, 8, 8).repeat(2, 1, 1, 1)  # the script shares noise between w and l
    model_pred = (noise + 0.3 * torch.randn_like(noise)).requires_grad_(True)
    ref_pred = noise + 0.3 * torch.randn_like(noise)
    beta = 5000.0
    model_losses = F.mse_loss(model_pred, noise, reduction="none").mean(dim=[1, 2, 3])
    model_w, model_l = model_losses.chunk(2)
    ref_losses = F.mse_loss(ref_pred, noise, reduction="none").mean(dim=[1, 2, 3])
    ref_w, ref_l = ref_losses.chunk(2)
    expected = -F.logsigmoid(beta * ((ref_w - ref_l) - (model_w - model_l))).mean()
    (expected_grad,) = torch.autograd.grad(expected, model_pred, retain_graph=True)
    ours, _ = diffusion_dpo(model_w, ref_w, model_l, ref_l, beta=beta)
    loss = global_mean(ours.sum(), 4)
    (grad,) = torch.autograd.grad(loss, model_pred)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-9)
