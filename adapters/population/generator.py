"""Synthetic people for Interior's population registry: national IDs and family trees.

A national ID is nine digits whose last digit is a Luhn check digit, as on Palestinian (and Israeli)
identity cards: weights 1, 2, 1, 2, ... from the left, digits of each product summed, total
divisible by ten (ISO/IEC 7812-1 Annex B, the Luhn formula).

:func:`generate_people` yields the population one *family block* at a time: a few founding couples
in one locality, their children, whom it marries to one another or to spouses from elsewhere, and
so on for three generations. Parents, children and spouses therefore always exist in the same
output and link back to one another. Names follow the Palestinian four-part pattern (given name,
father's, grandfather's, family name) in Arabic and in one fixed Latin transliteration. A few per
cent of people have died (the old more often); a living spouse of a dead person is widowed.

Everything is deterministic for a given seed and reference date (the day the registry is "as of");
nothing reads the clock. This module does no IO; :mod:`adapters.population.store` writes the rows.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Final, NamedTuple

from adapters.population.names import (
    CHRISTIAN_FAMILIES,
    CHRISTIAN_GIVEN_NAMES,
    FAMILY_NAMES,
    FEMALE_NAMES,
    GOVERNORATES,
    MALE_NAMES,
    MUSLIM_GIVEN_NAMES,
    PRE_1948_TOWNS,
    STREETS,
    Name,
)

REFERENCE_DATE: Final = date(2024, 12, 31)
"""The default day the synthetic registry is "as of"; no one is born or dies after it."""

MAX_COUNT: Final = 10_000_000
"""The most people one registry may hold (the ID space allows more; the use does not)."""

_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_YEAR: Final = 365
_FIRST_N8: Final = 40_000_000
_START_JITTER: Final = 1_000_000
_ID_SPACE: Final = 10**8 - _FIRST_N8 - _START_JITTER
_WAR_1948: Final = date(1948, 5, 15).toordinal()
_CHRISTIAN_SHARE: Final = 0.02


# --- national IDs --------------------------------------------------------------------------------


def luhn_check_digit(n8: int) -> int:
    """The check digit that makes the 8-digit body ``n8`` a valid 9-digit national ID."""
    total = 0
    for position in range(8):
        digit = (n8 // 10 ** (7 - position)) % 10
        total += _DOUBLED[digit] if position % 2 else digit
    return -total % 10


def make_national_id(n8: int) -> str:
    """The 9-digit national ID (zero-padded) for the 8-digit body ``n8``, check digit appended."""
    if not 0 <= n8 < 10**8:
        raise ValueError("a national ID body is a number from 0 to 99999999")
    return f"{n8:08d}{luhn_check_digit(n8)}"


def valid_national_id(text: str) -> bool:
    """True if ``text`` is exactly nine ASCII digits whose Luhn sum is divisible by ten."""
    if len(text) != 9 or not text.isascii() or not text.isdigit():
        return False
    total = 0
    for position, char in enumerate(text):
        digit = ord(char) - 48
        total += _DOUBLED[digit] if position % 2 else digit
    return total % 10 == 0


# --- the rows ------------------------------------------------------------------------------------


class PersonRow(NamedTuple):
    """One person as stored: the registry table's columns, in order."""

    national_id: int
    first_ar: str
    father_ar: str
    grandfather_ar: str
    family_ar: str
    full_ar: str
    first_en: str
    father_en: str
    grandfather_en: str
    family_en: str
    full_en: str
    sex: str
    date_of_birth: str
    place_of_birth: str
    governorate: str
    locality: str
    street: str
    building: str
    marital_status: str
    father_id: int | None
    mother_id: int | None
    spouse_id: int | None
    date_of_death: str | None


@dataclass(frozen=True, slots=True)
class _Place:
    governorate: str
    locality: str
    main_town: str
    camp: bool


@dataclass(frozen=True, slots=True)
class _Home:
    place: _Place
    street: str
    building: str


@dataclass(frozen=True, slots=True)
class _Tradition:
    """The names a family draws from: Muslim and Christian families share many, not all."""

    male: tuple[Name, ...]
    female: tuple[Name, ...]
    families: tuple[Name, ...]


