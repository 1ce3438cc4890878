"""The real path on a tiny random Stable Diffusion pipeline built from configs: one round of every method."""

import pytest
import torch

from alignkit.diffusion import DIFFUSION_METHODS
from alignkit.diffusion.stable_diffusion import load_sd_task
from alignkit.diffusion.trainer import DiffusionTrainConfig, reward_labeller, train_diffusion
from alignkit.errors import AlignkitError

diffusers = pytest.importorskip("diffusers")


def _brightness(images, ids):
    return images.float().mean((1, 2, 3))


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """UNet2DConditionModel + AutoencoderKL + CLIP text encoder + a character-level CLIP tokenizer, random."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                         block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=4, norm_num_groups=8).save_pretrained(folder / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16),
                  latent_channels=4, norm_num_groups=8, sample_size=16).save_pretrained(folder / "vae")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in letters:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    tok_dir = folder / "tokenizer"
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=12).save_pretrained(tok_dir)
    CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=12, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(folder / "text_encoder")
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  clip_sample=False, steps_offset=1).save_pretrained(folder / "scheduler")
    return folder


@pytest.mark.parametrize("method, hparams", [(m, {}) for m in sorted(DIFFUSION_METHODS)]
                         + [("diffusion_raft", {"anchor": 4.0})])
def test_one_round_of_every_method_trains_only_the_lora(tiny_pipeline, method, hparams):
    task = load_sd_task(tiny_pipeline, ["a red cat", "a blue dog"], reward=_brightness,
                        labeller=reward_labeller(_brightness), lora_rank=2)
    unet = task.policy.unet
    trainable = {n: p.detach().clone() for n, p in unet.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in unet.named_parameters() if not p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)
    cfg = DiffusionTrainConfig(method=method, hparams=hparams, rounds=1, prompts_per_round=2, samples_per_prompt=2,
                               num_steps=3, learning_rate=1e-2, batch_size=4)
    history = train_diffusion(task, cfg)
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["loss"]))
    if hparams:  # RAFT's anchor: the reference is the UNet with its adapter off, which a fresh LoRA (B = 0) equals
        assert history[0]["diffusion_raft/eps_gap"] == 0.0
    after = dict(unet.named_parameters())
    assert any(not torch.equal(after[n], v) for n, v in trainable.items())  # the LoRA moved
    assert all(torch.equal(after[n], v) for n, v in frozen.items())  # the base UNet did not
    images = task.policy.images(torch.randn(1, 4, 8, 8))
    assert images.shape == (1, 3, 16, 16)


def test_not_a_pipeline_folder_is_one_clear_error(tmp_path):
    with pytest.raises(AlignkitError, match="not a Stable Diffusion pipeline folder"):
        load_sd_task(tmp_path, ["x"])


def test_reference_is_the_unet_with_its_lora_disabled(tiny_pipeline):
    from diffusers import UNet2DConditionModel

    from alignkit.diffusion.trainer import reference_policy

    task = load_sd_task(tiny_pipeline, ["a cat"], lora_rank=2)
    base = UNet2DConditionModel.from_pretrained(tiny_pipeline / "unet").eval()
    with torch.no_grad():
        for name, p in task.policy.unet.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter changes the output
        x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor(500), task.condition(torch.tensor([0]))
        adapted = task.policy.predict_noise(x, t, cond)
        reference = reference_policy(task.policy).predict_noise(x, t, cond)
        expected = base(x, t.expand(1), encoder_hidden_states=cond).sample
    assert not torch.allclose(adapted, expected, atol=1e-4)
    assert torch.allclose(reference, expected, atol=1e-5)


def test_alignkit_train_runs_a_diffusion_method_on_a_pipeline_folder(tiny_pipeline, tmp_path):
    from alignkit.config import Config, from_dict
    from alignkit.train.run import run_train

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n\na dog\n")
    cfg = from_dict(Config, {
        "method": "diffusion_dpo",
        "model": {"name_or_path": str(tiny_pipeline), "lora": {"r": 2}},
        "data": {"train": str(prompts)},
        "rewards": [{"kind": "function", "function": "alignkit.diffusion.digits:ink_reward"}],
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "progress": False},
        "sampling": {"batch_size": 2, "num_samples": 2},
    })
    out = run_train(cfg)
    assert (out / "metrics.jsonl").read_text().count("\n") == 1
    assert any((out / "final").iterdir())


def test_alignkit_train_reward_errors_name_the_key(tiny_pipeline, tmp_path):
    from alignkit.config import Config, from_dict
    from alignkit.errors import ConfigError
    from alignkit.train.run import run_train

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    base = {"method": "ddpo", "model": {"name_or_path": str(tiny_pipeline)}, "data": {"train": str(prompts)},
            "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1}}
    with pytest.raises(ConfigError, match=r"rewards\[0\].kind: 'vader' is not an image reward"):
        run_train(from_dict(Config, {**base, "rewards": [{"kind": "vader"}]}))
    with pytest.raises(ConfigError, match=r"rewards\[0\].function: cannot import 'nope:fn'"):
        run_train(from_dict(Config, {**base, "rewards": [{"kind": "function", "function": "nope:fn"}]}))


def _recorded_raft_run(tiny_pipeline, tmp_path, monkeypatch, **base):
    """``run(**sections)``: ``alignkit train`` of diffusion RAFT on the tiny pipeline with the trainer replaced by
    a recorder; ``seen``: the DiffusionTrainConfig each run built."""
    import alignkit.diffusion.trainer as trainer
    from alignkit.config import Config, from_dict
    from alignkit.train.run import run_train

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    seen = []
    monkeypatch.setattr(trainer, "train_diffusion", lambda task, cfg, progress=False: seen.append(cfg) or [])
    common = {"method": "diffusion_raft", "model": {"name_or_path": str(tiny_pipeline), "lora": {"r": 2}},
              "data": {"train": str(prompts)},
              "rewards": [{"kind": "function", "function": "alignkit.diffusion.digits:ink_reward"}], **base}
    return (lambda **sections: run_train(from_dict(Config, {**common, **sections}))), seen


def test_alignkit_train_passes_whole_epochs_and_refuses_fractions(tiny_pipeline, tmp_path, monkeypatch):
    from alignkit.errors import ConfigError

    run, seen = _recorded_raft_run(tiny_pipeline, tmp_path, monkeypatch, loss={"anchor": 4.0})
    run(train={"output_dir": str(tmp_path / "a"), "max_steps": 1, "num_epochs": 3, "progress": False})
    assert (seen[0].epochs, seen[0].hparams) == (3, {"anchor": 4.0})
    with pytest.raises(ConfigError, match=r"train.num_epochs: 1.5; .* give a whole number"):
        run(train={"output_dir": str(tmp_path / "b"), "max_steps": 1, "num_epochs": 1.5})


def test_alignkit_train_passes_rafts_ranking_as_for_language_raft(tiny_pipeline, tmp_path, monkeypatch):
    run, seen = _recorded_raft_run(tiny_pipeline, tmp_path, monkeypatch, sampling={"num_samples": 8})
    for ranking, out in (("local", "a"), ("global", "b")):
        run(online={"ranking": ranking}, train={"output_dir": str(tmp_path / out), "max_steps": 1, "progress": False})
    assert [(c.keep, c.keep_fraction) for c in seen] == [("per_prompt", 0.125), ("global", 0.125)]


def test_alignkit_train_passes_the_ddim_steps_and_eta(tiny_pipeline, tmp_path, monkeypatch):
    from alignkit.config import load_config
    from alignkit.errors import ConfigError

    run, seen = _recorded_raft_run(tiny_pipeline, tmp_path, monkeypatch)
    run(sampling={"diffusion_steps": 50, "diffusion_eta": 0.5},
        train={"output_dir": str(tmp_path / "a"), "max_steps": 1, "progress": False})
    assert (seen[0].num_steps, seen[0].eta) == (50, 0.5)
    with pytest.raises(ConfigError, match=r"sampling.diffusion_eta"):  # 0 is deterministic DDIM: no log-probs
        load_config(None, ["method=ddpo", "sampling.diffusion_eta=0"])
