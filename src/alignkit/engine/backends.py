"""Generation backends: ``transformers`` (the default, anywhere) or vLLM (optional, CUDA only).

Sampling methods (RAFT, RSO, online DPO) and PPO rollouts call a *sampler* with the call shape
of :func:`alignkit.engine.generation.sample`::

    sampler = make_sampler(select_backend("auto", device), model_path=cfg.model.name_or_path)
    samples = sampler(policy, tokenizer, prompt_ids, cfg.sampling)          # -> Samples

``select_backend`` picks vLLM under ``auto`` only when it imports and CUDA is there; asking for
``vllm`` explicitly without either is an error that says what to do.

:class:`VLLMSampler` keeps one ``vllm.LLM`` per process and, before each call, copies the
policy's current weights into it in place (``model.load_weights``), so every stage or PPO step
samples from the policy being trained without reloading the engine. A LoRA policy is merged
for the copy and unmerged after. Version assumptions (no GPU CI here, so these are read from
vLLM's API, not tested): vLLM >= 0.8 (V1 engine) run in-process, which this class requests with
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (set before the first ``LLM`` is built), where the model is
``llm.llm_engine.model_executor.driver_worker.worker.model_runner.model``; or the V0 engine
(vLLM <= 0.10), where it is ``llm.llm_engine.model_executor.driver_worker.model_runner.model``.
Tensor parallelism is not supported (each data-parallel process holds a whole copy); under
``accelerate launch`` each process's engine uses vLLM's ``external_launcher`` executor.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterable
from typing import Any

import torch

from alignkit.engine.generation import Samples, SamplingConfig
from alignkit.errors import AlignkitError, ConfigError

BACKENDS = ("auto", "transformers", "vllm")


def vllm_importable() -> bool:
    """Whether ``import vllm`` would find the package (without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def cuda_usable(device: Any = None) -> bool:
    """CUDA is available and ``device`` (if given) is a CUDA device."""
    if not torch.cuda.is_available():
        return False
    return device is None or torch.device(device).type == "cuda"


def select_backend(requested: str = "auto", device: Any = None) -> str:
    """``"transformers"`` or ``"vllm"`` for ``requested`` in auto / transformers / vllm on ``device``."""
    if requested not in BACKENDS:
        raise ConfigError(f"sampling backend: {requested!r} is not allowed; choose one of: {', '.join(BACKENDS)}")
    if requested == "transformers":
        return "transformers"
    have_vllm, have_cuda = vllm_importable(), cuda_usable(device)
    if requested == "vllm":
        if not have_vllm:
            raise AlignkitError("sampling backend vllm: the vllm package is not installed; "
                                "pip install 'alignkit[vllm]' on a CUDA machine, or use backend: transformers")
        if not have_cuda:
            raise AlignkitError(f"sampling backend vllm needs a CUDA GPU (device: {device or 'none found'}); "
                                "use backend: transformers (or auto) on this machine")
        return "vllm"
    return "vllm" if have_vllm and have_cuda else "transformers"


def make_sampler(backend: str, model_path: str = "", **vllm_kwargs):
    """A callable ``(model, tokenizer, prompt_ids, cfg, progress=False) -> Samples`` for ``backend``."""
    if backend == "transformers":
        from alignkit.engine.generation import sample

        return sample
    if backend == "vllm":
        return VLLMSampler(model_path, **vllm_kwargs)
    raise ConfigError(f"sampling backend: {backend!r} is not a resolved backend; call select_backend first")


class VLLMSampler:
    """:func:`~alignkit.engine.generation.sample` on vLLM, synced to the policy's weights at every call.

    Args:
        model_path: the policy's starting weights (a Hub id or a folder): vLLM builds the
            architecture and tokenizer-independent engine from it; weights are then overwritten.
        sync_weights: copy the policy's current weights into the engine before each call.
        gpu_memory_utilization: fraction of GPU memory vLLM may take (the trainer needs the rest).
        llm_kwargs: anything else for ``vllm.LLM`` (``max_model_len``, ``enforce_eager``, ...).
    """

    def __init__(self, model_path: str, sync_weights: bool = True, gpu_memory_utilization: float = 0.3,
                 dtype: str = "auto", **llm_kwargs):
        if not model_path:
            raise ConfigError("sampling backend vllm needs the policy's model path (a Hub id or folder)")
        self.model_path, self.sync_weights = model_path, sync_weights
        self.llm_kwargs = {"gpu_memory_utilization": gpu_memory_utilization, "dtype": dtype, **llm_kwargs}
        self.llm = None

    def _engine(self):
        if self.llm is None:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the model in this process
            from vllm import LLM

            from alignkit.distributed import world_size

            kwargs = dict(self.llm_kwargs)
            if world_size() > 1:
                kwargs.setdefault("distributed_executor_backend", "external_launcher")
            self.llm = LLM(model=self.model_path, tensor_parallel_size=1, **kwargs)
        return self.llm

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy ``(name, tensor)`` pairs (Hugging Face names) into the engine's model in place."""
        engine_model(self._engine()).load_weights(named_tensors)

    @torch.no_grad()
    def __call__(self, model, tokenizer, prompt_ids: list[list[int]], cfg: SamplingConfig,
                 progress: bool = False) -> Samples:
        from vllm import SamplingParams

        llm = self._engine()
        if self.sync_weights:
            with hf_weights(model) as named:
                self.load_weights(named)
        eos_ids = {tokenizer.eos_token_id} | set(_eos_of(model))
        greedy = cfg.temperature <= 0
        params = [
            SamplingParams(
                n=cfg.num_samples,
                temperature=0.0 if greedy else cfg.temperature,
                top_k=cfg.top_k if cfg.top_k > 0 else -1,
                top_p=cfg.top_p,
                max_tokens=cfg.max_new_tokens,
                stop_token_ids=sorted(eos_ids),
                seed=cfg.seed + i,  # per prompt: independent of batching and of other prompts
                logprobs=0,  # the sampled token's log-prob: truncated IS of the mismatch (ppo.tis_cap)
            )
            for i in range(len(prompt_ids))
        ]
        t0 = time.perf_counter()
        outputs = llm.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params, use_tqdm=progress)
        elapsed = time.perf_counter() - t0
        responses = [[_with_eos(list(c.token_ids), c.finish_reason, eos_ids, tokenizer.eos_token_id)
                      for c in out.outputs] for out in outputs]
        texts = [[tokenizer.decode(r, skip_special_tokens=True) for r in rs] for rs in responses]
        new_tokens = sum(len(r) for rs in responses for r in rs)
        metrics = {
            "gen/tokens_per_s": new_tokens / max(elapsed, 1e-9),
            "gen/mean_length": new_tokens / max(sum(len(rs) for rs in responses), 1),
            "gen/seconds": elapsed,
        }
        logprobs = [[[step[tok].logprob for tok, step in zip(c.token_ids, c.logprobs or [])] for c in out.outputs]
                    for out in outputs]
        return Samples([list(p) for p in prompt_ids], responses, texts, metrics, logprobs)


