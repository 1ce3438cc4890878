"""Rewards: one ``score(prompts, responses) -> [N]`` interface (plus dense segments).

Built from config by :func:`build_reward`; see :mod:`alignkit.rewards.base`. The
reward classes live in their modules (``vader``, ``simple``, ``mix``, ``model``) and
are imported lazily, so this package needs torch alone.
"""

from alignkit.rewards.base import REWARDS, Reward, RewardSpec, Segment, as_text, build_reward, sum_segments

__all__ = ["REWARDS", "Reward", "RewardSpec", "Segment", "as_text", "build_reward", "sum_segments"]
