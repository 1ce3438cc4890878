"""The review generator: deterministic, distinct, of mixed sentiment, with neutral openings."""

import random
import statistics

from alignkit.demo.corpus import generate_reviews, review_prompt
from alignkit.rewards.vader import compound


def test_deterministic_and_distinct():
    a, b = generate_reviews(500, seed=3), generate_reviews(500, seed=3)
    assert [r.text for r in a] == [r.text for r in b]
    assert len({r.text for r in a}) == 500
    assert [r.text for r in generate_reviews(50, seed=4)] != [r.text for r in a[:50]]


def test_mixed_sentiment_and_neutral_openings():
    reviews = generate_reviews(1000)
    body = {plan: [compound(r.text[len(r.opening):]) for r in reviews if r.plan == plan]
            for plan in ("positive", "negative", "neutral", "mixed")}
    assert statistics.mean(body["positive"]) > 0.5 > -0.5 > statistics.mean(body["negative"])
    assert min(len(v) for v in body.values()) > 100
    assert abs(statistics.mean(compound(r.opening) for r in reviews)) < 0.15


def test_prompt_is_an_opening():
    rng = random.Random(0)
    for review in generate_reviews(100):
        prompt = review_prompt(review, rng)
        assert review.text.startswith(prompt) and prompt.startswith(review.opening)
