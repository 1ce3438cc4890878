"""A seeded generator of short reviews of mixed sentiment: the demo's offline stand-in for IMDB.

A review is a neutral opening ("We tried this sushi bar last weekend with my sister.")
followed by two to four sentences about aspects of the subject (its acting, its
battery, its service...), each drawn from a positive, negative or neutral phrase bank,
joined by connectives, and sometimes a closing verdict. The overall plan of a review
is one of positive, negative, neutral or mixed (the sentiment turns half-way), so a
language model pretrained on the corpus continues an opening with either sentiment:
the starting point that alignment then steers towards positive continuations.

Eight subject kinds x ~8 nouns x ~10 aspects x ~30 adjectives per sentiment x
templates give far more distinct reviews than the few thousand the demo uses, so
the samples of a model trained on it are new combinations rather than copies.

Everything is a pure function of ``seed``; bump :data:`CORPUS_VERSION` whenever the
banks or templates change, because the demo's cache key includes it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

CORPUS_VERSION = "reviews-v1"

# kind: (nouns, verbs in the past tense that fit "I {verb} this {noun}", aspects)
SUBJECTS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "movie": (
        ["movie", "film", "thriller", "comedy", "documentary", "drama", "horror film", "sci-fi film", "western"],
        ["watched", "saw", "rented", "streamed"],
        ["acting", "plot", "script", "soundtrack", "ending", "dialogue", "camera work", "pacing", "cast",
         "special effects", "lead actor", "story"],
    ),
    "show": (
        ["show", "series", "sitcom", "miniseries", "cooking show", "crime series", "cartoon"],
        ["watched", "binged", "started", "finished"],
        ["first episode", "writing", "characters", "humor", "finale", "theme song", "host", "story", "season"],
    ),
    "restaurant": (
        ["restaurant", "cafe", "diner", "pizza place", "sushi bar", "bakery", "steakhouse", "food truck",
         "noodle shop"],
        ["tried", "visited", "went to", "ate at"],
        ["food", "service", "staff", "pasta", "dessert", "coffee", "menu", "atmosphere", "soup", "portions",
         "bread", "waiter"],
    ),
    "book": (
        ["book", "novel", "memoir", "cookbook", "biography", "mystery novel", "fantasy novel", "poetry book"],
        ["read", "finished", "borrowed", "bought"],
        ["writing", "characters", "plot", "ending", "prose", "dialogue", "pacing", "cover", "first chapter",
         "main character"],
    ),
    "gadget": (
        ["phone", "laptop", "headphones", "camera", "smartwatch", "tablet", "speaker", "keyboard", "blender"],
        ["bought", "ordered", "tested", "used"],
        ["battery", "screen", "sound", "design", "price", "software", "build quality", "charger", "setup",
         "manual"],
    ),
    "hotel": (
        ["hotel", "hostel", "resort", "guest house", "motel", "cabin"],
        ["stayed at", "booked", "visited", "chose"],
        ["room", "bed", "breakfast", "pool", "staff", "view", "location", "shower", "check-in", "lobby"],
    ),
    "game": (
        ["game", "board game", "video game", "puzzle game", "card game", "racing game"],
        ["played", "bought", "tried", "finished"],
        ["gameplay", "graphics", "controls", "music", "story", "levels", "rules", "multiplayer", "boss fights"],
    ),
    "album": (
        ["album", "record", "concert", "musical", "opera", "playlist"],
        ["heard", "listened to", "went to", "bought"],
        ["vocals", "lyrics", "guitar", "drums", "first song", "production", "melodies", "last track",
         "band", "singer"],
    ),
}

WHEN = ["last week", "last weekend", "yesterday", "last night", "on Friday", "a month ago", "this morning",
        "on my birthday", "over the holidays", "on a rainy Sunday", "after work", "last summer"]
WHO = ["my sister", "my brother", "my uncle", "my parents", "my wife", "my husband", "a coworker",
       "my kids", "my roommate", "my cousin", "my neighbor"]

# Phrase banks: single adjectives of each polarity (VADER knows all the polar ones).
POSITIVE = ["great", "wonderful", "excellent", "amazing", "lovely", "fantastic", "superb", "delightful",
            "brilliant", "charming", "fun", "beautiful", "perfect", "impressive", "enjoyable", "pleasant",
            "outstanding", "fresh", "clever", "warm", "smart", "good", "nice", "awesome", "sweet",
            "gorgeous", "elegant", "friendly", "exciting", "solid"]
NEGATIVE = ["terrible", "awful", "boring", "bad", "disappointing", "dull", "horrible", "poor", "awkward",
            "annoying", "weak", "ugly", "stupid", "painful", "messy", "rude", "lame", "lazy", "sad",
            "broken", "confusing", "dumb", "worst I have seen", "a disaster", "frustrating", "dreadful",
            "pathetic", "useless", "miserable", "unpleasant"]
NEUTRAL = ["modest", "average", "ordinary", "typical", "simple", "short", "long", "quiet", "standard",
           "plain", "normal", "slow", "fast", "loud", "small", "large", "different", "unusual",
           "predictable", "familiar"]
INTENSIFIERS = ["", "", "", "really ", "very ", "quite ", "so ", "a bit ", "somewhat ", "rather "]

OPENINGS = [
    "I {verb} this {noun} {when}.",
    "I {verb} this {noun} {when} with {who}.",
    "{Who} and I {verb} this {noun} {when}.",
    "We {verb} the new {noun} {when}.",
    "{Who} told me about this {noun}, so I {verb} it {when}.",
    "So I finally {verb} this {noun} {when}.",
    "I {verb} this {noun} because {who} asked me to.",
    "This is my review of the {noun} I {verb} {when}.",
]
ASPECT_SENTENCES = [
    "The {aspect} {was} {intens}{adj}.",
    "The {aspect} {is_} {intens}{adj}.",
    "I thought the {aspect} {was} {intens}{adj}.",
    "The {aspect} felt {intens}{adj}.",
    "The {aspect} {was} {adj} and the {aspect2} was {adj2}.",
    "Honestly, the {aspect} {was} {intens}{adj}.",
    "To me the {aspect} seemed {intens}{adj}.",
    "Both the {aspect} and the {aspect2} were {adj}.",
    "{Who_cap} said the {aspect} {was} {adj}, and I think so too.",
]
SAME = ["Also,", "And", "Plus,", "What is more,", "In addition,", "Besides,"]
TURN = {
    "positive": ["But", "However,", "Still,", "Then again,", "Thankfully,"],  # a turn to positive
    "negative": ["But", "However,", "Still,", "Then again,", "Sadly,", "Unfortunately,"],  # a turn to negative
}
CLOSINGS = {
    "positive": ["I loved it.", "I would recommend it to anyone.", "Five stars.", "Highly recommended!",
                 "I will definitely come back.", "What a great time.", "I am so happy I tried it.",
                 "A real treat.", "Just great.", "I love it."],
    "negative": ["I would not recommend it.", "What a waste of time.", "Awful.", "I regret it.",
                 "Worst purchase ever.", "Avoid it.", "I hated it.", "What a disappointment."],
    "neutral": ["It was fine for one time.", "Nothing special overall.", "Maybe I will try it again.",
                "It is what it is.", "Three stars.", "Hard to say more than that."],
}
PLANS = [("positive", 0.30), ("negative", 0.30), ("neutral", 0.15), ("mixed", 0.25)]


@dataclass(frozen=True)
class Review:
    text: str  # the whole review
    opening: str  # its first (neutral) sentence
    kind: str  # the subject kind: movie, restaurant, ...
    plan: str  # positive, negative, neutral or mixed


def _bank(sentiment: str) -> list[str]:
    return {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}[sentiment]


def _sentence(rng: random.Random, aspects: list[str], sentiment: str) -> str:
    aspect, aspect2 = rng.sample(aspects, 2)
    adj, adj2 = rng.sample(_bank(sentiment), 2)
    who = rng.choice(WHO)
    plural = aspect.endswith("s") and not aspect.endswith("ss")
    return rng.choice(ASPECT_SENTENCES).format(
        was="were" if plural else "was", is_="are" if plural else "is", aspect=aspect, aspect2=aspect2, adj=adj, adj2=adj2, intens=rng.choice(INTENSIFIERS),
        Who_cap=who[0].upper() + who[1:],
    )


def _join(connective: str, sentence: str) -> str:
    """``"However," + "The plot was bad."`` -> ``"However, the plot was bad."``."""
    if not connective:
        return sentence
    keep_capital = sentence.split(" ", 1)[0] == "I"
    body = sentence if keep_capital else sentence[0].lower() + sentence[1:]
    return f"{connective} {body}"


def make_review(rng: random.Random) -> Review:
    """One review; every choice comes from ``rng``."""
    kind = rng.choice(sorted(SUBJECTS))
    nouns, verbs, aspects = SUBJECTS[kind]
    who = rng.choice(WHO)
    opening = rng.choice(OPENINGS).format(
        verb=rng.choice(verbs), noun=rng.choice(nouns), when=rng.choice(WHEN), who=who,
        Who=who[0].upper() + who[1:],
    )
    plan = rng.choices([p for p, _ in PLANS], weights=[w for _, w in PLANS])[0]
    n = rng.randint(2, 4)
    if plan == "mixed":
        first = rng.choice(["positive", "negative"])
        second = "negative" if first == "positive" else "positive"
        turn = rng.randint(1, n - 1)
        sentiments = [first] * turn + [second] * (n - turn)
    else:
        sentiments = [plan] * n
    sentences = [_sentence(rng, aspects, sentiments[0])]
    for prev, cur in zip(sentiments, sentiments[1:]):
        pool = TURN.get(cur, SAME) if prev != cur else SAME
        connective = rng.choice(pool) if rng.random() < 0.6 or prev != cur else ""
        sentences.append(_join(connective, _sentence(rng, aspects, cur)))
    if rng.random() < 0.7:
        sentences.append(rng.choice(CLOSINGS[sentiments[-1] if plan != "neutral" else "neutral"]))
    return Review(" ".join([opening, *sentences]), opening, kind, plan)


def generate_reviews(n: int, seed: int = 0) -> list[Review]:
    """``n`` distinct reviews, deterministic in ``seed``."""
    rng = random.Random(f"{CORPUS_VERSION}:{seed}")
    seen: set[str] = set()
    out: list[Review] = []
    for _ in range(50 * n):
        review = make_review(rng)
        if review.text not in seen:
            seen.add(review.text)
            out.append(review)
            if len(out) == n:
                return out
    raise ValueError(f"could only generate {len(out)} distinct reviews out of {n}")


def review_prompt(review: Review, rng: random.Random, max_extra_words: int = 2) -> str:
    """The opening of ``review`` plus up to ``max_extra_words`` words of what follows: a prompt to continue."""
    words = review.text.split(" ")
    n = len(review.opening.split(" ")) + rng.randint(0, max_extra_words)
    return " ".join(words[:n])
