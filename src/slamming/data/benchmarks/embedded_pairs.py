"""The text of the embedded pair benchmarks: stand-ins for sWUGGY, sBLIMP, tStoryCloze and sStoryCloze.

The real benchmarks (reference/slam-recipe.md §4) are downloads; these are made from the story
generator (:mod:`slamming.data.text.stories`), so the embedded pipeline can be evaluated with nothing
downloaded. Each item pairs a *positive* text with a *negative* one; a speech LM passes a pair when it
gives the spoken positive the higher mean log-likelihood. :mod:`slamming.data.benchmarks.embedded`
speaks them.

- ``lexical`` (like sWUGGY): a word of the stories vs a pronounceable non-word made from it
  (:func:`slamming.data.text.lexicon.nonwords`). ``group`` is the word class (name, object, place, …).
- ``syntactic`` (like sBLIMP): a sentence of a held-out story vs the same words in a broken order.
  ``group`` is the perturbation, always a swap of two neighbouring words: ``determiner_order``
  (``the park`` → ``park the``), ``adjective_noun`` (``a red ball`` → ``a ball red``),
  ``preposition_determiner`` (``in the park`` → ``the in park``) or ``subject_verb``
  (``she found`` → ``found she``).
- ``topic_cloze`` (like tStoryCloze): a held-out story vs its beginning with the ending of another
  held-out story that names another character, place and object (``group`` ``ending_swap``).
- ``spoken_cloze`` (like sStoryCloze): a held-out story vs the same story whose ending names something
  the beginning contradicts: another character of the same gender (``character``), another object
  (``object``) or another place with the same preposition (``place``). The ending still reads well;
  only memory of the beginning shows it is wrong. (The real sStoryCloze negatives are human-written
  wrong endings; a contradiction of a named entity is what a template generator can make reliably.)

Held out: every cloze story comes from the ``"test"`` split, which pretraining never sees (a story's
split is decided by its text), and a negative is never a generated story (those always end on their
own character, object and place). Syntactic sentences come from test stories too, minus any sentence
that also occurs in the first ``screen_stories`` train or validation stories of the same seed (the
stories reuse stock sentences such as "He took a deep breath."). Lexical words are, by design, the
words the model was trained on; what is new is hearing them alone.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from slamming.data.text.lexicon import FUNCTION_WORDS, nonwords, story_vocabulary
from slamming.data.text.stories import (
    CHARACTERS,
    CONTRADICTIONS,
    Story,
    StoryGenerator,
    contradict_ending,
    prefix_and_ending,
    swap_ending,
)
from slamming.errors import SlammingError

__all__ = [
    "BENCHMARKS",
    "SCREEN_STORIES",
    "TextPair",
    "embedded_pairs",
    "lexical_pairs",
    "spoken_cloze_pairs",
    "syntactic_pairs",
    "topic_cloze_pairs",
]

BENCHMARKS: tuple[str, ...] = ("lexical", "syntactic", "topic_cloze", "spoken_cloze")
#: Train and validation stories whose sentences are kept out of the syntactic benchmark.
SCREEN_STORIES = 10_000
_SYNTAX_GROUPS = ("determiner_order", "adjective_noun", "preposition_determiner", "subject_verb")
_CLOZE_GROUPS = CONTRADICTIONS
_DETERMINERS = frozenset({"a", "an", "the"})
_POSSESSIVES = frozenset({"his", "her"})
_PREPOSITIONS = frozenset(
    "in at on by to from with under behind near beside inside over of for into after".split()
)
_AUXILIARIES = frozenset("could was were had has can did does is would will should".split())
_NOT_VERBS = (
    _DETERMINERS
    | _POSSESSIVES
    | _PREPOSITIONS
    | _AUXILIARIES
    | frozenset("and or but so who that then the he she him it they".split())
)
# Adjectives of the templates outside the word lists, for "is the next word an adjective too?".
_MORE_ADJECTIVES = frozenset(
    "old wise big brown tall young sleepy lost helpful smiling bright dark warm".split()
)
_NAMES = frozenset(name for name, _ in CHARACTERS)
_TOKEN = re.compile(r"^(.*?)([.,!?;:]*)$")


@dataclass(frozen=True)
class TextPair:
    """One benchmark item as text: the sentence to prefer and the one not to.

    Attributes:
        id: stable id; a story's id for the cloze benchmarks.
        group: the item's kind within its benchmark (word class, perturbation, kind of contradiction).
        positive: the real word / grammatical sentence / coherent story.
        negative: the non-word / broken order / incoherent story.
    """

    id: str
    group: str
    positive: str
    negative: str


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"the number of pairs must be >= 0, got {n}")


def lexical_pairs(n: int, seed: int = 0) -> list[TextPair]:
    """``n`` (word, non-word) pairs over the story vocabulary's content words of three letters or more.

    Words are taken in an order shuffled by ``seed``; past the last word the order repeats with each
    word's next non-word. No two non-words sound alike (:func:`slamming.data.text.lexicon.nonwords`, which
    asks espeak-ng how candidates sound).

    Raises:
        SlammingError: the vocabulary cannot give ``n`` pairs, or espeak-ng is missing.
    """
    _check_count(n)
    if n == 0:
        return []
    vocabulary = story_vocabulary()
    words = [w for w in vocabulary if len(w) >= 3 and w.lower() not in FUNCTION_WORDS]
    random.Random(f"slamming.benchmarks.lexical:{seed}").shuffle(words)
    rounds = -(-n // len(words))
    made = nonwords(words, count=rounds, seed=seed)
    pairs: list[TextPair] = []
    for round_ in range(rounds):
        for word in words:
            if len(pairs) < n and len(made[word]) > round_:
                pairs.append(TextPair(f"{len(pairs):05d}", vocabulary[word], word, made[word][round_]))
    if len(pairs) < n:
        raise SlammingError(
            f"the story vocabulary gives only {len(pairs)} lexical pairs, not {n}; ask for fewer"
        )
    return pairs


def _tokens(sentence: str) -> tuple[list[str], list[str]]:
    """Words and the punctuation after each; the first word lower-cased unless it is a name."""
    words, marks = [], []
    for token in sentence.split(" "):
        match = _TOKEN.match(token)
        assert match is not None  # the pattern matches any string
        words.append(match.group(1))
        marks.append(match.group(2))
    if words[0] not in _NAMES:
        words[0] = words[0].lower()
    return words, marks


def _perturbations(sentence: str) -> dict[str, list[int]]:
    """For each perturbation, the word positions ``i`` where swapping words ``i`` and ``i + 1`` breaks
    the sentence. A swap never crosses punctuation, so punctuation stays where it was."""
    words, marks = _tokens(sentence)
    adjectives = {w for w, kind in story_vocabulary().items() if kind == "adjective"} | _MORE_ADJECTIVES
    found: dict[str, list[int]] = {group: [] for group in _SYNTAX_GROUPS}
    for i in range(len(words) - 1):
        if marks[i]:
            continue
        word, after = words[i], words[i + 1]
        lower_after = after.lower()
        if word in _DETERMINERS:
            found["determiner_order"].append(i)
        if word in _PREPOSITIONS and (after in _DETERMINERS or after in _POSSESSIVES):
            found["preposition_determiner"].append(i)
        before = words[i - 1] if i else ""
        if (
            word in adjectives
            and (before in _DETERMINERS or before in _POSSESSIVES)
            and after.isalpha()
            and after.islower()
            and lower_after not in adjectives | _NOT_VERBS
        ):
            found["adjective_noun"].append(i)
        is_subject = word in ("he", "she") or word in _NAMES
        if is_subject and after.isalpha() and after.islower() and after not in _NOT_VERBS:
            found["subject_verb"].append(i)
    return found


def _swap(sentence: str, i: int) -> str:
    """``sentence`` with words ``i`` and ``i + 1`` exchanged, capitalised as a sentence again."""
    words, marks = _tokens(sentence)
    words[i], words[i + 1] = words[i + 1], words[i]
    words[0] = words[0][0].upper() + words[0][1:]
    return " ".join(w + m for w, m in zip(words, marks, strict=True))


def _screened_sentences(seed: int, screen_stories: int) -> set[str]:
    generator = StoryGenerator(seed)
    return {
        s
        for split in ("train", "val")
        for st in generator.stories(screen_stories, split)
        for s in st.sentences
    }


def syntactic_pairs(n: int, seed: int = 0, screen_stories: int = SCREEN_STORIES) -> list[TextPair]:
    """``n`` (sentence, broken order) pairs from held-out story sentences (see the module doc).

    Sentences are taken in story order, each once; a sentence gets the perturbation used least so far
    among those that fit it (ties in :data:`_SYNTAX_GROUPS` order), at a position drawn from ``seed``.

    Args:
        n: number of pairs.
        seed: seed of the stories and of the positions.
        screen_stories: sentences of the first this many train and validation stories are skipped.
    """
    _check_count(n)
    seen = _screened_sentences(seed, screen_stories) if n else set()
    rng = random.Random(f"slamming.benchmarks.syntactic:{seed}")
    generator = StoryGenerator(seed)
    counts = dict.fromkeys(_SYNTAX_GROUPS, 0)
    pairs: list[TextPair] = []
    batch = 0
    while len(pairs) < n:
        batch += 1
        for story in generator.stories(64 * batch, "test")[64 * (batch - 1) :]:
            for sentence in story.sentences:
                if len(pairs) == n or sentence in seen:
                    continue
                seen.add(sentence)
                found = {g: spots for g, spots in _perturbations(sentence).items() if spots}
                if not found:
                    continue
                group = min(found, key=lambda g: (counts[g], _SYNTAX_GROUPS.index(g)))
                negative = _swap(sentence, rng.choice(found[group]))
                if negative in seen or negative == sentence:
                    continue
                counts[group] += 1
                pairs.append(TextPair(f"{len(pairs):05d}", group, sentence, negative))
    return pairs


def _test_pool(n: int, seed: int) -> list[Story]:
    """The first ``n`` test stories and a few more to draw the negatives' material from."""
    return StoryGenerator(seed).stories(n + 16, "test")


