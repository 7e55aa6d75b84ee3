"""The demo's long document: a deterministic field report on fictional research stations.

It reads like a real RAG source (sections, prose, many similar facts) and hides one answer among
similar sections, so a method that keeps the wrong text is visibly wrong.
"""

from __future__ import annotations

import random

_STATIONS = [
    "Halvard Ridge", "Corvin Bay", "Menzel Plateau", "Ostrava Fjord", "Keel Island", "Brannock Shelf",
    "Tessaly Point", "Quillon Basin", "Ardent Glacier", "Marrow Sound", "Velden Cape", "Sorrel Heights",
    "Dunmore Strait", "Ilsabet Moor", "Kestrel Lagoon", "Pellham Dome",
]
_LEADS = [
    "Dr. Ines Valcourt", "Dr. Tomasz Reyna", "Dr. Amara Lindqvist", "Dr. Oskar Baptiste", "Dr. Hana Okonkwo",
    "Dr. Lucien Marsh", "Dr. Priya Halloran", "Dr. Gustav Ferreira", "Dr. Mei Castellanos", "Dr. Rafael Nordin",
    "Dr. Selma Achterberg", "Dr. Jonah Whitcombe", "Dr. Noor Velasquez", "Dr. Elias Brandt", "Dr. Yara Kowalczyk",
    "Dr. Felix Adeyemi",
]
_INSTRUMENTS = [
    "a magnetometer array", "a cosmic-ray neutron monitor", "an ice-penetrating radar", "a seismic broadband vault",
    "an ozone lidar", "a tide-gauge network", "an aurora all-sky camera", "a permafrost borehole string",
]
_FILLER = [
    "Supply flights were delayed twice by crosswinds, and the crew rationed fuel for the generators.",
    "The winter-over team logged routine maintenance on the power plant and the water maker.",
    "Data were relayed nightly over the satellite link and archived at the coordinating office.",
    "A storm in the third week buried two instrument huts, which were dug out within a day.",
    "Calibration runs matched the previous season's reference values within the stated tolerance.",
    "The station doctor reported no serious injuries, only minor frostbite during a traverse.",
    "Field parties travelled by snowmobile to outlying sensors when visibility allowed.",
    "Visiting engineers replaced worn cabling and upgraded the station's network switches.",
]


def station_report(seed: int = 7, stations: int = 12) -> tuple[str, str, str]:
    """Return (document, question, answer). The answer is the access code of one station."""
    rng = random.Random(seed)
    names = rng.sample(_STATIONS, stations)
    leads = rng.sample(_LEADS, stations)
    codes = [f"{rng.randint(100, 999)}-{rng.choice('KLMNPRTVX')}{rng.randint(10, 99)}" for _ in names]
    target = rng.randrange(stations // 4, 3 * stations // 4)  # mid-document: neither first nor most recent
    # Only the asked station publishes a code: measured here, SmolLM2-135M answers 1 in 3 with a few
    # look-alike codes in 2k tokens even with the full context, so the demo keeps the retrieval honest but single.
    coded = {target}
    sections = ["Annual Field Report of the Northern Research Network", ""]
    for i, (name, lead, code) in enumerate(zip(names, leads, codes)):
        instrument = rng.choice(_INSTRUMENTS)
        founded = rng.randint(1961, 2009)
        staff = rng.randint(6, 41)
        filler = " ".join(rng.sample(_FILLER, 4))
        sections.append(
            f"Section {i + 1}: {name} station. Founded in {founded}, {name} is led by {lead} and houses "
            f"{instrument}. It kept a crew of {staff} this season. {filler} "
            + (f"The door access code for the {name} instrument hall is {code}. " if i in coded else "")
            + " ".join(rng.sample(_FILLER, 3))
        )
        sections.append("")
    question = f"What is the door access code for the {names[target]} instrument hall?"
    return "\n".join(sections).strip(), question, codes[target]
