"""The story generator's vocabulary and pronounceable non-words made from it (a tiny sWUGGY).

sWUGGY (reference/slam-recipe.md §4.1) pairs a real word with a non-word that obeys the language's
sound patterns, both spoken alone, so a speech LM that has learnt the lexicon gives the word the higher
likelihood. The embedded model only ever hears the words of :mod:`slamming.data.text.stories`, so those are
its lexicon: :func:`story_vocabulary` collects every word of the templates and word lists, each with a
class (``name``, ``object``, ``place``, ``adjective`` or ``word``).

:func:`nonwords` changes a word's spelling the way Wuggy changes syllables: one edit of a sound slot
of the first syllable, kept to English spelling patterns espeak-ng reads predictably —

- ``onset``: the word's first consonant cluster becomes another legal onset (``kite`` → ``blite``);
- ``vowel``: one vowel spelling becomes another (``garden`` → ``gorden``; ``ee`` ↔ ``oo``, …);
- ``coda``: a single consonant letter after a vowel becomes another (``cabin`` → ``cadin``).

A candidate is dropped when it is spelled or *sounds* like a word of the story vocabulary or of
:data:`ENGLISH_GUARD`, a hand-made list of common English words such edits produce, or like another
non-word; the sound is espeak-ng's own phoneme transcription (``espeak-ng -x``), so ``world`` →
``wurld`` (the same sound) and ``socks`` → ``sox`` are caught. No dictionary is downloaded, so a rare
English word can still slip through; the model under test never heard it either.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from functools import lru_cache

from slamming.data.text import stories
from slamming.errors import SlammingError

__all__ = [
    "ENGLISH_GUARD",
    "FUNCTION_WORDS",
    "WORD_CLASSES",
    "espeak_phonemes",
    "nonwords",
    "story_vocabulary",
]

#: Word classes of :func:`story_vocabulary`, from the most to the least specific.
WORD_CLASSES: tuple[str, ...] = ("name", "object", "place", "adjective", "word")

#: Grammatical words of the stories; a lexical test of them says little, so they are not used.
FUNCTION_WORDS: frozenset[str] = frozenset(
    "about after again all along an and any anyone as at away before behind beside but by can could "
    "every everyone everywhere for from had he her him his in inside into it near never next now of "
    "off on once one only out over she so some than that the then there they to under until up upon "
    "very was way were when which who with".split()
)

#: Common English words that the edits of :func:`nonwords` can produce from story words; never used
#: as non-words. Extend it when a real word shows up among the non-words.
ENGLISH_GUARD: frozenset[str] = frozenset(
    """
    able ace act add age aid aim air all and ant any ape apt arm art ash ask ate bad bag ban bar bat
    bay bed bee beg bet bid big bin bit bog bop bow bud bug bum bun bus but buy cab can cap car cat
    cob cod cog con cop cot cow cry cub cue cut dab dad dam day den dew did die dig dim din dip doe
    dog don dot dry dub due dug dun dye ear eat egg end era eve eye fab fad fan far fat fed fee few
    fib fig fin fit fix flu fly fog for fox fry fun fur gag gap gas gel gem get gig gin got gum gun
    gut guy had ham has hat hay hem hen her hid him hip his hit hob hog hop hot how hub hue hug hum
    hut ice ill ink inn ion its jab jam jar jaw jet jig job jog jot joy jug jut keg ken kid kin kit
    lab lad lag lap law lay led leg let lid lie lip lit lob log lot low lug mad man map mat maw may
    men met mid mix mob mod mom mop mud mug mum nab nag nap net new nib nil nip nod nor not now nun
    nut oak oar odd off oil old one orb our out owe owl own pad pal pan pat paw pay pea peg pen pet
    pie pig pin pit pod pop pot pub pun pup put rag ram ran rap rat raw ray red rib rid rig rim rip
    rob rod rot row rub rug rum run rut sad sag sap sat saw say sea see set sew she shy sin sip sir
    sit six ski sky sly sob sod son sow soy spa spy sub sum sun tab tad tag tan tap tar tax tea ten
    the tie tin tip toe ton too top tot tow toy try tub tug two urn use van vat vet vow wag war was
    wax way web wed wet who why wig win wit wok won yak yam yap yes yet you zap zip zoo
    back bait bake bale band bane bang bank bare bark barn base bash bass bath bead beak beam bean
    bear beat beef been beer bell belt bend bent best bike bill bind bird bite blot blue blur boat
    bold bolt bond bone book boom boot bore born boss both bout bowl bulk bull bump bunk burn bush
    bust busy cake call calm came camp cane cape card care cart case cash cast cave cell chat chin
    chip chop clap clay clip club clue coal coat code coin cold cone cook cool cope copy cord core
    corn cost cozy crab crew crop crow cube cure curl dame damp dare dark dart dash date dawn deal
    dear deck deep deer dent desk dial dice dime dine dive dock dole doll dome done doom door dose
    dove down drag draw drew drip drop drum duck dull dump dune dusk dust fact fade fail fair fake
    fall fame fang fare farm fast fate fear feed feel feet fell felt fern file fill film find fine
    fire firm fish fist five flag flat flew flip flop foam fold folk fond font food fool foot fork
    form fort foul four free frog fuel full fund fuse gale game gang gate gave gaze gear gift gill
    girl give glad glow glue goal goat gold golf gone good gown grab gray grew grid grim grin grip
    grow gulf gull gust hail hair half hall halt hand hang hard harm hate haul have hawk head heal
    heap hear heat held hell helm help herd here hero hide high hike hill hint hire hold hole home
    hood hook hope horn hose host hour huge hull hung hunt hurt hush lace lack lady laid lake lamb
    lame lamp land lane last late lawn lead leaf leak lean leap left lend lens less lick life lift
    like limb lime limp line link lint lion list live load loaf loan lock loft lone long look loom
    loop lord lose loss lost loud love luck lump lung lure lush made maid mail main make male mall
    malt mane many mare mark mask mass mast mate maze meal mean meat meet melt mend menu mere mesh
    mess mice mild mile milk mill mind mine mint miss mist moan moat mock mode mold mole mood moon
    more moss most moth move much mule must mute nail name neck need nest news next nice nine node
    none noon nose note once pace pack page paid pail pain pair pale palm pane park part pass past
    path peak pear peel pest pick pile pill pine pink pint pipe pity plan play plot plug plum poem
    poet pole poll pond pony pool poor pore pork port pose post pour pray prey pull pump pure push
    race rack raft rage raid rail rain rake ramp rang rank rare rash rate rave read real rear rent
    rest rice rich ride ring ripe rise risk road roam roar robe rock rode role roll roof room root
    rope rose rude ruin rule rush rust sack safe sage said sail sake sale salt same sand sang sank
    save seal seat seed seek seem seen self sell send sent shed ship shoe shop shot show shut sick
    side sift sigh sign silk sing sink site size skin skip slab slam slap sled slid slim slip slit
    slot slow slug smog snap snow soak soap soar sock soda sofa soft soil sold sole some song soon
    sore sort soul soup sour span spin spit spot stab star stay stem step stew stir stop such suit
    sung sunk sure swam swan swap sway swim tack tail take tale talk tall tame tank tape task team
    tear teen tell tend tent term test than that them then they thin this tide tidy tile till time
    tiny tire toad told toll tomb tone took tool tore torn toss tour town trap tray tree trim trip
    true tube tuck tune turn twin type vain vane vase vast veil vein vent verb very vest vice view
    vine void vote wade wage wail wait wake walk wall wand want ward warm warn wash wave weak wear
    weed week well went were west what when whip wide wife wild will wind wine wing wink wire wise
    wish with woke wolf wood wool word wore work worm worn wrap yard yarn year yell zone
    baker basket battle better bottle bubble butter candle cattle dinner fiddle finger hammer
    handle hollow jelly kettle ladder letter little meadow middle mitten muddle paddle pebble pepper
    pillow puddle rabbit ribbon riddle saddle settle silver summer supper tiddle tunnel winter
    black bladder bleep blest bock bosh bristle brayed bucks chalked choke chow clove deem died dram
    dripped dross drought eld fain flack flake flapped flowed fray frilly frying glee glia grower
    heath helix hippy jay lent loin mopped napped nit novel pate pence piled pith plight popped
    preside prig punk resh roomy sappy setter shard shat shone shook sine slave slower snake snuggle
    sone spade spared stack stakes stall stark stench still strong swear tee thy tog towers tries
    trope willow wound
    blade blast blind bloat cad chill click cloze fetter flair foe frag fright grog joggle lite
    mapped mam nay nought pell pent pew puck rad riled rink rove scaled shack snared snook spear
    tarn tig vying ween wee wight woo zing bling brink grind groat know pike prog rote shall sill
    slight stared drill might shamed slink brill dink
    adam amar anne chad duke jade lora mara hoe jan joe mex mike mora moe nam pam ron tam roy tara troy umar zara
    """.split()
)

# Profanity and slurs that one edit of a story word can make: never given as a non-word.
_BLOCKED: frozenset[str] = frozenset(
    """
    arse ass bitch chink cock crap cunt damn dick dike dyke fag fags fuck fucks jap jew kike nig
    piss prick shit slut spik tit tits twat wank whore wog wop
    """.split()
)

# Legal English onsets, spelled so that espeak-ng reads them the same before any vowel (no soft c/g).
_ONSETS: tuple[str, ...] = tuple(
    "b d f h j l m n p r s t v w z bl br dr fl fr gl gr pl pr sl sn sp st tr sk sw sh ch th".split()
)
# Single consonants a coda letter may become (no c/g/x/q/y/w/h: their spelling-to-sound is irregular).
_CODAS: tuple[str, ...] = tuple("b d f k l m n p r s t v z".split())
_VOWELS: dict[str, tuple[str, ...]] = {v: tuple(w for w in "aeiou" if w != v) for v in "aeiou"}
_VOWELS |= {"ee": ("oo", "ai"), "oo": ("ee", "oa"), "ea": ("oa", "ai"), "oa": ("ea", "ai")}
_VOWELS |= {"ai": ("oa", "ee"), "ou": ("oi", "ai"), "oi": ("ou", "ai"), "ay": ("oy",), "oy": ("ay",)}
_SEGMENT = re.compile(r"[aeiouy]+|[^aeiouy]+")
_WORD = re.compile(r"[A-Za-z]+")
_SLOT = re.compile(r"\{[^}]*\}")
_STRESS = re.compile(r"[',]")


def _words_of(phrases: object) -> list[str]:
    """Every alphabetic word of a string or of a nest of tuples/lists/dicts of strings, slots removed."""
    if isinstance(phrases, str):
        return _WORD.findall(_SLOT.sub(" ", phrases))
    if isinstance(phrases, dict):
        return _words_of(list(phrases.values()))
    if isinstance(phrases, tuple | list | frozenset):
        return [word for item in phrases for word in _words_of(item)]
    return []


@lru_cache(maxsize=1)
def story_vocabulary() -> dict[str, str]:
    """Every word the story generator can say, mapped to its word class.

    Names keep their capital letter; every other word is lower case. A word in several lists gets
    the first class of :data:`WORD_CLASSES` that holds it; the words of a multi-word object or place
    (``teddy bear``, ``candy shop``) are plain ``word``\\s.

    Returns:
        ``{word: class}``, sorted by word.
    """
    classes: dict[str, str] = {}

    def add(words: list[str], kind: str) -> None:
        for word in words:
            classes.setdefault(word, kind)

    names = [name for name, _ in stories.CHARACTERS]
    add(names, "name")
    add([o for o in stories.OBJECTS if " " not in o], "object")
    add([place for place, _ in stories.PLACES if " " not in place], "place")
    feelings = (*stories.GOOD_FEELINGS, *stories.BAD_FEELINGS)
    add([a.lower() for a in (*stories.TRAITS, *stories.OBJECT_ADJECTIVES, *feelings)], "adjective")
    rest = (stories.KINDS, stories.PRONOUNS, stories.PLACES, stories.OBJECTS, stories.TIMES, stories.FRIENDS)
    rest += (stories.SPOTS, stories.SIGHTS, stories.SOUNDS, stories.FIXES, stories.SKILLS)
    rest += (stories.OPENINGS, stories.INTRODUCTIONS, stories.FILLERS)
    rest += tuple((plot.middle, plot.endings) for plot in stories.PLOTS)
    name_set = set(names)
    add([w if w in name_set else w.lower() for w in _words_of(rest)], "word")
    return dict(sorted(classes.items()))


def _segments(word: str) -> list[str]:
    """Alternating consonant and vowel letter groups; a leading ``y`` before a vowel is a consonant."""
    parts = _SEGMENT.findall(word)
    if parts and len(parts[0]) > 1 and parts[0][0] == "y" and parts[0][1] in "aeiou":
        parts[:1] = ["y", parts[0][1:]]  # "yellow" is y + e + ll + ow, not a vowel group "ye"
    return parts


def _is_vowel(parts: list[str], i: int) -> bool:
    """Whether group ``i`` is a vowel; a ``y`` is one unless it starts the word (``sky``, not ``yes``)."""
    return parts[i][0] in "aeiou" or (parts[i][0] == "y" and i > 0)


def _candidates(word: str) -> list[tuple[str, str]]:
    """Every single-edit ``(non_word, edit)`` of a lower-case word, in a fixed order.

    Edits stay in the first syllable (its onset, vowel, or the single consonant after the vowel):
    that is where English stress mostly falls, and it leaves endings such as ``-ed``, ``-ing`` and
    ``-s`` alone, so the non-word keeps the word's shape.
    """
    parts = _segments(word)
    first = next((i for i in range(len(parts)) if _is_vowel(parts, i)), None)
    if first is None:
        return []
    out: list[tuple[str, str]] = []

    def edit(i: int, new: str, kind: str) -> None:
        out.append(("".join(parts[:i]) + new + "".join(parts[i + 1 :]), kind))

    if first == 1 and "q" not in parts[0]:
        for onset in _ONSETS:
            if onset != parts[0]:
                edit(0, onset, "onset")
    vowel = parts[first]
    # A final "e" is silent and a final "y" is the /i/ of "happy": they are not the syllable's vowel.
    if vowel in _VOWELS and not (first == len(parts) - 1 and vowel in ("e", "y")):
        for new in _VOWELS[vowel]:
            edit(first, new, "vowel")
    coda = first + 1
    if coda < len(parts) and parts[coda] in _CODAS:
        for new in _CODAS:
            if new != parts[coda]:
                edit(coda, new, "coda")
    return out


def espeak_phonemes(texts: Sequence[str], voice: str = "en-us", program: str = "espeak-ng") -> list[str]:
    """How espeak-ng pronounces each text, as its phoneme mnemonics without stress marks.

    All texts go to one ``espeak-ng -q -x`` process, one per line, so thousands take a second or two.

    Args:
        texts: single-line texts, usually single words.
        voice: the espeak-ng voice whose pronunciation rules apply.
        program: the espeak-ng executable.

    Returns:
        One phoneme string per text (``"world"`` → ``"w3:ld"``).

    Raises:
        SlammingError: espeak-ng is missing or fails.
    """
    if not texts:
        return []
    found = shutil.which(program)
    if found is None:
        raise SlammingError(
            f"the program {program!r} was not found on PATH; the lexical benchmark needs it to check how "
            "non-words sound: install it with `apt-get install espeak-ng` or `brew install espeak-ng`"
        )
    if any("\n" in t for t in texts):
        raise ValueError("espeak_phonemes takes single-line texts")
    result = subprocess.run(
        [found, "-q", "-x", "-v", voice],
        input=("\n".join(texts) + "\n").encode(),
        capture_output=True,
        check=False,
    )
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    if result.returncode != 0 or len(lines) != len(texts):
        raise SlammingError(
            f"espeak-ng gave {len(lines)} phoneme lines for {len(texts)} words (exit status "
            f"{result.returncode}); check that `espeak-ng -q -x -v {voice}` works"
        )
    return [_STRESS.sub("", line).strip() for line in lines]


def nonwords(words: Sequence[str], count: int = 1, seed: int = 0) -> dict[str, list[str]]:
    """Pronounceable non-words made from each word by one spelling edit (see the module doc).

    The candidates of a word are shuffled by a generator seeded with ``(seed, word)``; the first ones
    that pass the checks are kept. A non-word is never a word of the story vocabulary or of
    :data:`ENGLISH_GUARD`, and never *sounds* like one (espeak-ng's ``en-us`` phonemes, which also
    rules out an edit that does not change the sound, like ``world`` → ``wurld``), nor like a non-word
    given earlier, to this word or to one before it in ``words``. A name's non-words are capitalised.

    Args:
        words: the words, in the order in which they get first pick of the sounds.
        count: how many non-words per word at most.
        seed: seed of the choice among the candidates.

    Returns:
        ``{word: non-words}``, up to ``count`` each (fewer when a word has fewer valid edits).

    Raises:
        SlammingError: espeak-ng is missing (see :func:`espeak_phonemes`).
    """
    real = sorted(
        {w.lower() for w in story_vocabulary()} | ENGLISH_GUARD | _BLOCKED | {w.lower() for w in words}
    )
    spelled = set(real)
    candidates: dict[str, list[str]] = {}
    for word in words:
        options = [c for c, _ in _candidates(word.lower()) if c not in spelled]
        random.Random(f"slamming.nonwords:{seed}:{word.lower()}").shuffle(options)
        candidates[word] = list(dict.fromkeys(options))
    taken = set(_sounds(tuple(real)))
    chosen: dict[str, list[str]] = {word: [] for word in words}
    # Sound out a few candidates per word at a time: most pass, so one or two rounds are enough.
    start = 0
    while True:
        need = [w for w in words if len(chosen[w]) < count and len(candidates[w]) > start]
        if not need:
            break
        size = 2 * count + 2 if start == 0 else 8 * count
        batch = tuple(c for w in need for c in candidates[w][start : start + size])
        sounds = dict(zip(batch, _sounds(batch), strict=True))
        for word in need:
            for candidate in candidates[word][start : start + size]:
                if len(chosen[word]) < count and sounds[candidate] not in taken:
                    taken.add(sounds[candidate])
                    chosen[word].append(candidate)
        start += size
    return {w: [c[0].upper() + c[1:] if w[:1].isupper() else c for c in chosen[w]] for w in words}


@lru_cache(maxsize=8)
def _sounds(texts: tuple[str, ...]) -> list[str]:
    """Cached :func:`espeak_phonemes` (the vocabulary and guard words are sounded once per process)."""
    return espeak_phonemes(texts)
