"""VADER reward: the package's own compound scores, and the dense per-sentence path."""

import pytest
import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from alignkit.rewards import RewardSpec, build_reward
from alignkit.rewards.vader import VaderReward, sentence_segments

POSITIVE = "This movie was great, I loved it!"
NEGATIVE = "This movie was terrible and boring."
NEUTRAL = "The movie is two hours long."


@pytest.fixture(scope="module")
def analyzer():
    return SentimentIntensityAnalyzer()


def test_sign_and_exact_values(analyzer):
    reward = VaderReward()
    scores = reward.score(["p"] * 3, [POSITIVE, NEUTRAL, NEGATIVE])
    assert scores.dtype == torch.float32 and scores.shape == (3,)
    assert scores[0] > 0 and scores[2] < 0 and scores[1] == 0
    expected = [analyzer.polarity_scores(t)["compound"] for t in (POSITIVE, NEUTRAL, NEGATIVE)]
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float32), rtol=0, atol=0)


def test_prompt_is_ignored():
    reward = VaderReward()
    assert torch.equal(reward.score(["I hate this"], [POSITIVE]), reward.score(["I love this"], [POSITIVE]))


def test_sequence_segments_are_one_per_response():
    reward = VaderReward()
    segments = reward.score_segments(["p", "p"], [POSITIVE, NEGATIVE])
    scores = reward.score(["p", "p"], [POSITIVE, NEGATIVE])
    assert [len(s) for s in segments] == [1, 1]
    assert segments[0][0][0] == len(POSITIVE) and segments[1][0][0] == len(NEGATIVE)
    assert [s[0][1] for s in segments] == pytest.approx(scores.tolist())


def test_sentence_segments_split_and_score_each_sentence(analyzer):
    text = "I loved it!! The plot was awful.\nIt ends"
    segments = sentence_segments(text)
    # sentences end after "!!" (index 12), after "awful." (32), and at the end (40)
    assert [end for end, _ in segments] == [12, 32, 40]
    sentences = ["I loved it!!", "The plot was awful.", "It ends"]
    assert [v for _, v in segments] == [analyzer.polarity_scores(s)["compound"] for s in sentences]
    assert segments[0][1] > 0 > segments[1][1] and segments[2][1] == 0


def test_dense_score_is_the_sum_of_sentence_compounds_not_the_whole_text_compound(analyzer):
    text = "I loved it! It was great. Wonderful acting."
    reward = VaderReward(granularity="sentence")
    assert reward.dense
    (segments,) = reward.score_segments([""], [text])
    total = reward.score([""], [text])
    assert total.item() == pytest.approx(sum(v for _, v in segments), abs=1e-6)
    # three positive sentences add up past 1, beyond the whole text's compound (which is <= 1)
    assert total.item() > 1.0 > analyzer.polarity_scores(text)["compound"]


def test_empty_and_whitespace_responses_get_one_zero_segment():
    reward = VaderReward(granularity="sentence")
    assert reward.score_segments(["", ""], ["", "  \n "]) == [[(0, 0.0)], [(4, 0.0)]]
    assert reward.score(["", ""], ["", "  \n "]).tolist() == [0.0, 0.0]


def test_built_from_spec():
    reward = build_reward(RewardSpec(kind="vader", granularity="sentence"))
    assert isinstance(reward, VaderReward) and reward.dense and reward.name == "vader"
