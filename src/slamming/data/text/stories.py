"""A seeded generator of short English stories whose endings agree with their beginnings.

The embedded pipeline speaks these stories with a TTS engine and trains a small speech LM on them.
What makes a tiny model learn *topic coherence* (reference/embedded-units.md) is that a story names a
character, a place and an object in its first two sentences and its last sentence names the same
character together with the same place or object. A topic cloze test then pairs a held-out story's
beginning with its own ending or with another story's ending.

Every sentence is written here, as templates over word lists; nothing is downloaded.

Splits are decided by the text itself: a story belongs to the split picked by a hash of its text,
so no text can ever be in two splits, whatever the seeds. Each split is a deterministic stream drawn
from its own RNG; candidates whose hash names another split (or that repeat an earlier text) are
dropped, which costs about three candidates per story and keeps ``stories(n)`` a prefix of
``stories(n + m)``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from slamming.errors import SlammingError

SPLITS: tuple[str, ...] = ("train", "val", "test")
MIN_WORDS = 40
MAX_WORDS = 80
MIN_SENTENCES = 4
MAX_SENTENCES = 7


def _phrases(text: str) -> tuple[str, ...]:
    """Split a ``|``-separated list; one long string keeps the lists compact and formatter-stable."""
    return tuple(part.strip() for part in text.split("|"))


# --- Word lists. Anything that follows "a" starts with a consonant sound, so "a {adj}" reads well.
# Names are whole words and no name is a prefix of another, so a name check cannot match by accident.
_SHE = (
    "Lily Mia Anna Zoe Ella Emma Sara Lucy Ruby Nora Rosa Maya Hana Ivy Clara Daisy Molly Amy Julia Olivia "
    "Chloe Alice Grace Leah Nina Tina Bella Kate Jane Sophie"
)
_HE = (
    "Tom Ben Sam Max Leo Jack Finn Noah Oscar Theo Luke Owen Henry Jake Milo Adam Ethan Hugo Felix Oliver "
    "Peter Danny Toby Ryan Eli Liam Omar Victor Carl Timmy"
)
CHARACTERS = tuple([(n, "she") for n in _SHE.split()] + [(n, "he") for n in _HE.split()])
PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "him", "his")}
_ANIMALS = tuple("cat kitten puppy rabbit bunny bear fox mouse duck frog pig lamb".split())
KINDS = {"she": ("girl", *_ANIMALS), "he": ("boy", *_ANIMALS)}
TRAITS = _phrases(
    "kind|shy|brave|curious|little|happy|clever|gentle|playful|silly|small|friendly|quiet|busy|funny"
)
# Places as "preposition the noun": the preposition is what puts someone there.
PLACES = tuple(
    tuple(reversed(phrase.split(" the ", 1)))
    for phrase in _phrases(
        "in the park|in the forest|in the garden|in the library|in the castle|in the kitchen|in the bakery|"
        "in the meadow|in the cave|in the museum|in the jungle|in the village|in the barn|in the field|"
        "in the candy shop|in the backyard|in the orchard|in the swamp|in the desert|in the valley|in the cabin|"
        "in the tower|at the beach|at the school|at the zoo|at the market|at the playground|at the harbor|"
        "at the station|at the circus|at the camp|at the fair|on the farm|on the hill|on the island|"
        "on the mountain|on the bridge|on the pier|on the rooftop|by the lake|by the river|by the pond"
    )
)
OBJECTS = _phrases(
    "ball|kite|boat|hat|book|box|shell|key|cup|drum|lamp|map|bell|doll|toy train|robot|blanket|basket|flower|"
    "stone|feather|coin|ribbon|scarf|bucket|teddy bear|toy car|jar|clock|bike|sled|wagon|balloon|crayon|spoon|"
    "pillow|kettle|whistle|rope|ladder|mirror|candle|lantern|puzzle|shovel|guitar|marble|compass"
)
OBJECT_ADJECTIVES = _phrases(
    "red|blue|green|yellow|shiny|little|big|soft|round|golden|tiny|striped|wooden|silver|purple|pink|new"
)
TIMES = _phrases(
    "one sunny morning|one rainy day|one cold winter evening|early one spring morning|last summer|"
    "one windy afternoon|on a snowy day|one warm night|on a quiet Sunday|one foggy morning|after lunch one day|"
    "on the first day of autumn"
)
FRIENDS = _phrases(
    "a wise old owl|a friendly bird|a kind farmer|a tall giraffe|a little squirrel|a busy baker|a gentle cow|"
    "a young fox|a funny monkey|a helpful neighbor|a sleepy bear|a clever crow|a smiling teacher|a lost puppy|"
    "a shy deer|an old turtle|an old fisherman|a big brown dog"
)
SPOTS = _phrases(
    "under a bush|behind a rock|next to a bench|under a pile of leaves|inside a hollow log|near a big tree|"
    "beside a fence|under a wooden table|behind a door"
)
GOOD_FEELINGS = _phrases("happy|proud|glad|calm|excited|cheerful|grateful|joyful|hopeful|relieved")
BAD_FEELINGS = _phrases("sad|scared|worried|upset|lonely|grumpy|nervous|tired|gloomy")
SIGHTS = _phrases(
    "a rainbow over the trees|a family of ducks|a tiny green frog|a line of busy ants|a bright red butterfly|"
    "a nest full of eggs|clouds shaped like animals|flowers of every color"
)
SOUNDS = _phrases(
    "birds singing|the wind in the leaves|bells ringing far away|children laughing|rain tapping on the roof|"
    "a dog barking"
)
FIXES = _phrases("some tape|a bit of glue|a piece of string|a needle and thread|a small hammer")
SKILLS = _phrases("balance|spin|draw|paint|toss|catch|carry|hide|clean|juggle")

# Slots drawn independently for each story.
_SLOT_CHOICES = {"trait": TRAITS, "time": TIMES, "adj": OBJECT_ADJECTIVES, "spot": SPOTS, "friend": FRIENDS}
_SLOT_CHOICES |= {"good": GOOD_FEELINGS, "bad": BAD_FEELINGS, "sight": SIGHTS, "sound": SOUNDS}
_SLOT_CHOICES |= {"fix": FIXES, "skill": SKILLS}

# --- Sentence templates. Slots: name he him his kind trait time place prep object adj spot friend
# Friend good bad sight sound fix skill. A lower-case first letter is capitalised when filled.
OPENINGS = _phrases(
    "{time}, a {trait} {kind} named {name} went to the {place}.|"
    "Once upon a time, there was a {trait} {kind} named {name} who lived near the {place}.|"
    "{name} was a {trait} {kind} who loved to play {prep} the {place}.|"
    "{time}, {name} the {kind} walked all the way to the {place}.|"
    "There once was a {trait} {kind} called {name} who spent every day {prep} the {place}.|"
    "{name} the {trait} {kind} woke up early and ran to the {place}.|"
    "{time}, {name} and {his} family went to the {place}.|"
    "Every day, a {trait} {kind} named {name} visited the {place}."
)
INTRODUCTIONS = _phrases(
    "{he} found a {adj} {object} {spot}.|{name} had a {adj} {object} that {he} loved very much.|"
    "{he} brought {his} {adj} {object} along.|{prep} the {place}, {he} saw a {adj} {object} {spot}.|"
    "{his} grandma had given {him} a {adj} {object} for {his} birthday.|In {his} bag, {he} carried a {adj} {object}.|"
    "{he} was holding a {adj} {object} in {his} hands."
)
FILLERS = _phrases(
    "The sky was clear and the air was fresh.|{name} laughed and clapped {his} hands.|{he} took a deep breath.|"
    "A little bird sang on a branch nearby.|{he} stopped to look at {sight}.|"
    "{his} tummy made a funny noise, so {he} ate a snack.|The {place} was quiet and peaceful.|"
    "{he} hummed a happy song.|Far away, {he} could hear {sound}.|{he} thought about the {object} and smiled."
)


@dataclass(frozen=True)
class _Plot:
    """A storyline: middle sentences in order (those in ``required`` always kept) and its endings.

    Every ending names the character and the object; most also name the place.
    """

    middle: tuple[str, ...]
    required: frozenset[int]
    endings: tuple[str, ...]

    @classmethod
    def parse(cls, middle: str, endings: str) -> _Plot:
        """Build a plot from ``|``-lists; a middle sentence starting with ``*`` is required."""
        sentences = _phrases(middle)
        required = frozenset(i for i, t in enumerate(sentences) if t.startswith("*"))
        return cls(tuple(t.removeprefix("*") for t in sentences), required, _phrases(endings))


PLOTS = (
    _Plot.parse(  # lost and found
        "{he} played with the {object} all morning.|Then {he} put it down and ran off to look at {sight}.|"
        "*When {he} came back, the {object} was gone!|{name} felt {bad} and looked everywhere.|"
        "{Friend} came by and offered to help.",
        "At last, {name} found the {object} {spot}, and {he} felt {good} again.|"
        "In the end, {name} found the {object} {prep} the {place} and never lost it again.|"
        "{name} held the {object} tight and walked home from the {place}, feeling {good}.",
    ),
    _Plot.parse(  # sharing
        "*{he} met {friend}, who looked {bad}.|The new friend had never seen a {object} before.|"
        "{name} thought for a moment.|*Then {he} shared the {object} with {his} new friend.|"
        "They took turns and laughed together.",
        "{name} and {his} new friend played with the {object} {prep} the {place} until the sun went down.|"
        "From that day on, {name} always shared the {object} with friends {prep} the {place}.",
    ),
    _Plot.parse(  # mending
        "*But then {name} dropped the {object}, and it broke.|{he} felt {bad} and started to cry.|"
        "{Friend} heard {him} and came to help.|*Carefully, {he} fixed the {object} with {fix}.",
        "Now {name} takes good care of the {object} every time {he} goes to the {place}.|"
        "{name} smiled at the {object}, which was as good as new, and played {prep} the {place} all day.",
    ),
    _Plot.parse(  # exploring
        "*{name} decided to explore the {place} with the {object}.|Soon {he} saw {sight}.|"
        "{he} could hear {sound}.|{he} felt {good} and a little bit brave.",
        "When the sun went down, {name} walked home from the {place}, holding the {object} close.|"
        "{name} knew that the {place} was the best spot in the world to take the {object}.",
    ),
    _Plot.parse(  # learning
        "*{name} wanted to learn to {skill} the {object}.|At first it was very hard, and {he} felt {bad}.|"
        "{Friend} told {him} to keep trying.|{he} tried again and again.",
        "By the end of the day, {name} could {skill} the {object} better than anyone {prep} the {place}.|"
        "Now {name} can {skill} the {object} {prep} the {place} all day long.",
    ),
    _Plot.parse(  # a gift
        "*{name} wanted to give the {object} to {friend}.|{he} wrapped it in paper with a bright bow.|"
        "On the way, {he} heard {sound}.|{he} felt a little {bad}, but {he} kept going.",
        "{name} gave the {object} away {prep} the {place}, and {he} felt {good} all day.|"
        "The new friend loved the {object}, and {name} felt {good} as they sat together {prep} the {place}.",
    ),
    _Plot.parse(  # a storm
        "*Suddenly, dark clouds covered the sky over the {place}.|"
        "The wind blew hard, and {name} held on to the {object}.|{he} felt {bad} and hid {spot}.|"
        "Soon the rain stopped and the sun came out.",
        "{name} laughed, picked up the {object}, and danced {prep} the {place} in the warm sun.|"
        "After the storm, {name} and the {object} were safe and dry {prep} the {place}.",
    ),
    _Plot.parse(  # showing off
        "*{he} showed the {object} to {friend}.|The new friend said it was the best {object} in the world.|"
        "{name} felt {good} and smiled from ear to ear.",
        "Every day after that, {name} brought the {object} to the {place} to show everyone.|"
        "{name} put the {object} on a shelf, and it always reminded {him} of the {place}.",
    ),
)


@dataclass(frozen=True)
class Story:
    """One generated story.

    Attributes:
        text: The whole story, sentences joined by single spaces.
        sentences: The sentences, in order; the last one is the ending.
        character: The main character's name, named in the first sentence and in the ending.
        place: The place noun (e.g. ``"lake"``), named in the first two sentences.
        object: The object noun (e.g. ``"kite"``), named in the first two sentences.
        id: A stable 16-hex-digit id: a hash of ``text``, identical across runs and machines.
    """

    text: str
    sentences: tuple[str, ...]
    character: str
    place: str
    object: str
    id: str

    @property
    def split(self) -> str:
        """The split this story's text belongs to (see :func:`split_of`)."""
        return split_of(self.text)


