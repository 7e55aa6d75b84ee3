"""Offline long-context tasks in the style of RULER (Hsieh et al., 2024), generated from a seed.

Nothing is downloaded: the haystack is filler prose written here from word lists and sentence templates
(or a haystack of distractor needles), keys and values are drawn from the seed, and every sample is sized
in the tokenizer of the model under test, to within 2% of the asked length.

Families (see :data:`TASKS`):
  * needle in a haystack: single needle; multi-key (distractor needles with other keys); multi-value (one
    key, several values, all asked); multi-query (several keys asked at once); keys/values as words, numbers
    or UUIDs; filler-prose or needle haystacks;
  * variable tracking: multi-hop assignment chains (``VAR ABCDE = 12345``, ``VAR FGHIJ = VAR ABCDE``) with a
    distractor chain, spread through filler prose;
  * common-words extraction (a numbered word list with ten frequent words) and frequent-words extraction
    (coded text with Zipf-distributed word counts);
  * question answering over a document the package writes (a project report, a device manual, meeting
    notes; :mod:`.documents`) whose answer needs two passages far apart, among distractor facts.

``length_tokens`` counts the tokens of the completion prompt (context, question and answer prefix) with
no special tokens; the question always comes after the context.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine.errors import ConfigError
from .documents import write_document

LENGTH_TOLERANCE = 0.02
MIN_LENGTH = 256
MAX_LENGTH = 131072

# ------------------------------------------------------------------------------------------------
# the sample


@dataclass(frozen=True)
class Sample:
    """One long-context question. ``answers`` are matched case-insensitively as substrings of the reply:
    ``match="all"`` needs every one (RULER's partial credit: the fraction found), ``"any"`` needs one."""

    id: str
    task: str
    context: str
    question: str
    answers: list[str]
    match: str
    length_tokens: int
    seed: int
    target_length: int
    answer_prefix: str = "Answer:"
    max_new_tokens: int = 32
    metadata: dict[str, Any] = field(default_factory=dict)

    def prompt(self, context: str | None = None) -> str:
        """The completion prompt: context, question, then the answer prefix the model continues from.

        ``context`` replaces the sample's context (a compressed one); the question is never touched.
        """
        ctx = self.context if context is None else context
        return f"{ctx}\n\n{self.question}\n{self.answer_prefix}"

    def messages(self, context: str | None = None) -> list[dict[str, str]]:
        """Chat messages: one user turn holding context and question (the answer prefix is not a message)."""
        ctx = self.context if context is None else context
        return [{"role": "user", "content": f"{ctx}\n\n{self.question}"}]

    def chat_prompt(self, tokenizer, context: str | None = None) -> str:
        """The chat-templated prompt as text, with the answer prefix already started in the assistant turn.

        Starting the assistant's reply with the prefix keeps small instruct models on the answer's format.
        Falls back to :meth:`prompt` for a tokenizer with no chat template.
        """
        if not getattr(tokenizer, "chat_template", None):
            return self.prompt(context)
        text = tokenizer.apply_chat_template(self.messages(context), tokenize=False, add_generation_prompt=True)
        return text + self.answer_prefix

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------
# filler prose: our own word lists and templates (no corpus), so the haystack is varied but neutral

_SUBJECTS = [
    "the gardener", "an old sailor", "the baker", "a quiet student", "the mayor", "my neighbour", "the painter",
    "a travelling musician", "the librarian", "the village doctor", "a young engineer", "the ferryman",
    "the shepherd", "a tired clerk", "the potter", "the astronomer", "a retired teacher", "the cartographer",
    "the beekeeper", "a curious child", "the innkeeper", "the weaver", "a patient fisherman", "the blacksmith",
    "the choir", "the committee", "a pair of hikers", "the night guard", "the tailor", "the gardeners' club",
]
_VERBS = [
    "repaired", "painted", "carried", "described", "measured", "admired", "cleaned", "visited", "studied",
    "photographed", "rebuilt", "sketched", "collected", "sorted", "polished", "examined", "borrowed", "returned",
    "planted", "watered", "mended", "catalogued", "counted", "decorated", "moved", "wrapped", "tested", "opened",
]
_OBJECTS = [
    "the wooden gate", "a basket of pears", "the copper kettle", "an old map", "the garden wall", "a row of lanterns",
    "the broken clock", "a stack of letters", "the blue boat", "the stone bridge", "a box of buttons",
    "the village well", "a jar of honey", "the iron railings", "a pile of firewood", "the orchard fence",
    "an unfinished quilt", "the church bell", "a set of brushes", "the narrow staircase", "a bundle of reeds",
    "the market stalls", "a crate of apples", "the weather vane", "a folded sail", "the reading lamp",
]
_PLACES = [
    "near the harbour", "behind the mill", "at the edge of the forest", "in the market square", "by the river",
    "on the hill above the town", "in the back garden", "beside the railway", "under the old oak",
    "inside the greenhouse", "along the coast road", "in the empty barn", "at the foot of the valley",
    "next to the bakery", "across the meadow", "in the upstairs room", "on the village green",
]
_TIMES = [
    "early in the morning", "after lunch", "before the rain came", "late in the evening", "on a windy afternoon",
    "during the spring fair", "while the kettle boiled", "at dusk", "in the first week of autumn",
    "when the bells rang", "on a cold winter day", "before anyone else woke", "after the storm had passed",
]
_ADJECTIVES = [
    "calm", "bright", "dusty", "narrow", "gentle", "crowded", "silent", "golden", "faded", "sturdy", "peaceful",
    "weathered", "cheerful", "misty", "ordinary", "careful", "slow", "patient", "warm", "crooked", "tidy",
]
_NOUNS = [
    "weather", "road", "garden", "conversation", "harvest", "afternoon", "workshop", "journey", "market",
    "evening", "light", "season", "kitchen", "meeting", "landscape", "music", "routine", "neighbourhood",
]
_FEELINGS = ["pleased", "surprised", "content", "amused", "relieved", "thoughtful", "proud", "puzzled"]

_TEMPLATES: list[Callable[[random.Random], str]] = [
    lambda r: f"{_c(r, _SUBJECTS).capitalize()} {_c(r, _VERBS)} {_c(r, _OBJECTS)} {_c(r, _PLACES)}.",
    lambda r: f"{_c(r, _TIMES).capitalize()}, {_c(r, _SUBJECTS)} {_c(r, _VERBS)} {_c(r, _OBJECTS)}.",
    lambda r: f"The {_c(r, _NOUNS)} was {_c(r, _ADJECTIVES)}, and {_c(r, _SUBJECTS)} seemed {_c(r, _FEELINGS)}.",
    lambda r: f"Nobody remembered who had {_c(r, _VERBS)} {_c(r, _OBJECTS)}, but it looked {_c(r, _ADJECTIVES)} "
    f"{_c(r, _TIMES)}.",
    lambda r: f"{_c(r, _SUBJECTS).capitalize()} said that the {_c(r, _NOUNS)} {_c(r, _PLACES)} was always "
    f"{_c(r, _ADJECTIVES)}.",
    lambda r: f"It was a {_c(r, _ADJECTIVES)} {_c(r, _NOUNS)}; {_c(r, _SUBJECTS)} walked {_c(r, _PLACES)} and "
    f"{_c(r, _VERBS)} {_c(r, _OBJECTS)}.",
    lambda r: f"According to {_c(r, _SUBJECTS)}, {_c(r, _OBJECTS)} had been {_c(r, _VERBS)} {_c(r, _TIMES)}.",
    lambda r: f"{_c(r, _TIMES).capitalize()} the {_c(r, _NOUNS)} felt {_c(r, _ADJECTIVES)} and a little "
    f"{_c(r, _ADJECTIVES)}.",
    lambda r: f"People often asked {_c(r, _SUBJECTS)} why {_c(r, _OBJECTS)} stood {_c(r, _PLACES)}.",
    lambda r: f"Later, {_c(r, _SUBJECTS)} {_c(r, _VERBS)} {_c(r, _OBJECTS)} again, {_c(r, _FEELINGS)} with the "
    f"result.",
]


def _c(rng: random.Random, items: Sequence[str]) -> str:
    return items[rng.randrange(len(items))]


def filler_sentences(rng: random.Random, n: int) -> list[str]:
    """``n`` neutral filler sentences (no digits, so numeric needles stand out only by meaning)."""
    return [_TEMPLATES[rng.randrange(len(_TEMPLATES))](rng) for _ in range(n)]


def _paragraphs(sentences: Sequence[str], rng: random.Random) -> str:
    out: list[str] = []
    line: list[str] = []
    for s in sentences:
        line.append(s)
        if len(line) >= 4 and rng.random() < 0.3:
            out.append(" ".join(line))
            line = []
    if line:
        out.append(" ".join(line))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# keys and values

_KEY_ADJ = [
    "amber", "brisk", "crimson", "dapper", "eager", "fabled", "gleaming", "hollow", "icy", "jolly", "keen",
    "lofty", "mellow", "nimble", "opal", "placid", "quaint", "rustic", "scarlet", "tranquil", "umber", "vivid",
    "wistful", "young", "zesty", "azure", "bold", "cobalt", "distant", "emerald", "frosty", "gentle", "hidden",
]
_KEY_NOUN = [
    "anchor", "badger", "canyon", "dolphin", "ember", "falcon", "glacier", "harbor", "island", "jaguar", "kestrel",
    "lantern", "meadow", "nebula", "orchard", "pebble", "quartz", "raven", "summit", "thistle", "umbrella",
    "violin", "walrus", "yarrow", "zephyr", "beacon", "cactus", "delta", "fjord", "garnet", "heron", "ivy",
]
_SYLLABLE_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "tr", "st", "gl"]
_SYLLABLE_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]


