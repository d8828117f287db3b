"""`private-records`: seeded synthetic records full of PII, made with `faker`, with every span known exactly.

Short natural sentences (22-45 SmolLM2 tokens, median 28; digits are one token each) from ten templates,
each carrying three or four kinds of PII out of: names, e-mail addresses, phone numbers, street addresses,
ID numbers (SSN-like or member ids), dates of birth and diagnoses from a fixed list of real conditions.
The same seed gives the same records (for a given `faker` version: faker's providers supply the values).
"""
from __future__ import annotations

import random
import re
import string
from collections.abc import Callable

from faker import Faker

from flbench.data.records import PiiSpan, Record

DIAGNOSES = (
    "type 2 diabetes", "hypertension", "asthma", "major depressive disorder", "rheumatoid arthritis",
    "chronic kidney disease", "multiple sclerosis", "Crohn's disease", "epilepsy", "HIV infection",
    "hepatitis C", "breast cancer", "COPD", "atrial fibrillation", "bipolar disorder",
    "Parkinson's disease", "migraine", "hypothyroidism", "celiac disease", "schizophrenia",
    "generalized anxiety disorder", "psoriasis", "lupus", "gout", "osteoporosis", "sickle cell anemia",
    "cystic fibrosis", "early-onset Alzheimer's disease", "glaucoma", "obstructive sleep apnea",
    "ulcerative colitis", "prostate cancer", "heart failure", "anorexia nervosa", "tuberculosis",
)

# {slot} names map to a PII kind through SLOT_KIND; literal text between slots is kept as written.
TEMPLATES = (
    "Patient {name}, SSN {ssn}, was diagnosed with {diagnosis}.",
    "{name} lives at {address}; the chart lists {diagnosis}.",
    "Dear {name}, your {diagnosis} results are ready. Reply to {email}.",
    "New contact for {name}: {phone}, {email}.",
    "Referral: {name}, born {dob}, treated for {diagnosis}.",
    "Hi, I'm {name}, born {dob}, and I have {diagnosis}.",
    "Ship to {name}, {address}. Phone {phone}.",
    "{name} ({email}) missed a {diagnosis} visit; call {phone}.",
    "Member {member_id}: {name}, born {dob}, has {diagnosis}.",
    "Reminder: {name} at {address} is due for a {diagnosis} check-up.",
)

SLOT_KIND = {
    "name": "name", "email": "email", "phone": "phone", "address": "address", "ssn": "id_number",
    "member_id": "id_number", "dob": "dob", "diagnosis": "diagnosis",
}

_DOB_FORMATS = ("%B %d, %Y", "%m/%d/%Y", "%Y-%m-%d", "%d %B %Y")
_PHONE_FORMATS = ("({area}) ###-####", "{area}-###-####", "{area}.###.####")


def _person(fake: Faker, rng: random.Random) -> dict[str, str]:
    first, last = fake.first_name(), fake.last_name()
    handle = re.sub(r"[^a-z]", "", first.lower()) + rng.choice([".", "_", ""]) + re.sub(r"[^a-z]", "", last.lower())
    if rng.random() < 0.4:
        handle += str(rng.randint(1, 99))
    return {
        "name": f"{first} {last}",
        "email": f"{handle}@{fake.free_email_domain()}",
        # North-American numbering: area codes start with 2-9
        "phone": fake.numerify(rng.choice(_PHONE_FORMATS).format(area=rng.randint(200, 999))),
        "address": f"{fake.building_number()} {fake.street_name()}, {fake.city()}, "
        f"{fake.state_abbr(include_territories=False, include_freely_associated_states=False)}",
        "ssn": fake.ssn(),
        "member_id": fake.bothify("??#######").upper(),
        "dob": fake.date_of_birth(minimum_age=18, maximum_age=90).strftime(rng.choice(_DOB_FORMATS)),
        "diagnosis": rng.choice(DIAGNOSES),
    }


def fill(template: str, values: dict[str, str]) -> Record:
    """Render `template` with `values`, recording the exact span of every slot."""
    parts: list[str] = []
    spans: list[PiiSpan] = []
    pos = 0
    for literal, slot, _, _ in string.Formatter().parse(template):
        parts.append(literal)
        pos += len(literal)
        if slot is None:
            continue
        value = values[slot]
        spans.append(PiiSpan(SLOT_KIND[slot], value, pos, pos + len(value)))
        parts.append(value)
        pos += len(value)
    return Record("".join(parts), spans)


def private_records(n: int, seed: int = 0, locale: str = "en_US",
                    person: Callable[[Faker, random.Random], dict[str, str]] = _person) -> list[Record]:
    """`n` synthetic records; deterministic in (`n`, `seed`, `locale`, faker version)."""
    fake = Faker(locale)
    fake.seed_instance(seed)
    rng = random.Random(seed)
    return [fill(rng.choice(TEMPLATES), person(fake, rng)) for _ in range(n)]
