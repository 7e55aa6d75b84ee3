"""Realistic multi-paragraph documents with questions whose answer needs two passages, written offline.

Three kinds of document (:data:`KINDS`): a project report, a device manual and meeting notes. Each is a
title, an opening paragraph, then ``units`` sentences of that kind's routine prose in paragraphs of two to
four (templates over word lists, with people and places drawn from the seed), among which the fact
passages are set as paragraphs of their own (a fact set among routine sentences halved SmolLM2-135M's
full-KV accuracy, to 13-38% at 2k tokens).

A sample asks about one *entity* (a project, a component, an agenda item): two facts about it, each stated
in its own passage ("The approved budget of the Harwick upgrade is 482,000 euros." ... "The deadline of the
Harwick upgrade is 14 March 2026."), both asked at once and scored with partial credit.

The two passages about the asked entity sit far apart: one in the first 35% of the paragraphs, the other in
the last 35%, in either order. Distractor entities of the same shape get the same kinds of facts with other
values, at random depths, so one retrieved sentence is never enough. Routine prose carries no full dates,
part numbers, amounts in thousands or fact people, so every answer string occurs in the document once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

NUM_ENTITIES = 3  # the asked entity and two distractors of the same shape (three: 19-38% full KV at 2k)
FAR_LOW, FAR_HIGH = 0.35, 0.65  # one asked passage before FAR_LOW of the paragraphs, the other after FAR_HIGH

Draw = Callable[[random.Random], str]


def _c(rng: random.Random, items: Sequence[str]) -> str:
    return items[rng.randrange(len(items))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------------------------------------
# shared word lists: people and places

_FIRST = [
    "Dana", "Priya", "Tomas", "Ingrid", "Kwame", "Lucia", "Mateo", "Hannah", "Yusuf", "Elena", "Oskar", "Amara",
    "Bernard", "Chiara", "Dmitri", "Fatima", "Gareth", "Helena", "Isaac", "Joanna", "Kenji", "Leila", "Marcus",
    "Nadia", "Owen", "Paulina", "Rafael", "Sofia", "Theo", "Ursula", "Victor", "Wen", "Ximena", "Yara", "Zoltan",
]
_LAST = [
    "Okafor", "Nair", "Lindqvist", "Brennan", "Mensah", "Ferreira", "Kowalski", "Haddad", "Tanaka", "Moreau",
    "Schneider", "Petrov", "Alvarez", "Osei", "Novak", "Fischer", "Rossi", "Byrne", "Castillo", "Dubois",
    "Eriksen", "Gallagher", "Hoffman", "Ivanova", "Jansen", "Kumar", "Larsen", "Mbeki", "Nakamura", "Oliveira",
]
_CITIES = [
    "Lisbon", "Rotterdam", "Krakow", "Leeds", "Bilbao", "Tampere", "Graz", "Porto", "Gdansk", "Aarhus", "Lyon",
    "Turin", "Brno", "Ghent", "Malmo", "Cork", "Bergen", "Seville", "Utrecht", "Dresden", "Valencia", "Linz",
]
_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
]


def _person(rng: random.Random) -> str:
    return f"{_c(rng, _FIRST)} {_c(rng, _LAST)}"


def _date(rng: random.Random) -> str:
    return f"{rng.randrange(1, 29)} {_c(rng, _MONTHS)} {rng.choice((2025, 2026, 2027))}"


def _day_month(rng: random.Random) -> str:
    return f"{rng.randrange(1, 29)} {_c(rng, _MONTHS)}"


def _thousands(rng: random.Random) -> str:
    return f"{rng.randrange(120, 990)},{rng.randrange(0, 10)}00"


def _pct(rng: random.Random) -> str:
    return f"{rng.randrange(3, 97)} percent"


# ------------------------------------------------------------------------------------------------
# the kinds of document


@dataclass(frozen=True)
class Fact:
    """One kind of fact about an entity: ``noun`` names it ("the budget"), ``draw`` makes a value; the
    passage is "The {noun} of {entity} is {value}{tail}." The question and the answer prefix use the same
    words: SmolLM2-135M finds a fact it can copy after a matching phrase, and rarely one it must recognise
    under other wording (measured: 6-13% full-KV accuracy with reworded passages)."""

    noun: str
    draw: Draw
    tail: str = ""

    def state(self, entity: str, value: str) -> str:
        return f"{self.opening(entity)} {value}{self.tail}."

    def opening(self, entity: str) -> str:
        return f"{_cap(self.noun)} of {entity} is"


@dataclass(frozen=True)
class Kind:
    name: str
    title: Callable[[random.Random], str]
    opening: tuple[str, ...]  # the first paragraph's sentences ({title})
    entity: Draw  # an entity's name, lower case ("the Harwick upgrade")
    facts: dict[str, Fact]
    pairs: tuple[tuple[str, str], ...]  # the fact pairs a ``pair`` question asks
    things: tuple[str, ...]  # what the routine prose talks about, less the sample's entities
    filler: tuple[Callable[[random.Random, "Pools"], str], ...]  # routine sentences
    heading: Callable[[random.Random, int], str] | None = None  # a line before some paragraphs


# -- a project report ----------------------------------------------------------------------------

_CODENAMES = [
    "Harwick", "Marlow", "Tilden", "Corvane", "Ashby", "Brightwater", "Dunmore", "Elsworth", "Fenwick", "Glenrock",
    "Holloway", "Kestrel", "Larchmont", "Millbrook", "Northgate", "Oakhurst", "Pemberton", "Redcliff", "Stanmore",
    "Thornbury", "Westfield", "Yardley", "Calder", "Alder", "Bramley", "Cresswell", "Draycott", "Everly",
]
_PROJECT_TYPES = [
    "upgrade", "data migration", "warehouse expansion", "network rollout", "plant refit", "system rollout",
    "office relocation", "billing overhaul", "fleet renewal", "safety programme", "platform rebuild",
]
_DEPARTMENTS = [
    "finance", "procurement", "operations", "logistics", "customer service", "facilities", "engineering",
    "quality assurance", "human resources", "sales", "legal", "IT support",
]
_WORK_ITEMS = [
    "the supplier framework", "the training schedule", "the maintenance backlog", "the new reporting dashboard",
    "the vendor onboarding process", "the annual stock count", "the internal audit", "the service catalogue",
    "the travel policy", "the recruitment drive", "the document archive", "the pilot with two regional clients",
]
_STATUSES = [
    "is on track", "has slipped by two weeks", "was completed ahead of plan", "is waiting for sign-off",
    "has been paused pending review", "is progressing more slowly than expected", "was handed over to operations",
]
_TRENDS = ["stable", "slightly lower", "higher than forecast", "broadly unchanged", "lower than last year"]
_RISKS = [
    "delays in component deliveries", "rising energy costs", "a shortage of qualified technicians",
    "changes to the import regulations", "the dependency on a single supplier", "exchange-rate movements",
]
_REPORT_SECTIONS = [
    "Operations", "Finance", "People", "Projects", "Risks and issues", "Facilities", "Customers", "Outlook",
]

_REPORT_FILLER: tuple[Callable[[random.Random, "Pools"], str], ...] = (
    lambda r, x: f"The {_c(r, _DEPARTMENTS)} team reports that {_c(r, _WORK_ITEMS)} {_c(r, _STATUSES)}.",
    lambda r, x: f"{_c(r, x.people)}, who leads {_c(r, _DEPARTMENTS)}, noted that staff turnover remained "
    f"{_c(r, _TRENDS)} over the period.",
    lambda r, x: f"Customer satisfaction reached {_pct(r)} in the latest survey, with most comments about "
    f"response times.",
    lambda r, x: "Among the risks recorded this quarter are {} and {}.".format(*r.sample(_RISKS, 2)),
    lambda r, x: f"The board reviewed {_c(r, _WORK_ITEMS)} and asked {_c(r, x.people)} for a short written update "
    f"before the next meeting.",
    lambda r, x: f"Spending in {_c(r, _DEPARTMENTS)} was {_c(r, _TRENDS)}, at about {_pct(r)} of the annual plan.",
    lambda r, x: f"In {_c(r, x.cities)}, {_c(r, _WORK_ITEMS)} {_c(r, _STATUSES)}, according to {_c(r, x.people)}.",
    lambda r, x: f"Headcount in {_c(r, _DEPARTMENTS)} rose by {r.randrange(2, 19)} people, mostly on "
    f"fixed-term contracts.",
    lambda r, x: f"{_c(r, x.people)} has agreed to coordinate {_c(r, _WORK_ITEMS)} with the {_c(r, _DEPARTMENTS)} team.",
    lambda r, x: f"Energy use at the {_c(r, x.cities)} site fell by {_pct(r)} after the lighting was replaced.",
)

REPORT = Kind(
    name="report",
    title=lambda r: f"Quarterly progress report, {_c(r, _CODENAMES)} Holdings, Q{r.randrange(1, 5)}",
    opening=(
        "{title}.",
        "This report summarises the progress of the company's projects, departments and sites over the quarter.",
        "Figures are provisional until the annual accounts are audited.",
    ),
    entity=lambda r: f"the {_c(r, _CODENAMES)} {_c(r, _PROJECT_TYPES)}",
    facts={
        "budget": Fact("the approved budget", _thousands, " euros"),
        "deadline": Fact("the deadline", _date),
        "site": Fact("the site", lambda r: _c(r, _CITIES), ", where most of its work is done"),
    },
    pairs=(("budget", "deadline"), ("deadline", "site"), ("budget", "site")),
    things=tuple(_WORK_ITEMS),
    filler=_REPORT_FILLER,
    heading=lambda r, i: f"Section {i}. {_c(r, _REPORT_SECTIONS)}",
)


# -- a device manual -----------------------------------------------------------------------------

_BRANDS = ["Vantor", "Kelbrook", "Ostra", "Meridian", "Halden", "Brevik", "Corelle", "Tamsin", "Zeltra", "Norvik"]
_DEVICES = [
    "label printer", "industrial dishwasher", "air compressor", "coffee roaster", "laser engraver",
    "floor scrubber", "vacuum packer", "heat pump", "bench lathe", "laminating press",
]
_COMPONENTS = [
    "feed roller", "cutter blade", "intake filter", "drive belt", "print head", "cooling fan", "main fuse",
    "pressure sensor", "door seal", "spray arm", "water pump", "control board", "heating element",
    "exhaust valve", "display panel", "tension spring", "idler pulley", "drain hose", "thermal cutout",
    "level switch", "brush motor", "rear bearing", "nozzle plate", "safety interlock",
]
_ADJUSTABLE = [
    "the operating temperature", "the belt tension", "the fan speed", "the standby timeout", "the feed rate",
    "the display brightness", "the pressure limit", "the rinse duration", "the alarm volume", "the idle speed",
]
_TOOLS = ["a soft brush", "a lint-free cloth", "a 4 mm hex key", "a flat screwdriver", "mild detergent"]
_WARNINGS = [
    "disconnect the mains supply", "let the unit cool down", "release the stored pressure",
    "remove the power cord from the socket", "wear protective gloves", "empty the collection tray",
]
_SYMPTOMS = [
    "the unit makes a rattling noise", "the status light flashes amber", "the output is uneven",
    "the unit stops after a few minutes", "the display shows no reading", "water collects under the unit",
]

_MANUAL_FILLER: tuple[Callable[[random.Random, "Pools"], str], ...] = (
    lambda r, x: f"Before any cleaning or adjustment, {_c(r, _WARNINGS)}.",
    lambda r, x: f"Use {_c(r, _TOOLS)} to remove dust from the housing and the ventilation slots.",
    lambda r, x: f"{_cap(_c(r, _ADJUSTABLE))} can be changed in the settings menu; the factory value suits "
    f"most installations.",
    lambda r, x: f"If {_c(r, _SYMPTOMS)}, check that the {_c(r, x.things)} is seated correctly before "
    f"calling service.",
    lambda r, x: f"Press and hold the menu button for {r.randrange(2, 9)} seconds to return to the main screen.",
    lambda r, x: f"Do not operate the unit when {_c(r, _SYMPTOMS)}; switch it off and {_c(r, _WARNINGS)}.",
    lambda r, x: f"The unit should stand on a level surface with at least {r.randrange(10, 40)} centimetres of "
    f"free space on each side.",
    lambda r, x: f"A weekly visual inspection of the {_c(r, x.things)} helps to catch wear early.",
    lambda r, x: f"After a power cut, the unit restarts with {_c(r, _ADJUSTABLE)} restored to its last value.",
    lambda r, x: f"Keep the {_c(r, x.things)} free of debris and {_c(r, _WARNINGS)} before touching it.",
)


def _part_number(rng: random.Random) -> str:
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTVWXZ") for _ in range(2))
    return f"{letters}-{rng.randrange(1000, 10000)}"


MANUAL = Kind(
    name="manual",
    title=lambda r: f"{_c(r, _BRANDS)} {_c(r, 'KMRTX')}{r.randrange(2, 9)} {_c(r, _DEVICES)}: operating and "
    f"service manual",
    opening=(
        "{title}.",
        "Read this manual before installing, operating or servicing the unit, and keep it near the unit.",
        "Only trained personnel should replace internal components.",
    ),
    entity=lambda r: f"the {_c(r, _COMPONENTS)}",  # routine prose names components "the {thing}" too
    facts={
        "part": Fact("the part number", _part_number, "; quote it when ordering"),
        "interval": Fact("the replacement interval", lambda r: f"{r.randrange(3, 60) * 100} hours", " of operation"),
        "torque": Fact(
            "the tightening torque", lambda r: f"{r.randrange(2, 40)}.{r.randrange(1, 10)} Nm", " for its fixing screws"
        ),
    },
    pairs=(("part", "interval"), ("interval", "torque"), ("part", "torque")),
    things=tuple(_COMPONENTS),
    filler=_MANUAL_FILLER,
    heading=lambda r, i: f"{i}. {_c(r, ('Maintenance', 'Troubleshooting', 'Settings', 'Installation', 'Safety', 'Cleaning'))}",
)


# -- meeting notes -------------------------------------------------------------------------------

_TOPICS = [
    "supplier contract review", "office move", "website redesign", "customer survey", "hiring plan",
    "security audit", "price list update", "staff training day", "warehouse inventory", "newsletter launch",
    "software licence renewal", "trade fair stand", "expense policy", "onboarding guide", "printer replacement",
    "parking rota", "client workshop", "data backup test", "catering tender", "annual party",
]
_MEETING_VERBS = ["noted", "pointed out", "mentioned", "reminded everyone", "reported", "confirmed"]
_CLAIMS = [
    "the minutes of the last meeting were approved without changes", "the shared calendar is out of date",
    "two team members are on leave next week", "the meeting room booking system is unreliable",
    "feedback from the last workshop was mostly positive", "the budget spreadsheet needs a clearer layout",
    "the agenda should be circulated earlier", "the new intranet page has had few visitors",
]

_MEETING_FILLER: tuple[Callable[[random.Random, "Pools"], str], ...] = (
    lambda r, x: f"{_c(r, x.people)} {_c(r, _MEETING_VERBS)} that {_c(r, _CLAIMS)}.",
    lambda r, x: f"The group discussed the {_c(r, x.things)} briefly; no decision was needed this week.",
    lambda r, x: f"{_c(r, x.people)} gave an update on the {_c(r, x.things)}, which {_c(r, _STATUSES)}.",
    lambda r, x: f"It was agreed to revisit the {_c(r, x.things)} at a later meeting once more information is "
    f"available.",
    lambda r, x: "{} and {} will compare notes on the {} before Friday.".format(*r.sample(x.people, 2), _c(r, x.things)),
    lambda r, x: f"About {_pct(r)} of the team answered the poll on the {_c(r, x.things)}.",
    lambda r, x: "There were no objections when {} proposed to merge the {} with the {}.".format(
        _c(r, x.people), *r.sample(x.things, 2)
    ),
    lambda r, x: f"{_c(r, x.people)} {_c(r, _MEETING_VERBS)} that {_c(r, _CLAIMS)}, and the chair agreed.",
)

MEETING = Kind(
    name="meeting",
    title=lambda r: f"Minutes of the {_c(r, _CODENAMES)} team meeting, {_c(r, _CITIES)} office",
    opening=(
        "{title}.",
        "Present: the members of the coordination team; the chair opened the meeting and went through the agenda.",
        "Action items are recorded with an owner and a due date.",
    ),
    entity=lambda r: f"the {_c(r, _TOPICS)}",
    facts={
        "owner": Fact("the owner", _person, ", who will report back on it"),
        "due": Fact("the due date", _day_month),
        "cost": Fact("the approved cost", _thousands, " euros"),
    },
    pairs=(("owner", "due"), ("due", "cost"), ("owner", "cost")),
    things=tuple(_TOPICS),
    filler=_MEETING_FILLER,
    heading=lambda r, i: f"Item {i}.",
)

KINDS: dict[str, Kind] = {k.name: k for k in (REPORT, MANUAL, MEETING)}


# ------------------------------------------------------------------------------------------------
# writing one document


@dataclass(frozen=True)
class Pools:
    """What routine prose may name: people, cities and things that carry no fact of the sample."""

    people: tuple[str, ...]
    cities: tuple[str, ...]
    things: tuple[str, ...]


@dataclass(frozen=True)
class DocumentQA:
    context: str
    question: str
    answer_prefix: str
    answers: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Passage:
    sentence: str
    entity: int  # index of the entity it belongs to (0: the asked one)


def _distinct_values(rng: random.Random, draw: Draw, n: int, avoid: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        v = draw(rng)
        # no value inside another (a drawer "23" inside a part "AB-2345"): each answer occurs once
        if not any(v in o or o in v for o in (*avoid, *out)):
            out.append(v)
    avoid.update(out)
    return out


def _plan_pair(kind: Kind, rng: random.Random, entities: list[str], used: set[str]):
    """Two facts per entity, one passage each; the asked entity's two values are the answers."""
    a, b = kind.pairs[rng.randrange(len(kind.pairs))]
    values = {f: _distinct_values(rng, kind.facts[f].draw, len(entities), used) for f in (a, b)}
    passages = [
        (_Passage(kind.facts[f].state(e, values[f][i]), i), f) for i, e in enumerate(entities) for f in (a, b)
    ]
    fa, fb = kind.facts[a], kind.facts[b]
    entity = entities[0]
    question = f"What is {fa.noun} of {entity}, and what is {fb.noun} of {entity}?"
    prefix = f"Answer: {fa.opening(entity)}"
    answers = [values[a][0], values[b][0]]
    distractors = [v for f in (a, b) for v in values[f][1:]]
    return passages, question, prefix, answers, distractors, [a, b]