def _word_key(rng: random.Random) -> str:
    return f"{_c(rng, _KEY_ADJ)}-{_c(rng, _KEY_NOUN)}"


def _number(rng: random.Random) -> str:
    return str(rng.randrange(1_000_000, 10_000_000))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


_DRAW = {"words": _word_key, "numbers": _number, "uuids": _uuid}
_KIND_NOUN = {"words": "word", "numbers": "number", "uuids": "uuid"}


def _distinct(rng: random.Random, kind: str, n: int, avoid: set[str] | None = None) -> list[str]:
    seen = set(avoid or ())
    out: list[str] = []
    while len(out) < n:
        v = _DRAW[kind](rng)
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def pseudo_words(rng: random.Random, n: int, *, avoid: set[str] | None = None) -> list[str]:
    """``n`` distinct pronounceable made-up words (2-3 syllables)."""
    seen = set(avoid or ())
    out: list[str] = []
    while len(out) < n:
        w = "".join(_c(rng, _SYLLABLE_ONSETS) + _c(rng, _SYLLABLE_VOWELS) for _ in range(rng.choice((2, 2, 3))))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


# ------------------------------------------------------------------------------------------------
# task specs and builders. A builder maps (seed, units) -> parts; `units` (sentences, needles, list
# entries, words) grows the context monotonically and the sizing loop picks it to hit the length.


