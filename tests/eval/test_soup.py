"""Rewarded soups: the interpolation by hand, full-weight and LoRA-adapter soups, architecture
checks naming the model, and the 2-reward front (VADER against length) from the CLI."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from alignkit.cli import main
from alignkit.config import LoraConfig, ModelConfig, load_config
from alignkit.data.pipeline import resolve_data_path
from alignkit.errors import AlignkitError, ConfigError
from alignkit.eval.metrics import best_for_preference, pareto_front
from alignkit.eval.runner import EvalConfig
from alignkit.eval.soup import AdapterSoup, SoupConfig, WeightSoup, check_soup, mix, run_soup
from alignkit.models.loading import apply_lora, load_causal_lm, save_pretrained
from alignkit.models.tiny import build_tiny_model, build_tiny_tokenizer, tiny_model_dir

ROOT = Path(__file__).resolve().parents[2]


def perturbed(path: Path, seed: int, scale: float = 0.05, **model_kwargs) -> Path:
    """A tiny Llama (the shared start) plus seeded noise: a stand-in for a fine-tuned model."""
    tiny_model_dir(path, **model_kwargs)
    model = AutoModelForCausalLM.from_pretrained(path)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup_models")
    return [str(perturbed(root / "a", 1)), str(perturbed(root / "b", 2))]


def lora_run(path: Path, seed: int, r: int = 4) -> Path:
    """A run folder whose final/ holds a LoRA adapter of the tiny model."""
    tokenizer = build_tiny_tokenizer()
    model = apply_lora(build_tiny_model(tokenizer), LoraConfig(enabled=True, r=r, alpha=8), "tiny-llama")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    save_pretrained(model, tokenizer, path / "final")
    return path


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_mix_by_hand():
    """0.25 * [1, 2] + 0.75 * [3, 6] = [2.5, 5]; integer buffers come from the first model."""
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor([7])}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor([9])}
    out = mix([a, b], (0.25, 0.75))
    assert out["w"].tolist() == [2.5, 5.0] and out["n"].tolist() == [7]


def test_weight_soup_interpolates_exactly(two_models):
    ev = EvalConfig()
    soup = WeightSoup(two_models, ev)
    a = state(AutoModelForCausalLM.from_pretrained(two_models[0]))
    b = state(AutoModelForCausalLM.from_pretrained(two_models[1]))
    ends = state(soup.set((1.0, 0.0))), state(soup.set((0.0, 1.0)))
    half = state(soup.set((0.5, 0.5)))
    for key in a:
        torch.testing.assert_close(ends[0][key], a[key])
        torch.testing.assert_close(ends[1][key], b[key])
        torch.testing.assert_close(half[key], (a[key] + b[key]) / 2)


def test_architecture_mismatch_names_the_model(two_models, tmp_path):
    small = str(perturbed(tmp_path / "small", 3, hidden_size=32))
    with pytest.raises(AlignkitError, match=f"model {small} does not share the architecture"):
        WeightSoup([two_models[0], small], EvalConfig())
    gpt2 = str(tiny_model_dir(tmp_path / "gpt2", arch="gpt2"))
    with pytest.raises(AlignkitError, match=f"model {gpt2} is a GPT2LMHeadModel"):
        WeightSoup([two_models[0], gpt2], EvalConfig())


def test_adapter_soup(tmp_path):
    runs = [lora_run(tmp_path / "a", 1), lora_run(tmp_path / "b", 2)]
    soup = AdapterSoup([str(r) for r in runs], "tiny-llama", EvalConfig())
    ids = torch.tensor([[0, 5, 6, 7, 8]])
    for lambdas, run in (((1.0, 0.0), runs[0]), ((0.0, 1.0), runs[1])):
        merged = load_causal_lm(ModelConfig(name_or_path=str(run / "final")))[0].eval()
        with torch.no_grad():
            torch.testing.assert_close(
                soup.set(lambdas)(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4
            )
    from safetensors.torch import load_file

    a, b = (load_file(str(r / "final/adapter_model.safetensors")) for r in runs)
    soup.set((0.5, 0.5))
    lora = {k: v for k, v in soup.model.state_dict().items() if "lora_A" in k}
    key_a = next(k for k in a if "lora_A" in k)
    layer = next(
        v for k, v in lora.items() if k.replace(".default", "").endswith(key_a.split("base_model.model.")[-1])
    )
    torch.testing.assert_close(layer, (a[key_a] + b[key_a]) / 2)

    lora_run(tmp_path / "r2", 3, r=2)
    with pytest.raises(
        AlignkitError, match=f"model {tmp_path / 'r2'} does not share the adapter architecture.*r is 2"
    ):
        AdapterSoup([str(runs[0]), str(tmp_path / "r2")], "tiny-llama", EvalConfig())
    with pytest.raises(AlignkitError, match="has no LoRA adapter"):
        AdapterSoup([str(runs[0]), str(tmp_path)], "tiny-llama", EvalConfig())


def test_soup_config_checks():
    base = dict(models=["a", "b"], rewards=[{"kind": "vader"}, {"kind": "length"}])
    check_soup(load_config(None, [f"{k}={json.dumps(v)}" for k, v in base.items()], cls=SoupConfig))
    bad = {
        "models=[a]": "at least 2",
        "soup.preference=[1]": "one weight per reward",
        "soup.save_lambda=[0.3,0.3]": "summing to 1",
        "soup.save=x": "which soup to save",
    }
    for override, message in bad.items():
        cfg = load_config(
            None, [f"{k}={json.dumps(v)}" for k, v in base.items()] + [override], cls=SoupConfig
        )
        with pytest.raises(ConfigError, match=message):
            check_soup(cfg)


def test_soup_cli_front_vader_against_length(two_models, tmp_path, capsys):
    out = tmp_path / "soup"
    code = main(
        [
            "soup",
            str(ROOT / "configs/soup_tiny.yaml"),
            "train.start=",
            f"models={json.dumps(two_models)}",
            f"output_dir={out}",
            "soup.steps=2",
            "soup.preference=[1.0,0.1]",
            "soup.save_lambda=[0.5,0.5]",
            f"soup.save={out / 'chosen'}",
            "eval.max_prompts=4",
            "eval.sampling.num_samples=2",
            "eval.sampling.max_new_tokens=8",
        ]
    )
    assert code == 0
    assert "Pareto" in capsys.readouterr().out
    summary = json.loads((out / "soup.json").read_text())
    assert summary["rewards"] == ["vader", "brevity"]
    assert [s["lambda"] for s in summary["soups"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    points = [[s["rewards"][n]["mean"] for n in summary["rewards"]] for s in summary["soups"]]
    front = pareto_front(points)
    assert [s["pareto_optimal"] for s in summary["soups"]] == [i in front for i in range(3)]
    assert (
        summary["preference"]["lambda"] == summary["soups"][best_for_preference(points, [1.0, 0.1])]["lambda"]
    )
    assert (out / "pareto_front.png").stat().st_size > 10_000
    assert len((out / "soup.csv").read_text().splitlines()) == 1 + 3
    assert (out / "soup.md").read_text().count("\n| ") >= 3

    saved = AutoModelForCausalLM.from_pretrained(out / "chosen")
    a = state(AutoModelForCausalLM.from_pretrained(two_models[0]))
    b = state(AutoModelForCausalLM.from_pretrained(two_models[1]))
    for key, value in state(saved).items():
        torch.testing.assert_close(value, (a[key] + b[key]) / 2)
    assert json.loads((out / "chosen" / "soup.json").read_text()) == {"lambda": [0.5, 0.5]}


def test_run_soup_saves_the_best_for_the_preference(two_models, tmp_path):
    cfg = load_config(
        ROOT / "configs/soup_tiny.yaml",
        [
            "train.start=",
            f"models={json.dumps(two_models)}",
            f"output_dir={tmp_path}",
            "soup.steps=1",
            "soup.preference=[0,1]",
            f"soup.save={tmp_path / 'best'}",
            "eval.max_prompts=2",
            "eval.sampling.num_samples=1",
            "eval.sampling.max_new_tokens=4",
        ],
        cls=SoupConfig,
    )
    out = run_soup(cfg)
    summary = json.loads((out / "soup.json").read_text())
    assert summary["saved"]["lambda"] == summary["preference"]["lambda"]
    assert (tmp_path / "best" / "model.safetensors").is_file()


def test_shipped_soup_config_loads_and_starts_from_a_pretrained_model():
    cfg = load_config(ROOT / "configs/soup_tiny.yaml", cls=SoupConfig)
    assert cfg.models == [] and [r.kind for r in cfg.rewards] == ["vader", "length"]
    assert cfg.train.start == "demo:pretrain/final"  # the demo's pretrained review model, not tiny-llama
    assert Path(resolve_data_path(cfg.eval.prompts)).is_file()
    check_soup(cfg)