def engine_model(llm) -> torch.nn.Module:
    """The ``nn.Module`` inside a vLLM engine running in this process (V1 in-process, or V0)."""
    executor = llm.llm_engine.model_executor
    worker = executor.driver_worker
    for path in ("worker.model_runner.model", "model_runner.model"):  # V1, then V0
        obj = worker
        try:
            for name in path.split("."):
                obj = getattr(obj, name)
        except AttributeError:
            continue
        return obj
    raise AlignkitError("cannot reach the vLLM model to sync weights: this vLLM version keeps it in another "
                        "process; set VLLM_ENABLE_V1_MULTIPROCESSING=0 before starting, or pin vllm<0.11")


class hf_weights:
    """Context manager yielding the policy's full weights as ``(hf_name, tensor)`` pairs.

    A peft policy has its adapter merged for the duration (names lose peft's prefixes and
    ``.base_layer``; adapter tensors are left out) and unmerged on exit.
    """

    def __init__(self, model):
        from alignkit.engine.logprobs import unwrap_causal_lm

        self.peft = next((m for m in model.modules() if hasattr(m, "merge_adapter") and hasattr(m, "peft_config")),
                         None)
        self.lm = unwrap_causal_lm(model)

    def __enter__(self):
        if self.peft is None:
            return list(self.lm.state_dict().items())
        self.peft.merge_adapter()
        return [(k.replace(".base_layer", ""), v) for k, v in self.lm.state_dict().items() if "lora_" not in k]

    def __exit__(self, *exc):
        if self.peft is not None:
            self.peft.unmerge_adapter()
        return False


def _eos_of(model) -> list[int]:
    from alignkit.engine.logprobs import unwrap_causal_lm

    value = getattr(getattr(unwrap_causal_lm(model), "generation_config", None), "eos_token_id", None)
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _with_eos(ids: list[int], finish_reason: str | None, eos_ids: set[int], eos: int) -> list[int]:
    """Keep EOS on responses that ended (as the transformers path does); vLLM may leave it out."""
    if finish_reason == "stop" and not (ids and ids[-1] in eos_ids):
        return ids + [eos]
    return ids


def sampler_for(sampling, device: Any = None, model_path: str = ""):
    """The sampler that ``sampling.backend`` names on ``device`` (``transformers`` unless asked)."""
    return make_sampler(select_backend(sampling.backend, device), model_path=model_path)