@dataclass(frozen=True)
class _Parts:
    context: str
    question: str
    answer_prefix: str
    answers: list[str]
    match: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    build: Callable[[int, int], _Parts]
    max_new_tokens: int
    tokens_per_unit: float  # a first guess; the sizing loop measures the real value


def _niah_builder(
    *,
    keys: str,
    values: str,
    haystack: str,
    num_needles: int = 1,
    num_values: int = 1,
    num_queries: int = 1,
) -> Callable[[int, int], _Parts]:
    """RULER's needle tasks. ``num_needles`` keys are placed (the rest are distractors), each with
    ``num_values`` values; ``num_queries`` of the keys are asked at once."""

    vnoun = _KIND_NOUN[values]

    def build(seed: int, units: int) -> _Parts:
        rng = random.Random(f"niah:{seed}")
        key_list = _distinct(rng, keys, num_needles)
        needles: list[tuple[str, str]] = []
        value_pool = _distinct(rng, values, num_needles * num_values)
        for i, k in enumerate(key_list):
            for j in range(num_values):
                needles.append((k, value_pool[i * num_values + j]))
        rng.shuffle(needles)
        queried = key_list[:num_queries]
        answers = [v for k, v in needles if k in queried]
        if num_values > 1 or num_queries > 1:
            # keep the answers in the order they are asked / appear, for readability only
            answers = [v for q in queried for k, v in needles if k == q]
        hay_rng = random.Random(f"hay:{seed}")
        if haystack == "essay":
            units_text = filler_sentences(hay_rng, units)
        else:  # a haystack of distractor needles with other keys and values
            dk = _distinct(hay_rng, keys, units, avoid=set(key_list))
            dv = _distinct(hay_rng, values, units, avoid=set(value_pool))
            units_text = [f"One of the special magic {vnoun}s for {k} is: {v}." for k, v in zip(dk, dv)]
        depths = sorted(rng.random() for _ in needles)
        positions = [round(d * units) for d in depths]
        pieces: list[str] = list(units_text)
        for pos, (k, v) in sorted(zip(positions, needles), key=lambda t: t[0], reverse=True):
            pieces.insert(pos, f"One of the special magic {vnoun}s for {k} is: {v}.")
        body = _paragraphs(pieces, hay_rng) if haystack == "essay" else "\n".join(pieces)
        intro = (
            f"Some special magic {vnoun}s are hidden within the following text. Make sure to memorize it. "
            f"I will quiz you about the {vnoun}s afterwards."
        )
        context = f"{intro}\n{body}"
        if num_queries > 1:
            q = ", ".join(queried[:-1]) + f" and {queried[-1]}"
            question = f"What are all the special magic {vnoun}s for {q} mentioned in the provided text?"
            prefix = f"Answer: The special magic {vnoun}s for {q} mentioned in the provided text are"
        elif num_values > 1:
            question = f"What are all the special magic {vnoun}s for {queried[0]} mentioned in the provided text?"
            prefix = f"Answer: The special magic {vnoun}s for {queried[0]} mentioned in the provided text are"
        else:
            question = f"What is the special magic {vnoun} for {queried[0]} mentioned in the provided text?"
            prefix = f"Answer: The special magic {vnoun} for {queried[0]} mentioned in the provided text is"
        meta = {"depths": [round(d, 4) for d in depths], "queried_keys": queried, "haystack": haystack}
        return _Parts(context, question, prefix, answers, "all", meta)

    return build


