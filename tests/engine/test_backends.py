"""Generation backend selection, without a GPU or vLLM: availability is monkeypatched."""

import pytest
import torch

from alignkit.engine import backends
from alignkit.engine.backends import VLLMSampler, _with_eos, make_sampler, select_backend
from alignkit.engine.generation import sample
from alignkit.errors import AlignkitError, ConfigError


@pytest.fixture
def machine(monkeypatch):
    """set(vllm=..., cuda=...) fakes what this machine has."""

    def set_(vllm: bool, cuda: bool):
        monkeypatch.setattr(backends, "vllm_importable", lambda: vllm)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)

    return set_


@pytest.mark.parametrize(
    "vllm,cuda,device,expected",
    [
        (True, True, "cuda", "vllm"),
        (True, True, None, "vllm"),
        (True, True, "cpu", "transformers"),  # CUDA exists but the policy is on the CPU
        (True, False, None, "transformers"),
        (False, True, "cuda", "transformers"),
        (False, False, "cpu", "transformers"),
    ],
)
def test_auto_uses_vllm_only_when_importable_and_on_cuda(machine, vllm, cuda, device, expected):
    machine(vllm, cuda)
    assert select_backend("auto", device) == expected


@pytest.mark.parametrize("vllm,cuda", [(True, True), (False, False)])
def test_transformers_is_always_honoured(machine, vllm, cuda):
    machine(vllm, cuda)
    assert select_backend("transformers", "cuda") == "transformers"


def test_explicit_vllm(machine):
    machine(vllm=True, cuda=True)
    assert select_backend("vllm", torch.device("cuda", 0)) == "vllm"
    machine(vllm=False, cuda=True)
    with pytest.raises(AlignkitError, match="pip install 'alignkit\\[vllm\\]'"):
        select_backend("vllm", "cuda")
    machine(vllm=True, cuda=False)
    with pytest.raises(AlignkitError, match="needs a CUDA GPU.*backend: transformers"):
        select_backend("vllm", "cpu")


def test_unknown_backend_names_the_choices():
    with pytest.raises(ConfigError, match="auto, transformers, vllm"):
        select_backend("sglang")


def test_make_sampler():
    assert make_sampler("transformers") is sample
    vs = make_sampler("vllm", model_path="some/model", gpu_memory_utilization=0.5)
    assert isinstance(vs, VLLMSampler) and vs.llm is None  # the engine starts lazily, on the first call
    assert vs.llm_kwargs["gpu_memory_utilization"] == 0.5
    with pytest.raises(ConfigError):
        make_sampler("auto")
    with pytest.raises(ConfigError, match="model path"):
        VLLMSampler("")


def test_responses_that_stopped_keep_their_eos():
    assert _with_eos([5, 6], "stop", {2}, 2) == [5, 6, 2]
    assert _with_eos([5, 2], "stop", {2}, 2) == [5, 2]
    assert _with_eos([5, 6], "length", {2}, 2) == [5, 6]


def test_hf_weights_merges_a_lora_adapter_and_restores_it():
    """The names vLLM's load_weights receives are the plain model's, with the adapter folded in."""
    from peft import LoraConfig, get_peft_model

    from alignkit.engine.backends import hf_weights
    from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer

    base = build_tiny_model(build_tiny_tokenizer())
    plain = {k: v.clone() for k, v in base.state_dict().items()}
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    with hf_weights(policy) as named:
        merged = {k: v.clone() for k, v in named}
    assert merged.keys() == plain.keys()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[q], plain[q])  # the (non-zero) adapter is folded in
    torch.testing.assert_close(merged["model.norm.weight"], plain["model.norm.weight"])
    with hf_weights(policy) as again:  # unmerged on exit: merging twice gives the same weights
        torch.testing.assert_close(dict(again)[q], merged[q])
    plain_model = build_tiny_model(build_tiny_tokenizer())
    with hf_weights(plain_model) as named:
        assert dict(named).keys() == plain.keys()


def test_sampler_for_follows_the_sampling_config():
    from alignkit.engine.backends import sampler_for
    from alignkit.engine.generation import SamplingConfig, sample
    from alignkit.errors import ConfigError

    assert sampler_for(SamplingConfig()) is sample
    with pytest.raises(ConfigError, match="sampling backend: 'bogus' is not allowed"):
        sampler_for(SamplingConfig(backend="bogus"))