def _digest(text: str) -> bytes:
    # blake2b, not hash(): Python's str hash is salted per process and would break determinism.
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def split_of(text: str) -> str:
    """The split (``"train"``, ``"val"`` or ``"test"``) that owns a story text.

    Args:
        text: A story's full text.

    Returns:
        One of :data:`SPLITS`, chosen by a stable hash of the text, each with probability 1/3.
    """
    return SPLITS[int.from_bytes(_digest(text), "big") % len(SPLITS)]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise SlammingError(f"unknown story split {split!r}; use one of {', '.join(SPLITS)}")


def _fill(template: str, slots: dict[str, str]) -> str:
    sentence = template.format_map(slots)
    # Templates may start with a lower-case slot ("{he} ran"); a sentence starts with a capital.
    return sentence[0].upper() + sentence[1:]


def _draft(rng: random.Random) -> tuple[list[str], str, str, str]:
    """Draw one candidate story: (sentences, character, place, object)."""
    rand = rng.random

    def pick(seq: tuple[str, ...]) -> str:
        # Indexing by rng.random() is ~2x faster than rng.choice, which matters at ~3 drafts a story.
        return seq[int(rand() * len(seq))]

    name, gender = CHARACTERS[int(rand() * len(CHARACTERS))]
    he, him, his = PRONOUNS[gender]
    place, prep = PLACES[int(rand() * len(PLACES))]
    obj = pick(OBJECTS)
    slots = {"name": name, "he": he, "him": him, "his": his, "place": place, "prep": prep, "object": obj}
    slots["kind"] = pick(KINDS[gender])
    for slot, choices in _SLOT_CHOICES.items():
        slots[slot] = pick(choices)
    slots["Friend"] = slots["friend"][0].upper() + slots["friend"][1:]
    plot = PLOTS[int(rand() * len(PLOTS))]
    # Required plot sentences always stay; optional ones and fillers fill the middle up to 1-4
    # sentences, keeping the plot's own order so the story still reads as one storyline.
    n_middle = rng.randint(max(MIN_SENTENCES - 3, len(plot.required)), MAX_SENTENCES - 3)
    optional = [i for i in range(len(plot.middle)) if i not in plot.required]
    n_optional = rng.randint(0, min(len(optional), n_middle - len(plot.required)))
    keep = sorted([*plot.required, *rng.sample(optional, n_optional)])
    middle = [plot.middle[i] for i in keep]
    for filler in rng.sample(FILLERS, n_middle - len(middle)):
        middle.insert(rng.randint(0, len(middle)), filler)
    templates = [pick(OPENINGS), pick(INTRODUCTIONS), *middle, pick(plot.endings)]
    return [_fill(t, slots) for t in templates], name, place, obj