def topic_cloze_pairs(n: int, seed: int = 0) -> list[TextPair]:
    """``n`` pairs: a held-out story vs its beginning + the ending of the next held-out story that
    names another character, place and object."""
    _check_count(n)
    pool = _test_pool(n, seed)
    pairs = []
    for i, story in enumerate(pool[:n]):
        for j in range(1, len(pool)):
            other = pool[(i + j) % len(pool)]
            if (
                other.character != story.character
                and other.place != story.place
                and other.object != story.object
                and other.sentences[-1] != story.sentences[-1]
            ):
                break
        else:  # 16 spare stories make this unreachable in practice; never emit a coherent "negative"
            raise SlammingError(
                f"no test story has an ending unrelated to story {story.id}; use another seed"
            )
        pairs.append(TextPair(story.id, "ending_swap", story.text, swap_ending(story, other)))
    return pairs


def spoken_cloze_pairs(n: int, seed: int = 0) -> list[TextPair]:
    """``n`` pairs: a held-out story vs the same story with a contradicting ending (see the module doc).

    Each story gets the kind of contradiction used least so far among those its ending allows
    (ties in ``character``, ``object``, ``place`` order).
    """
    _check_count(n)
    pool = _test_pool(n, seed)
    counts = dict.fromkeys(_CLOZE_GROUPS, 0)
    pairs: list[TextPair] = []
    for i, story in enumerate(pool):
        if len(pairs) == n:
            break
        endings = {g: contradict_ending(story, g, pool, i) for g in _CLOZE_GROUPS}
        fits = [g for g in _CLOZE_GROUPS if endings[g] is not None]
        if not fits:  # every ending names its character, so this is a guard, not a path taken
            continue
        group = min(fits, key=lambda g: (counts[g], _CLOZE_GROUPS.index(g)))
        counts[group] += 1
        negative = " ".join((*prefix_and_ending(story)[0], str(endings[group])))
        pairs.append(TextPair(story.id, group, story.text, negative))
    if len(pairs) < n:
        raise SlammingError(f"only {len(pairs)} of {n} test stories could be contradicted; use another seed")
    return pairs


def embedded_pairs(
    num_pairs: int, seed: int = 0, cloze_pairs: int | None = None
) -> dict[str, list[TextPair]]:
    """The text pairs of every benchmark, by name (:data:`BENCHMARKS` order).

    ``cloze_pairs`` sets how many pairs the two cloze benchmarks get (None: ``num_pairs``): they are
    spoken in one voice per pair, so a tight interval needs more of them than the lexical and
    syntactic ones, which are spoken in every voice.
    """
    makers = (lexical_pairs, syntactic_pairs, topic_cloze_pairs, spoken_cloze_pairs)
    counts = (num_pairs, num_pairs, *(2 * [num_pairs if cloze_pairs is None else cloze_pairs]))
    return {name: make(n, seed) for name, make, n in zip(BENCHMARKS, makers, counts, strict=True)}
