"""The toy task: a class-conditional DDPM on scikit-learn's 8x8 handwritten digits, and its rewards.

scikit-learn ships 1,797 real digits (UCI optdigits, 16 grey levels, 8x8). The model is a small
diffusers :class:`~diffusers.UNet2DModel` with a class embedding (the condition is the digit, the
toy version of a text prompt), trained with the DDPM loss on pixels scaled to [-1, 1]. Rewards:

- ``classifier``: a logistic-regression digit classifier trained on the real digits; the reward of
  an image generated for digit c is its probability of c (text-image alignment at toy scale);
- ``ink``: the mean brightness (ink mass) of the image in [0, 1], which a bolder digit raises and
  which conflicts with legibility when pushed (a second objective for multi-reward runs and soups).

The pretrained model is cached under ``<cache>/digits/<key>/`` like the language demo's base model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from alignkit.diffusion.policy import DiffusionPolicy

log = logging.getLogger("alignkit")

NUM_CLASSES = 10
TASK_VERSION = 2  # bump when the data, model or training recipe changes (invalidates caches)

ImageReward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images [B,1,8,8] in [-1,1], digits [B]) -> [B]


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """The 1,797 digits as images ``[N, 1, 8, 8]`` in [-1, 1] and labels ``[N]``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return images, torch.tensor(data.target, dtype=torch.long)


def build_digits_unet(seed: int = 0, width: int = 32):
    """A ~0.65M-parameter class-conditional UNet for 8x8 images (8 -> 4 -> 8), convolutions only
    (attention at 4x4 cost a fifth more time for no visible gain)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(width, 2 * width),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=NUM_CLASSES, norm_num_groups=8)


def digits_scheduler():
    """DDIM over Stable Diffusion's 1000-step scaled-linear schedule, sampled from t=999 ("trailing").

    ``set_alpha_to_one=False`` keeps the last step stochastic (sigma ~ 0.03 here; the cosine schedule's
    abar_0 = 1 - 4e-6 made it 0.002, and per-dimension log-probs of that step swamped every ratio), and
    ``clip_sample`` keeps the predicted x_0 in the pixel range."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=True,
                         set_alpha_to_one=False, prediction_type="epsilon", timestep_spacing="trailing")


def digits_policy(unet) -> DiffusionPolicy:
    return DiffusionPolicy(unet, digits_scheduler(), (1, 8, 8), cond_key="class_labels")


@dataclass
class PretrainConfig:
    steps: int = 1000  # optimizer steps of ``batch_size`` real digits
    batch_size: int = 64  # digits per step
    learning_rate: float = 2e-3  # peak AdamW learning rate (cosine decay to 0)
    width: int = 32  # UNet channels of the first level
    seed: int = 0  # initialisation and batch order


def pretrain_digits(cfg: PretrainConfig, progress: bool = False) -> torch.nn.Module:
    """Train the class-conditional DDPM with the DDPM loss on every digit (no held-out split: the
    classifier, not this model, is what must generalise)."""
    from alignkit.diffusion.policy import denoising_error

    images, labels = load_digits_tensors()
    unet = build_digits_unet(cfg.seed, cfg.width)
    policy = digits_policy(unet)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / cfg.steps, 1))))
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
        t = torch.randint(0, 1000, (cfg.batch_size,), generator=gen)
        noise = torch.randn(images[idx].shape, generator=gen)
        loss = denoising_error(policy, images[idx], labels[idx], t, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress and (step % 250 == 0 or step == cfg.steps - 1):
            log.info("digits DDPM: step %d/%d loss %.4f (%.0fs)", step + 1, cfg.steps, loss.item(),
                     time.perf_counter() - t0)
    return unet.eval()


def cached_digits_unet(cache_dir: Path, cfg: PretrainConfig, progress: bool = False) -> tuple[torch.nn.Module, bool]:
    """The pretrained UNet from ``cache_dir/digits/<key>/unet`` (trained and saved there when absent)."""
    from diffusers import UNet2DModel

    payload = {"version": TASK_VERSION, **asdict(cfg)}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / "digits" / key / "unet"
    if (folder / "config.json").exists():
        return UNet2DModel.from_pretrained(folder).eval(), True
    unet = pretrain_digits(cfg, progress)
    tmp = folder.with_name("unet.tmp")
    unet.save_pretrained(tmp)
    if not folder.exists():  # a concurrent run may have finished first; its copy is as good
        tmp.replace(folder)
    return unet, False


# ---------------------------------------------------------------- rewards


class DigitClassifier:
    """Logistic regression on the real digits' 64 pixels; ``reward`` is p(requested digit | image).

    Trained on a seeded 80% split; :attr:`held_out_accuracy` is measured on the other 20%.
    """

    def __init__(self, seed: int = 0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split

        images, labels = load_digits_tensors()
        x = images.flatten(1).numpy()
        x_tr, x_te, y_tr, y_te = train_test_split(x, labels.numpy(), test_size=0.2, random_state=seed,
                                                  stratify=labels.numpy())
        self.model = LogisticRegression(max_iter=2000, C=0.1).fit(x_tr, y_tr)
        self.held_out_accuracy = float(self.model.score(x_te, y_te))

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 10]`` class probabilities of images in [-1, 1] (clamped: the model never saw outside)."""
        x = images.detach().float().clamp(-1, 1).flatten(1).cpu().numpy()
        return torch.tensor(self.model.predict_proba(x), dtype=torch.float32)

    def __call__(self, images: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        probs = self.probabilities(images)
        return probs[torch.arange(len(digits)), digits.cpu()]


def ink_reward(images: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """Mean brightness in [0, 1] (0 blank, 1 all ink): ``[B]``; ``digits`` is unused."""
    return ((images.detach().float().clamp(-1, 1) + 1) / 2).flatten(1).mean(1).cpu()


def digit_rewards(seed: int = 0) -> dict[str, ImageReward]:
    """The task's named rewards: ``classifier`` and ``ink``."""
    return {"classifier": DigitClassifier(seed), "ink": ink_reward}


def mixed_reward(rewards: dict[str, ImageReward], weights: dict[str, float]) -> ImageReward:
    """sum_i w_i r_i, for multi-reward runs."""

    def score(images: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
        return sum(w * rewards[name](images, digits) for name, w in weights.items())

    return score


def as_numpy_grid(images: torch.Tensor, rows: int) -> np.ndarray:
    """``[rows*cols, 1, H, W]`` in [-1, 1] -> one ``[rows*(H+1)-1, cols*(W+1)-1]`` array in [0, 1] (ink = 1)."""
    cols = images.shape[0] // rows
    h, w = images.shape[-2:]
    grid = np.zeros((rows * (h + 1) - 1, cols * (w + 1) - 1), dtype=np.float32)  # blank (no ink) gaps
    imgs = ((images.detach().float().clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy()
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        grid[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = imgs[i]
    return grid