def _entities(kind: Kind, rng: random.Random) -> list[str]:
    """NUM_ENTITIES names with no word in common past "the" ("the Harwick upgrade" and "the Harwick data
    migration" would differ by a word the question barely weighs)."""
    out: list[str] = []
    while len(out) < NUM_ENTITIES:
        e = kind.entity(rng)
        if not any(set(e.split()[1:]) & set(o.split()[1:]) for o in out):
            out.append(e)
    return out


def _routine_paragraph(kind: Kind, rng: random.Random, pools: Pools, n: int) -> str:
    return " ".join(kind.filler[rng.randrange(len(kind.filler))](rng, pools) for _ in range(n))


def _routine_paragraphs(kind: Kind, stream: str, pools: Pools, units: int) -> list[str]:
    """``units`` routine sentences in paragraphs of 2-4. Sentences and paragraph lengths come from their own
    streams, so one more unit adds one sentence and leaves the text before it as it was (the sizing loop
    steps by about 20 tokens, inside the 2% tolerance of even a 1k sample)."""
    says, breaks = random.Random(f"dochay:{stream}"), random.Random(f"docbreak:{stream}")
    sentences: list[str] = []
    while len(sentences) < units:
        s = _routine_paragraph(kind, says, pools, 1)
        if not sentences or s != sentences[-1]:  # a sentence never says again what the last one said
            sentences.append(s)
    out: list[str] = []
    while sentences:
        n = breaks.randrange(2, 5)
        out.append(" ".join(sentences[:n]))
        sentences = sentences[n:]
    return out