def _tradition(christian: bool) -> _Tradition:
    excluded = MUSLIM_GIVEN_NAMES if christian else CHRISTIAN_GIVEN_NAMES
    return _Tradition(
        tuple(name for name in MALE_NAMES if name[1] not in excluded),
        tuple(name for name in FEMALE_NAMES if name[1] not in excluded),
        tuple(name for name in FAMILY_NAMES if (name[1] in CHRISTIAN_FAMILIES) == christian),
    )


_MUSLIM: Final = _tradition(christian=False)
_CHRISTIAN: Final = _tradition(christian=True)


@dataclass(slots=True, eq=False)
class _Person:
    """A person while their family block is built (mutable: marriages and deaths come later)."""

    nid: int
    sex: str
    first: Name
    father_name: Name
    grandfather_name: Name
    family: Name
    born: int
    place_of_birth: str
    home: _Home
    tradition: _Tradition
    father_id: int | None = None
    mother_id: int | None = None
    spouse: _Person | None = None
    marital: str = "single"
    died: int | None = None
    last_child_born: int = 0


def _all_places() -> tuple[tuple[_Place, ...], tuple[float, ...]]:
    places: list[_Place] = []
    weights: list[float] = []
    for gov in GOVERNORATES:
        main = gov.localities[0][0]
        total = sum(weight for _, weight in gov.localities)
        for locality, weight in gov.localities:
            places.append(_Place(gov.name, locality, main, locality.endswith("Camp")))
            weights.append(gov.weight * weight / total)
    return tuple(places), tuple(itertools.accumulate(weights))


_PLACES, _PLACE_WEIGHTS = _all_places()
_PLACES_BY_GOVERNORATE: Final = {
    gov.name: tuple(p for p in _PLACES if p.governorate == gov.name) for gov in GOVERNORATES
}


@functools.lru_cache(maxsize=65536)
def _iso(ordinal: int) -> str:
    return date.fromordinal(ordinal).isoformat()


_MARRIED_BY_AGE: Final = {
    "M": ((20, 0.0), (25, 0.25), (30, 0.55), (40, 0.82)),
    "F": ((18, 0.0), (22, 0.3), (27, 0.6), (40, 0.85)),
}
_DEAD_BY_AGE: Final = ((90, 0.75), (80, 0.45), (70, 0.2), (60, 0.1), (40, 0.02))


def _p_married(age: float, sex: str) -> float:
    """Chance that someone of this age and sex has married by the reference date."""
    return next((chance for below, chance in _MARRIED_BY_AGE[sex] if age < below), 0.9)


def _mortality(age: float) -> float:
    """Chance that someone born ``age`` years before the reference date has died by it."""
    return next((chance for at_least, chance in _DEAD_BY_AGE if age >= at_least), 0.004)