class StoryGenerator:
    """Deterministic, seeded stream of stories per split.

    Args:
        seed: Seed of every split's stream. The same seed gives the same stories in any process.

    Example:
        >>> gen = StoryGenerator(seed=0)
        >>> train = gen.stories(1000)
        >>> test = gen.stories(200, split="test")   # never shares a text with ``train``
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        # Per split: the RNG (its state is where the stream continues), the stories so far, and
        # the texts seen, so repeated calls extend the stream instead of regenerating it.
        self._streams: dict[str, tuple[random.Random, list[Story], set[bytes]]] = {}

    def stories(self, n: int, split: str = "train") -> list[Story]:
        """The first ``n`` stories of a split's stream.

        Args:
            n: How many stories (``>= 0``).
            split: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            ``n`` distinct stories; ``stories(n)`` is always a prefix of ``stories(n + m)``.

        Raises:
            SlammingError: ``split`` is not a known split.
            ValueError: ``n`` is negative.
        """
        _check_split(split)
        if n < 0:
            raise ValueError(f"the number of stories must be >= 0, got {n}")
        if split not in self._streams:
            # A str seed is hashed with SHA-512 by random.seed, so it is stable across runs.
            rng = random.Random(f"slamming.stories:{self.seed}:{split}")
            self._streams[split] = (rng, [], set())
        rng, made, seen = self._streams[split]
        wanted = SPLITS.index(split)
        while len(made) < n:
            sentences, name, place, obj = _draft(rng)
            text = " ".join(sentences)
            words = text.count(" ") + 1
            if not MIN_WORDS <= words <= MAX_WORDS:
                continue
            digest = _digest(text)
            if int.from_bytes(digest, "big") % len(SPLITS) != wanted or digest in seen:
                continue
            seen.add(digest)
            made.append(Story(text, tuple(sentences), name, place, obj, digest.hex()))
        return made[:n]


def prefix_and_ending(story: Story) -> tuple[tuple[str, ...], str]:
    """Split a story into its beginning sentences and its ending sentence.

    Args:
        story: Any story.

    Returns:
        ``(beginning, ending)``: all sentences but the last, and the last one.
    """
    return story.sentences[:-1], story.sentences[-1]


def swap_ending(story: Story, other: Story) -> str:
    """The text of ``story``'s beginning followed by ``other``'s ending (a topic cloze negative).

    Args:
        story: The story whose beginning is kept.
        other: The story whose ending replaces ``story``'s ending.

    Returns:
        The mismatched text, sentences joined by single spaces like :attr:`Story.text`.

    Raises:
        ValueError: The two endings are identical, so the result would not be a negative.
    """
    beginning, ending = prefix_and_ending(story)
    other_ending = other.sentences[-1]
    if other_ending == ending:
        raise ValueError(f"stories {story.id} and {other.id} end with the same sentence; pick another")
    return " ".join((*beginning, other_ending))


def swap_character(story: Story, name: str) -> str:
    """The text of ``story`` with ``name`` in place of the character's name in the ending only.

    This is the harder cloze negative of reference/embedded-units.md: the ending still fits the
    place and object, and only the name shows that it belongs to another story.

    Args:
        story: The story to alter.
        name: Another character name (e.g. ``other.character``).

    Returns:
        The altered text.

    Raises:
        ValueError: ``name`` is the story's own character.
    """
    if name == story.character:
        raise ValueError(f"story {story.id} already stars {name}; pick another name")
    beginning, ending = prefix_and_ending(story)
    return " ".join((*beginning, ending.replace(story.character, name)))


#: The kinds of contradiction :func:`contradict_ending` makes: which of the story's names it replaces.
CONTRADICTIONS: tuple[str, ...] = ("character", "object", "place")
_GENDER = dict(CHARACTERS)
_PREPOSITION = dict(PLACES)


def says(text: str, phrase: str) -> bool:
    """Whether ``text`` holds ``phrase`` as whole words, whatever the case."""
    return re.search(rf"\b{re.escape(phrase)}\b", text, flags=re.IGNORECASE) is not None


def contradict_ending(story: Story, kind: str, pool: Sequence[Story], start: int) -> str | None:
    """``story``'s ending sentence with its character, object or place (``kind``) replaced by the
    first of ``pool[start + 1], pool[start + 2], …`` (wrapping round) whose one fits: another name
    of the same gender, or another place taking the same preposition, never one the story already
    says. The ending still reads well; only the story shows that it is wrong (a spoken cloze negative,
    and a pointed DPO rejection). None when the ending does not name that thing or nothing fits.

    Raises:
        ValueError: ``kind`` is not one of :data:`CONTRADICTIONS`.
    """
    if kind not in CONTRADICTIONS:
        raise ValueError(f"kind must be one of {CONTRADICTIONS}, got {kind!r}")
    ending = story.sentences[-1]
    old = getattr(story, kind)
    if not says(ending, old):
        return None
    for j in range(1, len(pool)):
        new = getattr(pool[(start + j) % len(pool)], kind)
        if new == old or says(story.text, new):
            continue
        if kind == "character" and _GENDER[new] != _GENDER[old]:
            continue
        if kind == "place" and _PREPOSITION[new] != _PREPOSITION[old]:
            continue
        return re.sub(rf"\b{re.escape(old)}\b", new, ending)
    return None