# RULER's repeated-noise haystack: the task is then only the chains, not finding them among prose.
_NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."


def _vt_builder(num_chains: int = 2, num_hops: int = 4, haystack: str = "essay") -> Callable[[int, int], _Parts]:
    """Variable tracking: chains ``VAR A = 12345. VAR B = VAR A. ...``; the question asks every variable
    that ends up holding the first chain's value. The other chains are distractors. ``haystack``: filler
    prose (``essay``) or RULER's repeated noise sentences (``noise``)."""

    def build(seed: int, units: int) -> _Parts:
        rng = random.Random(f"vt:{seed}")
        names: set[str] = set()

        def fresh() -> str:
            while True:
                n = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))
                if n not in names:
                    names.add(n)
                    return n

        values = _distinct(rng, "numbers", num_chains)
        chains: list[list[str]] = []
        statements: list[list[str]] = []
        for c in range(num_chains):
            chain = [fresh() for _ in range(num_hops + 1)]
            chains.append(chain)
            stm = [f"VAR {chain[0]} = {values[c]}."]
            stm += [f"VAR {chain[i]} = VAR {chain[i - 1]}." for i in range(1, len(chain))]
            statements.append(stm)
        hay_rng = random.Random(f"hay:{seed}")
        pieces = filler_sentences(hay_rng, units) if haystack == "essay" else [_NOISE] * units
        # Each chain keeps its order in the text: its statements go to sorted random depths.
        inserts: list[tuple[float, int, str]] = []
        for c, stm in enumerate(statements):
            depths = sorted(rng.random() for _ in stm)
            inserts += [(d, c, s) for d, s in zip(depths, stm)]
        for d, _c_, s in sorted(inserts, key=lambda t: t[0], reverse=True):
            pieces.insert(round(d * units), s)
        context = (
            "Memorize and track the chain(s) of variable assignment hidden in the following text.\n"
            + _paragraphs(pieces, hay_rng)
        )
        question = f"Question: Find all variables that are assigned the value {values[0]} in the text above."
        prefix = (
            f"Answer: According to the chain(s) of variable assignment in the text above, {num_hops + 1} variables "
            f"are assigned the value {values[0]}, they are:"
        )
        if haystack == "noise":  # a prefix that starts the list: the 135M model otherwise recites the noise
            prefix = f"Answer: The variables assigned the value {values[0]} are VAR"
        return _Parts(context, question, prefix, list(chains[0]), "all", {"value": values[0], "chains": chains})

    return build