class _IdAllocator:
    """Hands out unique, ascending, valid national IDs (400000000 and up) with random gaps."""

    def __init__(self, rng: random.Random, count: int) -> None:
        self._rng = rng
        self._max_gap = max(1, min(40, _ID_SPACE // max(count, 1)))
        self._n8 = _FIRST_N8 + rng.randrange(_START_JITTER)

    def next(self) -> int:
        self._n8 += self._rng.randint(1, self._max_gap)
        return self._n8 * 10 + luhn_check_digit(self._n8)


class _FamilyBlock:
    """Builds one family block of at most ``budget`` people, rooted in one locality."""

    def __init__(self, rng: random.Random, ids: _IdAllocator, today: int, budget: int) -> None:
        self._rng = rng
        self._ids = ids
        self._today = today
        self._budget = budget
        self._place = rng.choices(_PLACES, cum_weights=_PLACE_WEIGHTS)[0]
        self._divorces: list[tuple[_Person, _Person]] = []
        self.people: list[_Person] = []

    def build(self) -> list[_Person]:
        couples = self._founders()
        for _ in range(3):
            children = [
                child for father, mother in couples for child in self._children(father, mother)
            ]
            couples = self._marry(children)
        self._divorce()
        self._die()
        return self.people

    # --- people and homes

    def _add(self, person: _Person) -> _Person:
        self._budget -= 1
        self.people.append(person)
        return person

    def _home(self, *, move_away: float = 0.0) -> _Home:
        rng = self._rng
        place = self._place
        if rng.random() < move_away:
            place = rng.choice(_PLACES_BY_GOVERNORATE[place.governorate])
        return _Home(place, rng.choice(STREETS), str(rng.randint(1, 240)))

    def _outsider(
        self, sex: str, born: int, home: _Home, origin: _Place, tradition: _Tradition
    ) -> _Person:
        """Someone whose parents are not in this registry (a founder, a spouse from elsewhere)."""
        rng = self._rng
        first = rng.choice(tradition.male if sex == "M" else tradition.female)
        if origin.camp and born < _WAR_1948:
            birthplace = rng.choice(PRE_1948_TOWNS)
        else:
            birthplace = origin.locality if rng.random() < 0.7 else origin.main_town
        father, grandfather = rng.choice(tradition.male), rng.choice(tradition.male)
        person = _Person(
            self._ids.next(),
            sex,
            first,
            father,
            grandfather,
            rng.choice(tradition.families),
            born,
            birthplace,
            home,
            tradition,
        )
        return self._add(person)

    def _wed(self, husband: _Person, wife: _Person, home: _Home, *, divorce: float = 0.03) -> None:
        husband.spouse, wife.spouse = wife, husband
        husband.marital = wife.marital = "married"
        husband.home = wife.home = home
        if self._rng.random() < divorce:
            self._divorces.append((husband, wife))

    # --- generations

    def _founders(self) -> list[tuple[_Person, _Person]]:
        rng = self._rng
        couples = []
        for _ in range(rng.randint(2, 5)):
            home = self._home(move_away=0.1)
            husband_born = date(1928, 1, 1).toordinal() + rng.randrange(41 * _YEAR)
            tradition = _CHRISTIAN if rng.random() < _CHRISTIAN_SHARE else _MUSLIM
            if self._budget == 1:
                self._outsider("M", husband_born, home, home.place, tradition)
            if self._budget < 2:
                break
            husband = self._outsider("M", husband_born, home, home.place, tradition)
            wife_born = min(husband_born + rng.randrange(10 * _YEAR), self._today - 18 * _YEAR)
            wife = self._outsider("F", wife_born, home, home.place, tradition)
            self._wed(husband, wife, home, divorce=0.0)
            couples.append((husband, wife))
        return couples

    def _children(self, father: _Person, mother: _Person) -> list[_Person]:
        rng = self._rng
        if rng.random() < 0.06:
            return []
        year = date.fromordinal(mother.born).year
        count = (
            rng.randint(4, 10)
            if year < 1955
            else rng.randint(3, 8)
            if year < 1975
            else (rng.randint(2, 6) if year < 1990 else rng.randint(1, 4))
        )
        born = max(mother.born + 18 * _YEAR, father.born + 20 * _YEAR) + rng.randrange(5 * _YEAR)
        last = min(self._today, mother.born + 45 * _YEAR)
        children: list[_Person] = []
        used: set[str] = set()
        for _ in range(count):
            if born > last or self._budget <= 0:
                break
            children.append(self._child(father, mother, born, used))
            born += rng.randint(330, 1300)
        return children

    def _child(self, father: _Person, mother: _Person, born: int, used: set[str]) -> _Person:
        rng = self._rng
        sex = "M" if rng.random() < 0.505 else "F"
        names = father.tradition.male if sex == "M" else father.tradition.female
        first = rng.choice(names)
        while first[1] in used:
            first = rng.choice(names)
        used.add(first[1])
        home = father.home
        birthplace = home.place.locality if rng.random() < 0.6 else home.place.main_town
        father.last_child_born = mother.last_child_born = born
        person = _Person(
            self._ids.next(),
            sex,
            first,
            father.first,
            father.father_name,
            father.family,
            born,
            birthplace,
            home,
            father.tradition,
            father.nid,
            mother.nid,
        )
        return self._add(person)

    def _marry(self, people: list[_Person]) -> list[tuple[_Person, _Person]]:
        """Marry off those of ``people`` who are of an age to be, to each other or to outsiders."""
        rng, today = self._rng, self._today
        marrying = [
            p for p in people if rng.random() < _p_married((today - p.born) / 365.25, p.sex)
        ]
        men = [p for p in marrying if p.sex == "M"]
        women = sorted((p for p in marrying if p.sex == "F"), key=lambda p: p.born)
        rng.shuffle(men)
        couples: list[tuple[_Person, _Person]] = []
        for man in men:
            wife = _match(man, women)
            if wife is not None:
                women.remove(wife)
            elif self._budget > 0:
                born = min(man.born + rng.randrange(8 * _YEAR), today - 18 * _YEAR)
                wife = self._outsider("F", born, man.home, self._elsewhere(), man.tradition)
            else:
                continue
            couples.append(self._new_household(man, wife))
        for woman in women:
            if self._budget <= 0:
                break
            born = min(woman.born - rng.randrange(8 * _YEAR), today - 20 * _YEAR)
            husband = self._outsider("M", born, woman.home, self._elsewhere(), woman.tradition)
            couples.append(self._new_household(husband, woman))
        return couples

    def _elsewhere(self) -> _Place:
        if self._rng.random() < 0.5:
            return self._place
        return self._rng.choices(_PLACES, cum_weights=_PLACE_WEIGHTS)[0]

    def _new_household(self, husband: _Person, wife: _Person) -> tuple[_Person, _Person]:
        self._wed(husband, wife, self._home(move_away=0.2))
        return husband, wife

    # --- what happened later

    def _divorce(self) -> None:
        for husband, wife in self._divorces:
            husband.spouse = wife.spouse = None
            husband.marital = wife.marital = "divorced"

    def _die(self) -> None:
        rng, today = self._rng, self._today
        for person in self.people:
            if rng.random() >= _mortality((today - person.born) / 365.25):
                continue
            earliest = max(person.born, person.last_child_born) + 1
            if person.spouse is not None:
                earliest = max(earliest, max(person.born, person.spouse.born) + 18 * _YEAR)
            if earliest <= today:
                person.died = rng.randint(earliest, today)
        for person in self.people:
            spouse_died = None if person.spouse is None else person.spouse.died
            if spouse_died is not None and (person.died is None or person.died > spouse_died):
                person.marital = "widowed"


def _match(man: _Person, women: list[_Person]) -> _Person | None:
    """The oldest of ``women`` not his sister, of his tradition, 0 to 12 years younger than him."""
    for woman in women:
        if (
            woman.father_id != man.father_id
            and woman.tradition is man.tradition
            and 0 <= woman.born - man.born <= 12 * _YEAR
        ):
            return woman
    return None


def _row(person: _Person) -> PersonRow:
    first, father, grandfather, family = (
        person.first,
        person.father_name,
        person.grandfather_name,
        person.family,
    )
    home = person.home
    return PersonRow(
        person.nid,
        first[0],
        father[0],
        grandfather[0],
        family[0],
        f"{first[0]} {father[0]} {grandfather[0]} {family[0]}",
        first[1],
        father[1],
        grandfather[1],
        family[1],
        f"{first[1]} {father[1]} {grandfather[1]} {family[1]}",
        person.sex,
        _iso(person.born),
        person.place_of_birth,
        home.place.governorate,
        home.place.locality,
        home.street,
        home.building,
        person.marital,
        person.father_id,
        person.mother_id,
        None if person.spouse is None else person.spouse.nid,
        None if person.died is None else _iso(person.died),
    )


def generate_people(
    count: int, *, seed: int = 0, reference_date: date = REFERENCE_DATE
) -> Iterator[list[PersonRow]]:
    """Yield exactly ``count`` people as family blocks, in ascending national-ID order.

    Every ``father_id``, ``mother_id`` and ``spouse_id`` names someone yielded in the same block.
    The same ``seed`` and ``reference_date`` give the same people.
    """
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be between 0 and {MAX_COUNT}")
    rng = random.Random(seed)
    ids = _IdAllocator(rng, count)
    today = reference_date.toordinal()
    remaining = count
    while remaining > 0:
        people = _FamilyBlock(rng, ids, today, remaining).build()
        remaining -= len(people)
        yield [_row(person) for person in people]
