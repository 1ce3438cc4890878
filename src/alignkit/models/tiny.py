"""Tiny models and a tiny tokenizer, built in-process with no network.

Tests, examples and smoke runs need a real Hugging Face tokenizer and causal LM
that load with ``AutoTokenizer`` / ``AutoModelForCausalLM`` but cost nothing:

- :func:`build_tiny_tokenizer` trains a byte-level BPE on a small built-in English
  corpus (HH-style ``Human:``/``Assistant:`` dialogues and review-like sentences).
  Byte-level means any text, in any script, tokenizes with no unknown token.
  Special tokens: ``<|bos|>``, ``<|eos|>``, ``<|pad|>`` (pad distinct from eos), and
  the chat markers ``<|im_start|>`` / ``<|im_end|>``. Plain ``tokenizer(text)`` adds
  a BOS. The ChatML-like chat template renders
  ``<|bos|><|im_start|>role\\ncontent<|im_end|>\\n`` per message; its end-of-turn
  marker ``<|im_end|>`` is NOT the eos token (see ``alignkit.data.tokenize`` for
  how a response then ends).
- :func:`build_tiny_model` makes a randomly initialised fp32 Llama or GPT-2 sized
  to the tokenizer, seeded, without touching the global RNG.
- :func:`tiny_model_dir` saves both (safetensors) to a folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, IM_START, IM_END]  # ids 0..4, in this order

# ChatML-like; roles user/assistant/system; `{{ bos_token }}` once at the start, as
# Llama-style templates do, because apply_chat_template encodes without special tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DEFAULT_CORPUS: list[str] = [
    "\n\nHuman: Hi, can you help me with something?\n\nAssistant: Of course. What do you need help with?",
    "\n\nHuman: How do I bake bread at home?\n\nAssistant: Mix flour, water, salt and yeast, "
    "let the dough rise for a few hours, shape it, and bake it in a hot oven.",
    "\n\nHuman: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "\n\nHuman: Can you tell me a joke?\n\nAssistant: Why did the chicken cross the road? "
    "To get to the other side.",
    "\n\nHuman: I feel sad today.\n\nAssistant: I am sorry to hear that. Would you like to talk "
    "about what is making you feel this way?",
    "\n\nHuman: How are you?\n\nAssistant: I am fine, thank you. How can I help you today?",
    "\n\nHuman: Write a short poem about the sea.\n\nAssistant: The sea is wide and blue, "
    "the waves come in and out, and the sun shines on the water.",
    "\n\nHuman: Why is the sky blue?\n\nAssistant: Sunlight is scattered by the air, and blue "
    "light is scattered more than red light, so the sky looks blue.",
    "\n\nHuman: How do I steal a car?\n\nAssistant: I can't help with that. Is there something "
    "else I can help you with?",
    "\n\nHuman: What should I cook for dinner?\n\nAssistant: You could make pasta with tomato "
    "sauce, a simple salad, or rice with vegetables.",
    "\n\nHuman: Thanks!\n\nAssistant: You're welcome. Have a nice day!",
    "This movie was great. The acting was wonderful and the story was moving.",
    "This movie was terrible. The plot made no sense and the acting was bad.",
    "I loved this film! The music, the characters and the ending were all excellent.",
    "I did not like this book. It was boring, too long, and the writing was poor.",
    "The food at this restaurant was delicious and the staff were very friendly.",
    "The service was slow and the food was cold. I would not recommend this place.",
    "An amazing product. It works well, it is cheap, and it arrived quickly.",
    "The best show I have seen this year. Funny, smart, and beautifully made.",
    "The worst purchase I have ever made. It broke after two days.",
    "It was okay, not great but not bad either. Some scenes were good, others were slow.",
    "user assistant system: The user asks a question and the assistant gives a helpful, "
    "honest and harmless answer.",
    "Question: What is two plus two? Answer: Two plus two is four. 0 1 2 3 4 5 6 7 8 9 10 100",
    "Summarize the following text in one sentence. The summary is short and clear.",
]


def build_tiny_tokenizer(
    corpus: Iterable[str] | None = None, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (default: :data:`DEFAULT_CORPUS`).

    Deterministic: the same corpus and ``vocab_size`` give the same vocabulary. The
    vocabulary is at most ``vocab_size`` (smaller when the corpus has few pairs to
    merge); it always holds the 256 byte symbols and the 5 special tokens.
    """
    texts = list(DEFAULT_CORPUS if corpus is None else corpus)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def _tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    arch: str,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int | None,
    max_position_embeddings: int,
) -> PretrainedConfig:
    ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    inner = intermediate_size or 4 * hidden_size
    if arch == "llama":
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=inner,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_position_embeddings,
            **ids,
        )
    if arch == "gpt2":
        return GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=hidden_size,
            n_inner=inner,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_position_embeddings,
            **ids,
        )
    raise ValueError(f"unknown tiny arch {arch!r}; expected 'llama' or 'gpt2'")


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised fp32 causal LM (``arch`` in {"llama", "gpt2"}) for ``tokenizer``.

    The vocabulary is ``len(tokenizer)``; BOS/EOS/PAD ids are set in the config and
    the generation config; attention is SDPA; ``intermediate_size`` defaults to
    ``4 * hidden_size``. Weights depend on ``seed`` only (the global RNG is untouched).
    """
    config = _tiny_config(
        tokenizer, arch, hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model = model.to(torch.float32)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(config, key))
    return model.eval()


def tiny_model_dir(
    path: str | Path,
    tokenizer: PreTrainedTokenizerFast | None = None,
    arch: str = "llama",
    **model_kwargs,
) -> Path:
    """Save a tiny tokenizer and model (safetensors) to ``path`` and return it.

    ``AutoTokenizer.from_pretrained(path)`` and ``AutoModelForCausalLM.from_pretrained(path)``
    load them back. ``model_kwargs`` go to :func:`build_tiny_model`; ``tokenizer``
    defaults to :func:`build_tiny_tokenizer`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, arch=arch, **model_kwargs)
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path