def _slots(rng: random.Random, passages: list[tuple[_Passage, str]]) -> list[float]:
    """Depths in [0, 1] of the passages: the asked entity's two far apart (one below FAR_LOW, the other
    above FAR_HIGH, either order), the distractors' anywhere."""
    first, second = rng.uniform(0.02, FAR_LOW), rng.uniform(FAR_HIGH, 0.98)
    if rng.random() < 0.5:
        first, second = second, first
    asked = iter((first, second))
    return [next(asked) if p.entity == 0 else rng.random() for p, _ in passages]


def _pools(kind: Kind, rng: random.Random, entities: list[str], used: set[str]) -> Pools:
    people = _distinct_values(rng, _person, 8, set(used))
    cities = tuple(c for c in _CITIES if c not in used)
    things = tuple(t for t in kind.things if f"the {t}" not in entities)
    return Pools(tuple(people), cities, things)


def write_document(kind_name: str, seed: int, units: int) -> DocumentQA:
    """A ``kind_name`` document with ``units`` routine sentences and its question, from ``seed``."""
    kind = KINDS[kind_name]
    rng = random.Random(f"doc:{kind_name}:{seed}")
    entities = _entities(kind, rng)
    used = set(entities)
    passages, question, prefix, answers, distractors, asked = _plan_pair(kind, rng, entities, used)
    pools = _pools(kind, rng, entities, used)
    title = kind.title(rng)
    while any(w[0].isupper() and w in title for e in entities for w in e.split()):  # no entity's codename
        title = kind.title(rng)
    depths = _slots(rng, passages)
    paragraphs = _routine_paragraphs(kind, f"{kind_name}:{seed}", pools, units)
    slots = len(paragraphs)
    for depth, i in sorted(zip(depths, range(len(passages))), reverse=True):
        paragraphs.insert(round(depth * slots), passages[i][0].sentence)
    hay = random.Random(f"dochead:{kind_name}:{seed}")
    if kind.heading is not None:
        paragraphs = [f"{kind.heading(hay, i // 5 + 1)}\n{p}" if i % 5 == 0 else p for i, p in enumerate(paragraphs)]
    opening = " ".join(kind.opening).format(title=title)
    context = "\n\n".join([opening, *paragraphs])
    asked_passages = [p.sentence for p, _ in passages if p.entity == 0]
    offsets = [context.index(s) for s in asked_passages]
    meta = {
        "kind": kind_name,
        "entity": entities[0],
        "asked": asked,
        "passages": asked_passages,
        "passage_offsets": offsets,
        "passage_depths": [round(o / len(context), 4) for o in offsets],
        "distractor_entities": entities[1:],
        "distractor_values": distractors,
    }
    return DocumentQA(context, question, prefix, answers, meta)