def _cwe_builder(num_common: int = 10) -> Callable[[int, int], _Parts]:
    """Common-words extraction: a numbered list of made-up words in which ``num_common`` words appear many
    times and the rest about three times; the question asks for the ten most common."""

    def build(seed: int, units: int) -> _Parts:
        rng = random.Random(f"cwe:{seed}")
        n = max(units, num_common * 6)
        freq_common = max(5, min(30, n // 25))
        rest = n - num_common * freq_common
        n_uncommon = max(1, rest // 3)
        words = pseudo_words(rng, num_common + n_uncommon)
        common, uncommon = words[:num_common], words[num_common:]
        entries = [w for w in common for _ in range(freq_common)]
        entries += [w for w in uncommon for _ in range(3)]
        # pad to exactly n with single extra mentions of uncommon words (at most 4 each, < freq_common)
        i = 0
        while len(entries) < n:
            entries.append(uncommon[i % len(uncommon)])
            i += 1
        entries = entries[:n] if len(entries) > n else entries
        rng.shuffle(entries)
        context = "Below is a numbered list of words. In these words, some appear more often than others.\n"
        context += "\n".join(f"{i + 1}. {w}" for i, w in enumerate(entries))
        question = f"Question: What are the {num_common} most common words in the above list?"
        prefix = f"Answer: The top {num_common} words that appear most often in the list are:"
        return _Parts(context, question, prefix, list(common), "all", {"freq_common": freq_common})

    return build


def _fwe_builder(alpha: float = 2.0, top: int = 3) -> Callable[[int, int], _Parts]:
    """Frequent-words extraction: coded text whose word counts follow a Zipf law; the three most frequent
    coded words are asked. Counts are assigned by rank so the top three are strictly the most frequent."""

    def build(seed: int, units: int) -> _Parts:
        rng = random.Random(f"fwe:{seed}")
        n = max(units, 60)
        vocab = pseudo_words(rng, max(40, n // 8))
        weights = [1.0 / (k + 1) ** alpha for k in range(len(vocab))]
        total = sum(weights)
        counts = [max(1, int(n * w / total)) for w in weights]
        # Trim whole words off the tail, or give the surplus to the top word: either way the ranks of the
        # top words stay strict, and the text has exactly n words.
        k = len(counts) - 1
        while sum(counts) > n and k > top:
            counts[k] = max(0, counts[k] - (sum(counts) - n))
            k -= 1
        counts[0] += n - sum(counts)
        seq = [w for w, c in zip(vocab, counts) for _ in range(c)]
        rng.shuffle(seq)
        lines = [" ".join(seq[i : i + 12]) for i in range(0, len(seq), 12)]
        context = (
            "Read the following coded text and track the frequency of each coded word. Find the three most "
            "frequently appeared coded words.\n" + " ...\n".join(lines)
        )
        question = "Question: Do not provide any explanation. What are the three most frequently appeared words in the above coded text?"
        prefix = "Answer: According to the coded text above, the three most frequently appeared words are:"
        return _Parts(context, question, prefix, vocab[:top], "all", {"top_counts": counts[: top + 1]})

    return build


def _docqa_builder(kind: str) -> Callable[[int, int], _Parts]:
    """Document QA (:func:`.documents.write_document`); ``units`` are its routine sentences."""

    def build(seed: int, units: int) -> _Parts:
        doc = write_document(kind, seed, units)
        return _Parts(doc.context, doc.question, doc.answer_prefix, list(doc.answers), "all", dict(doc.metadata))

    return build


TASKS: dict[str, TaskSpec] = {
    "niah_single": TaskSpec(
        "niah_single", "one word key, 7-digit number value, filler prose", _niah_builder(keys="words", values="numbers", haystack="essay"), 24, 14.0
    ),
    "niah_single_uuid": TaskSpec(
        "niah_single_uuid", "one word key, UUID value, filler prose", _niah_builder(keys="words", values="uuids", haystack="essay"), 48, 14.0
    ),
    "niah_single_numkey": TaskSpec(
        "niah_single_numkey", "one number key, word value, filler prose", _niah_builder(keys="numbers", values="words", haystack="essay"), 24, 14.0
    ),
    "niah_multikey": TaskSpec(
        "niah_multikey", "4 keys placed (3 distractors), one asked, filler prose", _niah_builder(keys="words", values="numbers", haystack="essay", num_needles=4), 24, 14.0
    ),
    "niah_multikey_needles": TaskSpec(
        "niah_multikey_needles", "one asked key in a haystack made only of distractor needles (word keys, number values)", _niah_builder(keys="words", values="numbers", haystack="needles"), 24, 22.0
    ),
    "niah_multikey_uuid": TaskSpec(
        "niah_multikey_uuid", "UUID key and value in a haystack of UUID needles", _niah_builder(keys="uuids", values="uuids", haystack="needles"), 48, 60.0
    ),
    "niah_multivalue": TaskSpec(
        "niah_multivalue", "one key with 4 values, all asked", _niah_builder(keys="words", values="numbers", haystack="essay", num_values=4), 64, 14.0
    ),
    "niah_multiquery": TaskSpec(
        "niah_multiquery", "4 keys placed, all 4 asked at once", _niah_builder(keys="words", values="numbers", haystack="essay", num_needles=4, num_queries=4), 64, 14.0
    ),
    "vt": TaskSpec("vt", "variable tracking: 2 chains of 4 hops, one asked", _vt_builder(), 40, 14.0),
    "vt_noise": TaskSpec("vt_noise", "variable tracking: 2 chains of 4 hops, one asked, RULER's noise haystack", _vt_builder(haystack="noise"), 40, 20.0),
    "cwe": TaskSpec("cwe", "common-words extraction: the 10 most common of a numbered word list", _cwe_builder(), 96, 5.0),
    "fwe": TaskSpec("fwe", "frequent-words extraction: the 3 most frequent coded words (Zipf)", _fwe_builder(), 32, 3.0),
    "qa_report": TaskSpec(
        "qa_report", "project report: two facts of one project from two passages (budget, deadline, site)", _docqa_builder("report"), 40, 20.0
    ),
    "qa_manual": TaskSpec(
        "qa_manual", "device manual: two facts of one component from two passages (part number, interval, torque)", _docqa_builder("manual"), 40, 20.0
    ),
    "qa_meeting": TaskSpec(
        "qa_meeting", "meeting notes: two facts of one agenda item from two passages (owner, due date, cost)", _docqa_builder("meeting"), 40, 20.0
    ),
}


# ------------------------------------------------------------------------------------------------
# sizing and generation


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _assemble(spec: TaskSpec, parts: _Parts, *, seed: int, index: int, length: int, tokens: int) -> Sample:
    return Sample(
        id=f"{spec.name}-{length}-{seed}-{index}",
        task=spec.name,
        context=parts.context,
        question=parts.question,
        answers=list(parts.answers),
        match=parts.match,
        length_tokens=tokens,
        seed=seed,
        target_length=length,
        answer_prefix=parts.answer_prefix,
        max_new_tokens=spec.max_new_tokens,
        metadata=dict(parts.metadata),
    )


def make_sample(task: str, length: int, tokenizer, *, seed: int = 0, index: int = 0) -> Sample:
    """One sample of ``task`` whose completion prompt is ``length`` tokens (within 2%) in ``tokenizer``."""
    spec = task_spec(task)
    if isinstance(length, bool) or not isinstance(length, int) or not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ConfigError(f"length must be an integer number of tokens in [{MIN_LENGTH}, {MAX_LENGTH}], got {length!r}")
    # Each (task, seed, index) draws from its own stream: tasks sharing a builder get different needles.
    sample_seed = random.Random(f"{spec.name}:{seed}:{index}").getrandbits(48)
    tol = max(1, int(length * LENGTH_TOLERANCE))

    def measure(units: int) -> tuple[int, _Parts]:
        parts = spec.build(sample_seed, units)
        probe = Sample("", "", parts.context, parts.question, [], "all", 0, 0, 0, parts.answer_prefix)
        return _count(tokenizer, probe.prompt()), parts

    cache: dict[int, tuple[int, _Parts]] = {}

    def at(units: int) -> tuple[int, _Parts]:
        if units not in cache:
            cache[units] = measure(units)
        return cache[units]

    fixed, _ = at(0)
    units = max(1, round((length - fixed) / spec.tokens_per_unit))
    # Secant steps on the measured tokens-per-unit, then single-unit steps to land inside the tolerance.
    for _ in range(8):
        tokens, _ = at(units)
        if abs(tokens - length) <= tol // 2:
            break
        per_unit = max(0.5, (tokens - fixed) / units)
        units = max(1, units + round((length - tokens) / per_unit))
    best = min(cache.items(), key=lambda kv: abs(kv[1][0] - length))
    units = best[0]
    for _ in range(200):
        tokens, _ = at(units)
        if abs(tokens - length) <= tol:
            break
        units += 1 if tokens < length else -1
        if units < 1:
            break
    best_units, (tokens, parts) = min(cache.items(), key=lambda kv: abs(kv[1][0] - length))
    if abs(tokens - length) > tol:
        raise ConfigError(
            f"could not size task {task!r} to {length} tokens (closest {tokens}); try another length or tokenizer"
        )
    return _assemble(spec, parts, seed=seed, index=index, length=length, tokens=tokens)


def task_spec(task: str) -> TaskSpec:
    spec = TASKS.get(task)
    if spec is None:
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return spec


def generate_samples(
    tasks: Sequence[str], lengths: Sequence[int], num_samples: int, tokenizer, *, seed: int = 0
) -> list[Sample]:
    """Every (task, length, index) sample, deterministic in ``seed`` and the tokenizer."""
    if num_samples < 1:
        raise ConfigError(f"num_samples must be >= 1, got {num_samples}")
    return [
        make_sample(t, n, tokenizer, seed=seed, index=i) for t in tasks for n in lengths for i in range(num_samples)
    ]
