"""The RL family as trainers: every registered algorithm trains from its shipped config, MA-PPO with
n = 1 updates exactly as PPO, dynamic sampling stays in lockstep, the sampler's log-probs reach the loss."""

import math

import pytest
import torch
from test_ppo import CONFIGS, fixed_rollout, one_thread, rl_config, rows, sft_model, train_on_the_task  # noqa: F401

from alignkit.config import TrainConfig, load_config
from alignkit.engine.generation import Samples, SamplingConfig, sample
from alignkit.models.reference import FrozenReference
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer
from alignkit.rewards import build_reward
from alignkit.train import rl_family
from alignkit.train.accelerator import make_accelerator
from alignkit.train.ppo import ALGORITHMS, ppo_update, uses_no_reference
from alignkit.train.rollout import PPOConfig, Rollout, collect_rollout
from alignkit.train.run import run_train

FAMILY = [name for name in ALGORITHMS if name not in ("ppo", "rloo", "grpo")]  # the rest has test_ppo.py


@pytest.mark.parametrize("name", FAMILY)
def test_every_family_algorithm_trains_from_its_shipped_config(tmp_path, name):
    out = run_train(rl_config(tmp_path, name, "train.max_steps=2", config=f"{name}_tiny"))
    records = rows(out)
    assert [r["step"] for r in records] == [1, 2]
    assert {"reward", "loss/policy_avg", "policy/clipfrac_avg", "policy/approxkl_avg", "num_tokens"} <= set(records[-1])
    # the KL to the reference is measured where a reference runs (kl_coef > 0 or adaptive)
    assert ("objective/kl" in records[-1]) == (not uses_no_reference(load_config(CONFIGS / f"{name}_tiny.yaml").ppo))
    assert all(math.isfinite(v) for r in records for k, v in r.items() if k != "explained_variance")
    assert (out / "final" / "model.safetensors").is_file()


def test_ma_ppo_with_one_token_macro_actions_updates_exactly_as_ppo(fixed_rollout):  # noqa: F811
    """The same rollout and advantages, one update each: identical parameters afterwards."""
    import copy

    module, r, advantages, returns = fixed_rollout
    results = []
    for name in ("ppo", "ma_ppo"):
        m = copy.deepcopy(module)
        r.macro_ids = torch.arange(r.mask.shape[1]).expand_as(r.mask) if name == "ma_ppo" else None
        optimizer = torch.optim.SGD(m.parameters(), lr=1e-2)
        ppo_update(ALGORITHMS[name], PPOConfig(num_ppo_epochs=2, num_minibatches=2, vf_coef=1.0), m, optimizer,
                   make_accelerator(TrainConfig()), r, advantages, returns, beta=0.05, step=0, seed=0)
        results.append(m.state_dict())
    r.macro_ids = None
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=0, atol=0, msg=key)


def fake_rollout(scores: list[list[float]], width: int = 3) -> Rollout:
    B, K = len(scores), len(scores[0])
    N = B * K
    return Rollout(
        prompt_ids=[[b] for b in range(B)], response_ids=[[[1] * width] * K for _ in range(B)],
        prompts=[f"p{b}" for b in range(B) for _ in range(K)], texts=["t"] * N,
        mask=torch.ones(N, width, dtype=torch.bool), logprobs=torch.zeros(N, width),
        ref_logprobs=torch.zeros(N, width), entropy=torch.zeros(N, width), values=None,
        scores=torch.tensor(scores).view(-1), segments=None, ended=torch.ones(N, dtype=torch.bool), metrics={},
    )


def test_dynamic_sampling_refills_with_informative_groups_in_lockstep():
    """Round 0 keeps 1 of 2 prompts, round 1 keeps 1 more: 2 rounds while every process has kept 2."""
    rounds = [fake_rollout([[1.0, 1.0], [0.0, 1.0]]), fake_rollout([[0.5, 0.25], [3.0, 3.0]], width=4)]
    other_process_kept = {1: 2, 2: 2}  # the other process keeps 2 already in round 0
    seen = []

    def global_min(n):
        seen.append(n)
        return min(n, other_process_kept[len(seen)])

    out = rl_family.informative_rollout(lambda r: rounds[r], rounds=4, global_min=global_min)
    assert seen == [1, 2]  # two rounds although the other process was full after one
    assert out.scores.tolist() == [0.0, 1.0, 0.5, 0.25] and out.mask.shape == (4, 4)
    assert not out.mask[:2, 3].any() and out.metrics["dynamic/rounds"] == 2


def test_dynamic_sampling_fills_a_short_batch_with_dropped_groups():
    out = rl_family.informative_rollout(lambda r: fake_rollout([[1.0, 1.0], [0.0, 1.0]]), rounds=2,
                                        global_min=lambda n: n)
    assert out.scores.tolist() == [0.0, 1.0, 0.0, 1.0]  # 2 informative (one per round) fill the batch
    out = rl_family.informative_rollout(lambda r: fake_rollout([[1.0, 1.0], [2.0, 2.0]]), rounds=1,
                                        global_min=lambda n: n)
    assert out.scores.tolist() == [1.0, 1.0, 2.0, 2.0] and out.metrics["dynamic/kept"] == 0.0


def test_reinforce_pp_baseline_subtracts_the_group_mean_score():
    """Scores [3, 1] (one prompt, K = 2), no KL: rewards on the last token [3, 1] - 2 = [1, -1];
    returns [[1, 1], [-1, -1]]; normalised: mean 0, biased var 1 -> unchanged."""
    r = fake_rollout([[3.0, 1.0]], width=2)
    rewards = torch.tensor([[0.0, 3.0], [0.0, 1.0]])
    adv, _ = rl_family.reinforce_pp_baseline_advantages(r, rewards, r.scores, PPOConfig())
    torch.testing.assert_close(adv, torch.tensor([[1.0, 1.0], [-1.0, -1.0]]))


def test_a_sampler_that_gives_log_probs_gets_truncated_importance_weights():
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok)
    from alignkit.train.rollout import ActorCritic

    def sampler_with_logprobs(policy, tokenizer, prompt_ids, cfg):
        s = sample(policy, tokenizer, prompt_ids, cfg)
        return Samples(s.prompt_ids, s.response_ids, s.texts, s.metrics,
                       [[[-1.0] * len(r) for r in rs] for rs in s.response_ids])

    r = collect_rollout(ActorCritic(model, pad_id=tok.pad_token_id), FrozenReference(build_tiny_model(tok), 0),
                        build_reward({"kind": "length", "unit": "chars"}), tok, [tok("The movie")["input_ids"]],
                        SamplingConfig(num_samples=2, max_new_tokens=4), values=False, sampler=sampler_with_logprobs)
    assert torch.where(r.mask, r.sampler_logprobs, -1.0).eq(-1.0).all()
    from alignkit.losses.rl_family import truncated_importance_weights

    w = truncated_importance_weights(r.logprobs, r.sampler_logprobs, r.mask, cap=2.0)
    torch.testing.assert_close(w, torch.where(r.mask, (r.logprobs + 1.0).exp().clamp(max=2.0), 0.0))


# Measured with train_on_the_task (40 steps of each shipped config, fresh samples of the 24 review prompts x 8,
# sampling seed 1234), training seeds 0 / 1 / 2; SFT model before: reward 0.090 (its own reference, KL 0).
#   dapo                   reward 0.487 0.494 0.507  KL (nats/response) 3.99 3.53 4.64
#   dr_grpo                reward 0.567 0.559 0.578  KL 1.43 1.59 1.43
#   gspo                   reward 0.686 0.671 0.674  KL 9.11 9.90 6.05  (kl_coef 0 in gspo_tiny)
#   reinforce_pp           reward 0.624 0.590 0.572  KL 2.05 1.62 1.09  (the OpenRLHF-exact estimator, now the
#                          registered `reinforce_pp`)
#   reinforce_pp_baseline  reward 0.560 0.551 0.563  KL 1.18 1.80 1.28
#   ma_ppo                 reward 0.706 0.629 0.661  KL 4.36 1.56 2.08
# The asserted margin: reward up by > 0.3 (least measured gain 0.397).
@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", FAMILY)
def test_family_raises_the_vader_reward_of_fresh_samples(tmp_path, sft_model, name, seed):  # noqa: F811
    before, after, _ = train_on_the_task(tmp_path, sft_model, f"{name}_tiny", seed=seed)
    print("MEASURED", name, seed, "before", round(before["reward"], 3), "after", round(after["reward"], 3),
          "kl", round(after["objective/kl"], 2))
    assert after["reward"] > before["reward"] + 0.3, (before, after)
