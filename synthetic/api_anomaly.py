"""Seeded daily API counts of a caller-identification app by country and OS, with planted, labeled
anomalies and planted data-quality defects.

The world (shapes fixed in code; period, sizes, rates and the seed are knobs in params.yaml):

* **Volume.** Countries in the order of the app's markets (India, Brazil, Indonesia, Nigeria, Egypt,
  ... then the rest of the world in a seeded order), volume ~ rank^-zipf_exponent with a lognormal
  jitter, so a few countries carry most of the traffic and the tail has segments of tens of requests.
* **OS mix.** iOS-heavy markets (US, GB, JP, Nordics, ...: 45-60% of mobile), middle ones (DE, FR, the
  Gulf, ...), Android-heavy ones (most of the world: 4-18%); web 2-6%, windows 0.5-2.5%, macos
  following iOS, other below 1%. Outside the top 40 markets, web / windows / macos / other are absent
  from some countries (no row at all: the segment does not exist).
* **Weekly seasonality.** Each country has its weekend: Saturday-Sunday, Friday-Saturday (Gulf, Egypt,
  Israel, Bangladesh, ...), Thursday-Friday (Iran, Afghanistan) or Saturday only (Nepal), a dip of
  0-16% on weekend days (country-specific), a smaller one the day before, a small rebound the day after.
  Desktop OS (windows, macos) dip about twice as deep, web 1.3x: work devices.
* **Public holidays** differ by country (holidays.csv): New Year, Lunar New Year (East and South-East
  Asia), Carnival (Brazil, ...), Ramadan (a mild month-long dip) and Eid al-Fitr (Muslim-majority
  countries, a day off in others), Holi, Nowruz, Western and Orthodox Easter (Good Friday, Holy
  Thursday, Easter Monday where they are days off), the South and South-East Asian new year
  (Songkran, ...), national days of the major markets, and one synthetic national day per year for
  the other countries. Traffic drops on them (desktop deeper). **Holidays are not anomalies.**
* **Growth.** Every country drifts slowly (monthly growth ~ N(1.5%, 2.5%)), each segment a little
  around it: a multiplicative trend, not an anomaly.
* **Launches** (``n_launches``): a web / windows / macos / other segment that starts mid-period (no
  rows before its launch day) from ~1% of its eventual level and ramps up along a logistic curve
  over 1-4 weeks. At least one launch falls before the evaluation window and one inside it.
  **Launches are not anomalies** (expected_count includes the ramp), and a detector must not flag them.
* **Noise** scales with volume: a global daily shock (sd 0.8%), an AR(1) country shock (sd 1.2-4%,
  larger for small countries) and an AR(1) segment shock (sd 2-14%, larger for small segments), all
  multiplicative and mean-preserving, then a Poisson draw: small segments are relatively noisier.
* **Bursty countries** (``bursty_share`` of the countries beyond the top 5; segments.csv ``bursty``):
  social-media or marketing-driven traffic whose ordinary days swing by tens of percent: an AR(1)
  country shock (sd 8-20%) and a segment shock (sd 5-12%) with heavy-tailed Student-t innovations (3 df,
  clipped at 6: an ordinary burst reaches about x1.9). Not anomalies; the planted ones land there as
  anywhere else.

``expected_count`` (labels.parquet) is the true baseline: level x trend x weekday x holiday x launch,
before anomalies and noise. ``count_true`` is the drawn count, anomalies included, before defects.

**Anomalies** (anomalies.csv; kinds x scopes x difficulty):

* kinds: ``spike`` (x1.3-x6 for 1-3 days), ``drop`` (x0.25-x0.8 for 1-4 days), ``outage`` (down part
  of a day or all of it: x0-x0.8, 1-2 days), ``level_shift`` (a step to x0.4-x0.86 or its inverse,
  for 1-3 weeks in the earlier weeks; in the evaluation window to the end of the log, 7 in 10, or for
  5-10 days), ``ramp``
  (a log-linear drift from x1 to the magnitude over 3-12 days, then held; earlier ramps drift back
  out over as many days, those in the evaluation window hold to the end);
* scopes: one segment, a whole country (all its OS at once), one OS across many countries (15-50% of
  those that have it, or all of them for a short one, 1 in 4);
* difficulty: ``obvious`` / ``moderate`` / ``hard`` by magnitude (table MAGNITUDE) and by where they
  land: hard segment anomalies hit noisy mid-volume segments (median 1,000-50,000 a day), hard
  country and OS anomalies are milder (their aggregate is less noisy) and prefer small countries and
  the minor OSes. ``hard_share`` of them are hard, the rest split evenly.

Two windows: the last ``evaluation_days`` days (where detection is evaluated) get
``evaluation_anomalies`` anomalies, all starting inside it; the earlier weeks (after a 14-day warm-up)
get ``earlier_anomalies_per_week`` per week, all ending before the evaluation window, for choosing
thresholds without touching the evaluated days. A point (date, country, os) is labeled anomalous when
an active anomaly moves its expected count by at least ``label_min_effect`` (10%: the first days of a
slow ramp are not labeled). Anomalies never overlap on a segment (nor come within 2 days of each
other there), so each point has at most one; the labels would name the strongest otherwise.

**Data-quality defects** (defects.csv: kind, the action ingestion must take, its reason code, the
line in api_counts.csv, the true date/country/os): ``defect_rate`` of the rows, kinds balanced:
missing days (a row absent), a few dates missing for a whole country, exact duplicates (re-sent at
the end of the day's block), conflicting duplicates (same key, another count), invalid country codes
('XX', 'UK' for GB, 'EU', ...), lower-case or padded codes (' us', 'de'), OS spellings ('Android',
'iPhone OS', 'win', 'Mac OS', ...), unknown OS strings, negative, non-numeric, missing and absurd
counts (10^12, 2^31-1, or 10^4-10^5 x the segment's level), unparseable dates ('14/03/2026',
'2026-02-30', ...), dates outside the period (a year early, after the end). Plus one logging change:
five days where one OS was exported under another spelling in every country (``os_relabel``).
Destructive defects never touch an anomalous point, nor a segment's first or last day (so every
planted gap lies inside the segment's span, where ingestion can see it). Labels and anomalies are
computed before defects; labels.parquet's ``defect`` column says which defect hit each point.

Outputs (``--out``): api_counts.csv (the brief's schema: what a user supplies), labels.parquet,
anomalies.csv, defects.csv, segments.csv, holidays.csv (see schema).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from domain.api_anomaly import schema as S
from pipelines.api_anomaly.params import WARMUP_DAYS, GenerateParams
from pipelines.common.geo import ISO_3166_ALPHA2
from pipelines.common.params import load_params
from pipelines.common.progress import progress
from pipelines.common.stage import stage, stage_parser

log = logging.getLogger(__name__)

# --- countries -----------------------------------------------------------------------------------------
# The app's markets in order of volume; the rest of the world follows in a seeded order.
MAJOR_MARKETS = """
IN BR ID NG EG PK US BD MX KE SA ZA PH MY CO TR IQ DZ MA VN AE GB DE FR IT ES TH PE AR CL
GH KZ UZ UA RU NP LK TZ UG ET JO KW QA OM TN CA AU JP KR PL RO NL SE CM CI SN VE EC BO
GT DO HN SV NI CR PA PY UY LB AZ GE AM KG TJ MM KH LA SG HK TW IL IE PT BE AT CH GR HU CZ
""".split()
NOT_IN_LOG = frozenset("AQ BV HM TF UM GS IO PN CX CC NF TK NU SJ EH VA KP".split())  # no users
# Dependent territories and the smallest places come after the other countries.
TERRITORIES = frozenset(
    """AS AI AW AX BL BM BQ CK CW FK FO GF GG GI GL GP GU IM JE KY MF MP MQ MS NC PF PM RE SH SX TC VG
    VI WF YT MO AD LI MC SM NR TV PW MH FM KI WS TO VU SB""".split()
)
COUNTRY_POOL = MAJOR_MARKETS + sorted(ISO_3166_ALPHA2 - NOT_IN_LOG - set(MAJOR_MARKETS))
ALL_OS_MARKETS = 40  # the top markets have every OS; smaller ones may lack the minor ones

WEEKENDS = {  # weekday numbers, Monday = 0
    "Sat-Sun": (5, 6),
    "Fri-Sat": (4, 5),
    "Thu-Fri": (3, 4),
    "Sat": (5,),
}
FRI_SAT = frozenset("SA EG IL QA KW BH OM JO DZ IQ BD SD LY YE SY MV".split())
THU_FRI = frozenset("AF IR".split())
SAT_ONLY = frozenset({"NP"})

HIGH_IOS = frozenset("US CA GB AU NZ JP DK NO SE CH IE IS LU HK TW".split())
MID_IOS = frozenset("DE FR NL BE AT FI SG KR AE QA KW SA BH IL IT ES PT CZ SK SI EE HR GR OM".split())
# How strongly each OS follows weekends and holidays (work devices more).
OS_SENSITIVITY = {S.ANDROID: 1.0, S.IOS: 1.0, S.WEB: 1.3, S.WINDOWS: 2.0, S.MACOS: 1.8, S.OTHER: 1.0}
# Share of countries outside the top markets where the OS is absent.
OS_ABSENT_P = {S.WEB: 0.1, S.WINDOWS: 0.2, S.MACOS: 0.35, S.OTHER: 0.35}

# --- holidays --------------------------------------------------------------------------------------------
EUROPE_WEST = frozenset(
    "GB IE FR DE IT ES PT NL BE LU AT CH PL CZ SK HU SI HR SE NO DK FI IS EE LV LT MT LI MC SM AD".split()
)
LATAM = frozenset("MX CO PE AR CL VE EC BO GT DO HN SV NI CR PA PY UY CU".split())
AMERICAS_OTHER = frozenset("US CA BR JM TT BS BB HT BZ GY SR PR".split())
AFRICA_CHRISTIAN = frozenset("NG KE GH UG TZ ZA ZM ZW CM CI RW BW NA MW AO MZ CD CG GA LS SZ LR".split())
OCEANIA = frozenset("AU NZ PG FJ".split())
WESTERN_CHRISTIAN = EUROPE_WEST | LATAM | AMERICAS_OTHER | AFRICA_CHRISTIAN | OCEANIA | {"PH"}
EASTER_MONDAY = (EUROPE_WEST - {"ES", "PT"}) | AFRICA_CHRISTIAN | OCEANIA | {"CA"}
HOLY_THURSDAY = LATAM | {"PH"}
ORTHODOX = frozenset("GR CY RO BG RS MK ME BA RU UA BY MD GE ET ER".split())
MUSLIM_MAJORITY = frozenset(
    """AF AL AZ BH BD BN BF DJ DZ EG GM GN ID IQ IR JO KG KM KW KZ LB LY MA MV ML MR MY NE OM PK PS
    QA SA SD SN SO SY TD TJ TM TN TR UZ YE AE SL""".split()
)
EID_DAY_OFF = frozenset("NG ET TZ KE UG GH IN LK SG PH CI CM BJ TG ER".split())  # one day, milder
LUNAR_NEW_YEAR = frozenset("CN HK MO TW SG MY ID VN KR BN PH".split())
CARNIVAL = frozenset("BR AR UY BO EC PA VE HT CV PT".split())
NOWRUZ = frozenset("AF AZ KZ KG TJ TM UZ".split())  # Iran: longer, listed apart
# Moveable feasts by year (month-day); the period may span 2024-2028.
LUNAR_NEW_YEAR_DATES = {2024: "02-10", 2025: "01-29", 2026: "02-17", 2027: "02-06", 2028: "01-26"}
RAMADAN_START = {2024: "03-11", 2025: "03-01", 2026: "02-18", 2027: "02-08", 2028: "01-28"}
EID_AL_FITR = {2024: "04-10", 2025: "03-30", 2026: "03-20", 2027: "03-10", 2028: "02-27"}
EID_AL_ADHA = {2024: "06-16", 2025: "06-06", 2026: "05-27", 2027: "05-16", 2028: "05-05"}
HOLI = {2024: "03-25", 2025: "03-14", 2026: "03-04", 2027: "03-22", 2028: "03-11"}
# Fixed-date national days of the major markets (month-day, name); others get a synthetic one.
NATIONAL_DAYS: dict[str, list[tuple[str, str]]] = {
    "IN": [("01-26", "Republic Day"), ("08-15", "Independence Day"), ("04-14", "Ambedkar Jayanti")],
    "BR": [("04-21", "Tiradentes"), ("09-07", "Independence Day")],
    "NG": [("06-12", "Democracy Day"), ("10-01", "Independence Day")],
    "PK": [("02-05", "Kashmir Day"), ("03-23", "Pakistan Day")],
    "BD": [("02-21", "Language Martyrs' Day"), ("03-26", "Independence Day"), ("04-14", "Pohela Boishakh")],
    "KE": [("06-01", "Madaraka Day"), ("12-12", "Jamhuri Day")],
    "SA": [("02-22", "Founding Day"), ("09-23", "National Day")],
    "ZA": [("03-21", "Human Rights Day"), ("04-27", "Freedom Day")],
    "PH": [("02-25", "EDSA Revolution"), ("04-09", "Day of Valor")],
    "TR": [("04-23", "National Sovereignty Day")],
    "JP": [("02-11", "Foundation Day"), ("02-23", "Emperor's Birthday"), ("03-20", "Vernal Equinox")],
    "KR": [("03-01", "Independence Movement Day")],
    "CN": [("04-05", "Qingming")],
    "TW": [("02-28", "Peace Memorial Day"), ("04-04", "Children's Day"), ("04-05", "Tomb Sweeping Day")],
    "TH": [("04-06", "Chakri Day"), ("04-13", "Songkran"), ("04-14", "Songkran"), ("04-15", "Songkran")],
    "LA": [("04-14", "Lao New Year"), ("04-15", "Lao New Year"), ("04-16", "Lao New Year")],
    "KH": [("04-14", "Khmer New Year"), ("04-15", "Khmer New Year"), ("04-16", "Khmer New Year")],
    "MM": [("02-12", "Union Day"), ("03-02", "Peasants' Day"), ("04-13", "Thingyan"), ("04-14", "Thingyan")],
    "LK": [("02-04", "Independence Day"), ("04-13", "Sinhala New Year"), ("04-14", "Sinhala New Year")],
    "NP": [("04-14", "Nepali New Year"), ("02-19", "Democracy Day")],
    "GH": [("03-06", "Independence Day")],
    "SN": [("04-04", "Independence Day")],
    "TN": [("03-20", "Independence Day")],
    "IR": [("02-11", "Revolution Day"), ("04-01", "Islamic Republic Day")],
    "NZ": [("02-06", "Waitangi Day")],
    "IE": [("03-17", "St Patrick's Day")],
    "GR": [("03-25", "Independence Day")],
    "HU": [("03-15", "National Day")],
    "BG": [("03-03", "Liberation Day")],
    "LT": [("02-16", "Restoration Day")],
    "EE": [("02-24", "Independence Day")],
    "KW": [("02-25", "National Day"), ("02-26", "Liberation Day")],
    "RU": [("02-23", "Defender of the Fatherland Day"), ("03-08", "Women's Day")],
    "UA": [("03-08", "Women's Day")],
    "BY": [("03-08", "Women's Day")],
    "KZ": [("03-08", "Women's Day")],
    "UZ": [("03-08", "Women's Day")],
    "AR": [("03-24", "Day of Remembrance"), ("04-02", "Malvinas Day")],
    "CO": [("03-19", "St Joseph's Day")],
    "AE": [("12-02", "National Day")],
    "EG": [("04-25", "Sinai Liberation Day")],
    "US": [("07-04", "Independence Day")],
    "MX": [("09-16", "Independence Day")],
}
# (country, month, weekday, n): the n-th weekday (Monday = 0) of the month.
NTH_WEEKDAY_DAYS = [
    ("US", 2, 0, 3, "Presidents' Day"),
    ("MX", 2, 0, 1, "Constitution Day"),
    ("MX", 3, 0, 3, "Benito Juarez Day"),
    ("CA", 2, 0, 3, "Family Day"),
]

# --- anomalies -------------------------------------------------------------------------------------------
# Factor ranges by kind and difficulty. Downward values; level shifts and ramps also go up (1 / factor).
MAGNITUDE = {
    S.SPIKE: {S.OBVIOUS: (2.5, 6.0), S.MODERATE: (1.6, 2.1), S.HARD: (1.3, 1.45)},
    S.DROP: {S.OBVIOUS: (0.25, 0.45), S.MODERATE: (0.55, 0.68), S.HARD: (0.72, 0.8)},
    S.OUTAGE: {S.OBVIOUS: (0.0, 0.05), S.MODERATE: (0.35, 0.55), S.HARD: (0.68, 0.8)},
    S.LEVEL_SHIFT: {S.OBVIOUS: (0.4, 0.55), S.MODERATE: (0.68, 0.78), S.HARD: (0.8, 0.86)},
    S.RAMP: {S.OBVIOUS: (0.3, 0.5), S.MODERATE: (0.6, 0.72), S.HARD: (0.72, 0.8)},
}
UP_SHARE = 0.4  # level shifts and ramps that go up
HARD_WIDE_SHRINK = 0.7  # hard country / OS anomalies: log-magnitude x this (the aggregate is less noisy)
RAMP_DAYS = {S.OBVIOUS: (3, 5), S.MODERATE: (5, 8), S.HARD: (7, 12)}
KIND_WEIGHTS = {S.SPIKE: 0.25, S.DROP: 0.2, S.OUTAGE: 0.15, S.LEVEL_SHIFT: 0.2, S.RAMP: 0.2}
SCOPE_WEIGHTS = {S.SCOPE_SEGMENT: 0.55, S.SCOPE_COUNTRY: 0.3, S.SCOPE_OS: 0.15}
# A short OS-wide anomaly (spike, drop, outage) hits every country with the OS (free then) with this
# probability; otherwise, and always for level shifts and ramps, 15-50% of them.
OS_ALL_COUNTRIES_P = 0.25
# Segment anomalies land on segments with this median expected count per day (hard: noisy mid-volume).
SEGMENT_LEVELS = {S.OBVIOUS: (30, np.inf), S.MODERATE: (200, np.inf), S.HARD: (1_000, 50_000)}
COUNTRY_LEVELS = {S.OBVIOUS: (300, np.inf), S.MODERATE: (1_000, np.inf), S.HARD: (3_000, 3_000_000)}
OS_WEIGHTS = {  # which OS an OS-wide anomaly hits
    "default": {S.ANDROID: 3, S.IOS: 3, S.WEB: 1, S.WINDOWS: 1, S.MACOS: 1, S.OTHER: 0.5},
    S.HARD: {S.ANDROID: 0.5, S.IOS: 0.5, S.WEB: 2, S.WINDOWS: 2, S.MACOS: 2, S.OTHER: 1},
}
GAP = 2  # days kept free around an anomaly on the same segments

# --- defects ---------------------------------------------------------------------------------------------
# kind -> (action ingestion must take, the reason code it quarantines with / the repair it counts /
# what the missing-days report shows); weights: how often relative to the others.
DEFECTS = {
    "bad_date": ("quarantine", "bad_date"),
    "out_of_period": ("quarantine", "out_of_period"),
    "invalid_country": ("quarantine", "invalid_country"),
    "unknown_os": ("quarantine", "unknown_os"),
    "negative_count": ("quarantine", "negative_count"),
    "non_numeric_count": ("quarantine", "non_numeric_count"),
    "missing_count": ("quarantine", "missing_count"),
    "absurd_count": ("quarantine", "absurd_count"),
    "exact_duplicate": ("quarantine", "exact_duplicate"),
    "conflicting_duplicate": ("quarantine", "conflicting_duplicate"),
    "country_case": ("repair", "normalized_country"),
    "os_spelling": ("repair", "normalized_os"),  # or mapped_os, by the spelling (see _os_repair_code)
    "missing_day": ("report", "missing_day"),
    "missing_country_day": ("report", "missing_country_day"),
}
OS_RELABEL = "os_relabel"  # the logging change (a block, not part of the rate)
DEFECT_WEIGHTS = {k: (0.25 if k == "missing_country_day" else 1.0) for k in DEFECTS}
DESTRUCTIVE = frozenset(k for k, (action, _) in DEFECTS.items() if action != "repair") - {"exact_duplicate"}
OS_SPELLINGS = {
    S.ANDROID: ["Android", "ANDROID ", " android", "Android OS"],
    S.IOS: ["iOS", "IOS", "iPhone OS", " ios ", "iPadOS"],
    S.WEB: ["Web", "WEB", "browser", "Mobile Web"],
    S.WINDOWS: ["Windows", "win", "WIN32", " windows"],
    S.MACOS: ["macOS", "Mac OS", "MacOS", "OS X", "Mac OS X"],
    S.OTHER: ["Other", "OTHER ", "others"],
}
INVALID_COUNTRIES = ["XX", "ZZ", "EU", "A1", "--", "T1"]  # 'UK' is planted on GB rows
# Unknown OS strings, in their normalized form (so that normalization does not count them as repairs).
UNKNOWN_OS = ["unknown", "null", "-", "12.4.1", "mozilla/5.0", "n/a", "tv"]
BAD_DATES = ["{dmy}", "{y}-02-30", "{iso}T25:00", "#VALUE!", "{y}-13-{d2}"]
ABSURD_SENTINELS = [1_000_000_000_000, 2_147_483_647, 4_294_967_295]
DEFECT_COLUMNS = ["kind", "action", "reason_code", "line", S.DATE, S.COUNTRY, S.OS, "value"]


def _os_repair_code(spelling: str, canonical: str) -> str:
    norm = spelling.strip().lower()
    if norm == canonical:
        return "normalized_os"
    assert S.OS_ALIASES.get(norm) == canonical, (spelling, canonical)
    return "mapped_os"


# --- calendar --------------------------------------------------------------------------------------------
def western_easter(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def orthodox_easter(year: int) -> date:
    """Orthodox Easter Sunday (Meeus' Julian algorithm, converted to Gregorian; valid 1900-2099)."""
    a, b, c = year % 4, year % 7, year % 19
    d = (19 * c + 15) % 30
    e = (2 * a + 4 * b - d + 34) % 7
    month, day = divmod(d + e + 114, 31)
    return date(year, month, day + 1) + timedelta(days=13)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def holiday_calendar(countries: list[str], start: date, end: date, rng: np.random.Generator) -> pd.DataFrame:
    """Each country's public holidays in [start, end]: country, date, holiday, depth (log-dip of mobile
    traffic; other OS scale it by OS_SENSITIVITY). Where two fall on one day, the deeper one."""
    years = range(start.year, end.year + 1)
    rows: list[tuple[str, date, str, float]] = []
    cset = set(countries)

    def add(where: frozenset[str] | set[str], day: date, name: str, lo: float, hi: float, days: int = 1):
        for c in sorted(cset & set(where)):
            depth = float(rng.uniform(lo, hi))
            for k in range(days):
                rows.append((c, day + timedelta(days=k), name, depth))

    def md(year: int, s: str) -> date:
        return date(year, int(s[:2]), int(s[3:]))

    everyone = frozenset(countries)
    for y in years:
        add(everyone, date(y, 1, 1), "New Year's Day", 0.2, 0.4)
        add(WESTERN_CHRISTIAN, date(y, 12, 25), "Christmas", 0.25, 0.45)
        add(everyone - MUSLIM_MAJORITY, date(y, 5, 1), "Labour Day", 0.08, 0.2)
        if y in LUNAR_NEW_YEAR_DATES:
            lny = md(y, LUNAR_NEW_YEAR_DATES[y])
            add(LUNAR_NEW_YEAR - {"CN", "VN"}, lny, "Lunar New Year", 0.25, 0.45, days=3)
            add({"CN", "VN"}, lny - timedelta(days=1), "Lunar New Year", 0.35, 0.55, days=5)
        if y in RAMADAN_START and y in EID_AL_FITR:
            first, eid = md(y, RAMADAN_START[y]), md(y, EID_AL_FITR[y])
            add(MUSLIM_MAJORITY, first, "Ramadan (mild)", 0.03, 0.07, days=(eid - first).days)
            add(MUSLIM_MAJORITY, eid, "Eid al-Fitr", 0.3, 0.5, days=3)
            add(EID_DAY_OFF, eid, "Eid al-Fitr", 0.1, 0.2)
        if y in EID_AL_ADHA:
            add(MUSLIM_MAJORITY, md(y, EID_AL_ADHA[y]), "Eid al-Adha", 0.3, 0.5, days=3)
        if y in HOLI:
            add({"IN", "NP"}, md(y, HOLI[y]), "Holi", 0.15, 0.25)
        add({"IR"}, date(y, 3, 20), "Nowruz", 0.3, 0.45, days=5)
        add(NOWRUZ, date(y, 3, 21), "Nowruz", 0.15, 0.25, days=2)
        easter = western_easter(y)
        add(CARNIVAL, easter - timedelta(days=48), "Carnival", 0.2, 0.35, days=2)
        add(HOLY_THURSDAY, easter - timedelta(days=3), "Holy Thursday", 0.15, 0.25)
        add(WESTERN_CHRISTIAN, easter - timedelta(days=2), "Good Friday", 0.12, 0.3)
        add(EASTER_MONDAY, easter + timedelta(days=1), "Easter Monday", 0.12, 0.25)
        orthodox = orthodox_easter(y)
        add(ORTHODOX, orthodox - timedelta(days=2), "Orthodox Good Friday", 0.12, 0.25)
        add(ORTHODOX, orthodox + timedelta(days=1), "Orthodox Easter Monday", 0.12, 0.25)
        for c, days in NATIONAL_DAYS.items():
            for s, name in days:
                add({c}, md(y, s), name, 0.1, 0.3)
        for c, month, weekday, n, name in NTH_WEEKDAY_DAYS:
            add({c}, _nth_weekday(y, month, weekday, n), name, 0.08, 0.2)
    # A synthetic national day for the countries without one listed (same day every year).
    for c in sorted(cset - set(NATIONAL_DAYS)):
        doy = int(rng.integers(0, 365))
        for y in years:
            add({c}, date(y, 1, 1) + timedelta(days=doy), "national day (synthetic)", 0.1, 0.25)
    df = pd.DataFrame(rows, columns=[S.COUNTRY, S.DATE, "holiday", "depth"])
    df = df[(df[S.DATE] >= start) & (df[S.DATE] <= end)]
    df = df.sort_values("depth", ascending=False).drop_duplicates([S.COUNTRY, S.DATE])
    return df.sort_values([S.COUNTRY, S.DATE]).reset_index(drop=True)


# --- the world -------------------------------------------------------------------------------------------
@dataclass
class World:
    dates: pd.DatetimeIndex  # D days
    countries: list[str]  # C, in volume order
    seg_country: np.ndarray  # S segments: index into countries
    seg_os: np.ndarray  # S: OS names
    level: np.ndarray  # S: expected weekday requests on day 0 without holiday (at full launch)
    growth: np.ndarray  # S: log-growth per day
    noise_sd: np.ndarray  # S: stationary sd of the segment's log-noise
    bursty: np.ndarray  # S: in a bursty country (heavy-tailed swings of tens of percent)
    launch_day: np.ndarray  # S: first day index with rows (0 for all but launches)
    expected: np.ndarray  # (S, D): the true baseline, NaN before launch
    noise: np.ndarray  # (S, D): mean-1 multiplicative noise
    weekend: list[str]  # C
    holidays: pd.DataFrame

    @property
    def present(self) -> np.ndarray:
        return np.isfinite(self.expected)

    @property
    def seg_code(self) -> np.ndarray:
        return np.asarray(self.countries, dtype=object)[self.seg_country]


def _weekend(c: str) -> str:
    if c in FRI_SAT:
        return "Fri-Sat"
    if c in THU_FRI:
        return "Thu-Fri"
    if c in SAT_ONLY:
        return "Sat"
    return "Sat-Sun"


def _ar1(rng: np.random.Generator, sd: np.ndarray, phi: np.ndarray | float, days: int) -> np.ndarray:
    """Stationary AR(1) paths, one per row of `sd`, with stationary sd `sd`."""
    sd = np.asarray(sd, float)
    phi = np.broadcast_to(np.asarray(phi, float), sd.shape)
    out = np.empty((len(sd), days))
    out[:, 0] = rng.normal(0, sd)
    innov = sd * np.sqrt(1 - phi**2)
    for d in range(1, days):
        out[:, d] = phi * out[:, d - 1] + rng.normal(0, innov)
    return out


BURSTY_COUNTRY_SD = (0.08, 0.2)  # a bursty country's own daily swings (all its OS at once), stationary sd
BURSTY_SEGMENT_SD = (0.05, 0.12)  # ... and each of its segments' own, on top
BURSTY_DF = 3  # Student-t innovations: most days within tens of percent, some ordinary bursts far beyond ...
BURSTY_CLIP = 6.0  # ... up to this many innovation units (about x1.9 in a day): a campaign, not an incident


def _ar1_t(rng: np.random.Generator, sd: np.ndarray, phi: float, days: int) -> np.ndarray:
    """Stationary AR(1) paths with heavy-tailed (Student-t, `BURSTY_DF` df) innovations, stationary sd `sd`."""
    sd = np.asarray(sd, float)
    innov = sd * np.sqrt(1 - phi**2) / np.sqrt(BURSTY_DF / (BURSTY_DF - 2))
    out = np.empty((len(sd), days))
    out[:, 0] = (
        sd
        * np.clip(rng.standard_t(BURSTY_DF, len(sd)), -BURSTY_CLIP, BURSTY_CLIP)
        / np.sqrt(BURSTY_DF / (BURSTY_DF - 2))
    )
    for d in range(1, days):
        out[:, d] = phi * out[:, d - 1] + innov * np.clip(
            rng.standard_t(BURSTY_DF, len(sd)), -BURSTY_CLIP, BURSTY_CLIP
        )
    return out


def _bursty_noise(
    p: GenerateParams, n_c: int, seg_country: np.ndarray, n_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bursty country flags, the extra log-noise per segment and day, its stationary variance per segment):
    `bursty_share` of the countries (never the top 5 markets, whose volume is spread over many campaigns)
    get heavy-tailed swings shared by their OS plus each segment's own. Its own seeded stream: a world
    without bursty countries is the same world as before the regime existed."""
    rng = np.random.default_rng([p.seed, 7])
    bursty = np.zeros(n_c, bool)
    pool = np.arange(5, n_c)
    k = round(p.bursty_share * len(pool))
    if k:
        bursty[rng.choice(pool, size=k, replace=False)] = True
    c_sd = np.where(bursty, rng.uniform(*BURSTY_COUNTRY_SD, n_c), 0.0)
    s_sd = np.where(bursty[seg_country], rng.uniform(*BURSTY_SEGMENT_SD, len(seg_country)), 0.0)
    extra = _ar1_t(rng, c_sd, 0.4, n_days)[seg_country] + _ar1_t(rng, s_sd, 0.3, n_days)
    return bursty, extra, c_sd[seg_country] ** 2 + s_sd**2


def _pick_countries(p: GenerateParams, rng: np.random.Generator) -> list[str]:
    if p.n_countries > len(COUNTRY_POOL):
        raise ValueError(f"n_countries {p.n_countries}: at most {len(COUNTRY_POOL)} countries exist here")
    order = list(MAJOR_MARKETS)
    for group in (False, True):  # the other countries in a seeded order, then the territories
        rest = [c for c in COUNTRY_POOL if c not in MAJOR_MARKETS and (c in TERRITORIES) == group]
        order += [rest[i] for i in rng.permutation(len(rest))]
    return order[: p.n_countries]


def build_world(p: GenerateParams) -> World:
    rng = np.random.default_rng([p.seed, 1])
    dates = pd.date_range(pd.Timestamp(p.start), pd.Timestamp(p.end), freq="D", tz="UTC")
    n_days = len(dates)
    t = np.arange(n_days)
    dow = dates.dayofweek.to_numpy()
    countries = _pick_countries(p, rng)
    n_c = len(countries)
    rank = np.arange(1, n_c + 1)
    share = rank ** (-p.zipf_exponent) * np.exp(rng.normal(0, 0.4, n_c))
    country_volume = p.daily_requests * share / share.sum()
    holidays = holiday_calendar(countries, p.start, p.end, np.random.default_rng([p.seed, 2]))
    hol_depth = np.zeros((n_c, n_days))
    c_index = {c: i for i, c in enumerate(countries)}
    if len(holidays):
        ci = holidays[S.COUNTRY].map(c_index).to_numpy()
        di = (pd.to_datetime(holidays[S.DATE]) - pd.Timestamp(p.start)).dt.days.to_numpy()
        hol_depth[ci, di] = holidays["depth"].to_numpy()
    weekends = [_weekend(c) for c in countries]
    country_growth = rng.normal(0.015, 0.025, n_c) / 30  # log per day
    country_noise_sd = 0.012 + 0.03 * np.sqrt(1e5 / (country_volume + 1e5))
    country_shock = _ar1(np.random.default_rng([p.seed, 3]), country_noise_sd, 0.6, n_days)
    global_shock = np.random.default_rng([p.seed, 4]).normal(0, 0.008, n_days)

    seg_c, seg_os, level, growth, noise_sd, seg_log = [], [], [], [], [], []
    for i in progress(range(n_c), total=n_c, desc="api_anomaly world"):
        c = countries[i]
        ios_share = rng.uniform(
            *((0.45, 0.6) if c in HIGH_IOS else (0.22, 0.4) if c in MID_IOS else (0.04, 0.18))
        )
        shares = {
            S.WEB: rng.uniform(0.02, 0.06),
            S.WINDOWS: rng.uniform(0.005, 0.025),
            S.MACOS: rng.uniform(0.002, 0.006) + 0.02 * ios_share,
            S.OTHER: rng.uniform(0.001, 0.008),
        }
        mobile = 1 - sum(shares.values())
        shares[S.IOS] = mobile * ios_share
        shares[S.ANDROID] = mobile * (1 - ios_share)
        wk = np.zeros(7)
        depth = rng.uniform(0.0, 0.16)
        days_off = WEEKENDS[weekends[i]]
        wk[list(days_off)] = -depth
        wk[(days_off[0] - 1) % 7] = -0.3 * depth
        wk[(days_off[-1] + 1) % 7] = 0.2 * depth
        for os_name in p.os:
            absent = rng.random() < OS_ABSENT_P.get(os_name, 0.0)
            if i >= ALL_OS_MARKETS and absent:
                continue
            sens = OS_SENSITIVITY[os_name]
            lvl = country_volume[i] * shares[os_name]
            seg_c.append(i)
            seg_os.append(os_name)
            level.append(lvl)
            growth.append(country_growth[i] + rng.normal(0, 0.01) / 30)
            noise_sd.append(0.02 + 0.12 * np.sqrt(1000 / (lvl + 1000)))
            seg_log.append(sens * (wk[dow] - hol_depth[i]))
    seg_country = np.array(seg_c)
    seg_os_arr = np.array(seg_os, dtype=object)
    level_arr = np.array(level)
    growth_arr = np.array(growth)
    noise_sd_arr = np.array(noise_sd)
    n_s = len(seg_country)
    calendar = np.exp(np.maximum(np.array(seg_log), np.log(0.15)))  # a holiday never takes more than 85%
    expected = level_arr[:, None] * np.exp(growth_arr[:, None] * t[None, :]) * calendar

    # Launches: minor-OS segments of mid-sized markets that start mid-period and ramp up (logistic).
    launch_day = np.zeros(n_s, dtype=int)
    eval_start = n_days - p.evaluation_days
    cand = np.flatnonzero(
        (seg_country >= 10) & np.isin(seg_os_arr, [S.WEB, S.WINDOWS, S.MACOS, S.OTHER]) & (level_arr > 50)
    )
    chosen = rng.choice(cand, size=min(p.n_launches, len(cand)), replace=False) if len(cand) else []
    for k, s in enumerate(chosen):
        if k == 1 or (k > 1 and rng.random() < p.evaluation_days / n_days):
            day = int(rng.integers(eval_start, n_days - 4))  # inside the evaluation window
        else:
            day = int(rng.integers(WARMUP_DAYS, max(WARMUP_DAYS + 1, eval_start - 14)))
        mid = rng.uniform(6, 14)  # days to half the eventual level; day 0 at ~1%
        width = mid / np.log(99)
        ramp = 1 / (1 + np.exp(-(t - day - mid) / width))
        expected[s] *= ramp
        expected[s, :day] = np.nan
        launch_day[s] = day

    seg_shock = _ar1(np.random.default_rng([p.seed, 5]), noise_sd_arr, rng.uniform(0.2, 0.6, n_s), n_days)
    bursty, extra, extra_var = _bursty_noise(p, n_c, seg_country, n_days)
    log_noise = global_shock[None, :] + country_shock[seg_country] + seg_shock + extra
    var = 0.008**2 + country_noise_sd[seg_country] ** 2 + noise_sd_arr**2 + extra_var
    noise = np.exp(log_noise - var[:, None] / 2)
    return World(
        dates=dates,
        countries=countries,
        seg_country=seg_country,
        seg_os=seg_os_arr,
        level=level_arr,
        growth=growth_arr,
        noise_sd=np.sqrt(noise_sd_arr**2 + extra_var),
        bursty=bursty[seg_country],
        launch_day=launch_day,
        expected=expected,
        noise=noise,
        weekend=weekends,
        holidays=holidays,
    )


# --- anomalies -------------------------------------------------------------------------------------------
def _allocate(weights: dict[str, float], n: int, rng: np.random.Generator) -> list[str]:
    """`n` names in random order, in proportion to `weights` (largest remainder: exact, not sampled)."""
    names = list(weights)
    w = np.array([weights[k] for k in names], float)
    raw = n * w / w.sum()
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    out = [name for name, k in zip(names, counts, strict=True) for _ in range(k)]
    return [out[i] for i in rng.permutation(len(out))]


@dataclass
class Anomalies:
    records: list[dict]
    effect: np.ndarray  # (S, D) product of all factors
    label_id: np.ndarray  # (S, D) strongest labeled anomaly id, -1 for none


def _factors(kind: str, magnitude: float, duration: int, ramp_days: int, ramp_out: bool) -> np.ndarray:
    """The factor on each day of an anomaly, from its first to its last day."""
    if kind != S.RAMP:
        return np.full(duration, magnitude)
    lm = np.log(magnitude)
    up = np.minimum(np.arange(1, duration + 1) / ramp_days, 1.0)
    if ramp_out:  # drift back out over as many days
        down = np.clip((duration - np.arange(duration)) / ramp_days, 0, 1)
        up = np.minimum(up, down)
    return np.exp(lm * up)


def _describe(
    kind: str, magnitude: float, duration: int, ramp_days: int, to_end: bool, difficulty: str
) -> str:
    m = f"x{magnitude:.2f}"
    days = f"{duration} day{'s' if duration > 1 else ''}"
    if kind == S.SPIKE:
        return f"spike to {m} for {days}"
    if kind == S.DROP:
        return f"drop to {m} for {days}"
    if kind == S.OUTAGE:
        part = {S.OBVIOUS: "nearly all day", S.MODERATE: "about half the day", S.HARD: "a few hours"}
        return f"outage: down {part[difficulty]} ({m}) for {days}"
    if kind == S.LEVEL_SHIFT:
        return f"level shift to {m}, " + ("persisting to the end of the log" if to_end else f"for {days}")
    tail = (
        "then holds to the end of the log" if to_end else f"holds, then drifts back out over {ramp_days} days"
    )
    return f"log-linear ramp from x1 to {m} over {ramp_days} days, {tail}"


def plant_anomalies(p: GenerateParams, w: World) -> Anomalies:
    rng = np.random.default_rng([p.seed, 6])
    n_s, n_days = w.expected.shape
    present = w.present
    eval_start = n_days - p.evaluation_days
    seg_level = np.nanmedian(np.where(present, w.expected, np.nan), axis=1)
    launch = w.launch_day > 0
    c_level = np.bincount(w.seg_country, weights=np.nan_to_num(seg_level), minlength=len(w.countries))
    effect = np.ones((n_s, n_days))
    strength = np.zeros((n_s, n_days))
    label_id = np.full((n_s, n_days), -1)
    busy = np.zeros((n_s, n_days), bool)  # segment-days taken by an anomaly (+- GAP days)
    records: list[dict] = []

    n_earlier = round(p.earlier_anomalies_per_week * (eval_start - WARMUP_DAYS) / 7)
    plan = []
    for window, n in ((S.EARLIER, n_earlier), (S.EVALUATION, p.evaluation_anomalies)):
        n_hard = round(n * p.hard_share)
        diff = _allocate({S.OBVIOUS: (n - n_hard) / 2, S.MODERATE: (n - n_hard) / 2, S.HARD: n_hard}, n, rng)
        if n_hard == 0:
            diff = _allocate({S.OBVIOUS: 1, S.MODERATE: 1}, n, rng)
        kinds = _allocate(KIND_WEIGHTS, n, rng)
        scopes = _allocate(SCOPE_WEIGHTS, n, rng)
        plan += [(window, k, sc, d) for k, sc, d in zip(kinds, scopes, diff, strict=True)]

    for window, kind, planned_scope, difficulty in plan:
        for attempt in range(400):
            # a scope that does not fit (e.g. every OS busy then) falls back to one segment
            scope = planned_scope if attempt < 200 else S.SCOPE_SEGMENT
            # timing
            ramp_days = int(rng.integers(RAMP_DAYS[difficulty][0], RAMP_DAYS[difficulty][1] + 1))
            ramp_out = False
            if kind == S.SPIKE:
                duration = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
            elif kind == S.DROP:
                duration = int(rng.integers(1, 5))
            elif kind == S.OUTAGE:
                duration = int(rng.choice([1, 2], p=[0.8, 0.2]))
            elif kind == S.LEVEL_SHIFT:
                duration = int(rng.integers(7, 22)) if window == S.EARLIER else 0
            else:
                duration = ramp_days * 2 + int(rng.integers(2, 8)) if window == S.EARLIER else 0
                ramp_out = window == S.EARLIER
            if window == S.EARLIER:
                last_start = eval_start - duration
                if last_start <= WARMUP_DAYS:
                    continue
                first = int(rng.integers(WARMUP_DAYS, last_start))
                to_end = False
            else:
                to_end = kind in (S.LEVEL_SHIFT, S.RAMP) and (kind == S.RAMP or rng.random() < 0.7)
                if kind == S.LEVEL_SHIFT and not to_end:
                    duration = int(rng.integers(5, 11))
                if to_end:
                    first = int(rng.integers(eval_start, n_days - 3))
                    duration = n_days - first
                else:
                    if eval_start > n_days - duration:
                        continue
                    first = int(rng.integers(eval_start, n_days - duration + 1))
            days = np.arange(first, first + duration)
            # magnitude
            lo, hi = MAGNITUDE[kind][difficulty]
            mag = float(rng.uniform(lo, hi))
            if kind in (S.LEVEL_SHIFT, S.RAMP) and rng.random() < UP_SHARE:
                mag = 1 / mag
            if difficulty == S.HARD and scope != S.SCOPE_SEGMENT:
                mag = float(np.exp(np.log(mag) * HARD_WIDE_SHRINK))
                floor = np.log1p(p.label_min_effect + 0.03)
                if abs(np.log(mag)) < floor:
                    mag = float(np.exp(np.sign(np.log(mag)) * floor))
            # target
            win = slice(max(first - GAP, 0), min(first + duration + GAP, n_days))
            if scope == S.SCOPE_SEGMENT:
                lo_l, hi_l = SEGMENT_LEVELS[difficulty]
                ok = (
                    ~launch
                    & (seg_level >= lo_l)
                    & (seg_level <= hi_l)
                    & present[:, days].all(axis=1)
                    & ~busy[:, win].any(axis=1)
                )
                cand = np.flatnonzero(ok)
                if not len(cand):
                    continue
                wts = seg_level[cand] ** 0.25
                segs = np.array([rng.choice(cand, p=wts / wts.sum())])
                country, os_name = w.countries[w.seg_country[segs[0]]], str(w.seg_os[segs[0]])
            elif scope == S.SCOPE_COUNTRY:
                lo_l, hi_l = COUNTRY_LEVELS[difficulty]
                cand = np.flatnonzero((c_level >= lo_l) & (c_level <= hi_l))
                if not len(cand):
                    continue
                wts = c_level[cand] ** 0.25
                ci = int(rng.choice(cand, p=wts / wts.sum()))
                segs = np.flatnonzero((w.seg_country == ci) & present[:, days].any(axis=1))
                if busy[segs, win].any():
                    continue
                country, os_name = w.countries[ci], ""
            else:
                weights = OS_WEIGHTS[S.HARD if difficulty == S.HARD else "default"]
                names = [o for o in p.os if o in weights]
                wts = np.array([weights[o] for o in names], float)
                os_name = str(rng.choice(names, p=wts / wts.sum()))
                segs = np.flatnonzero(
                    (w.seg_os == os_name) & present[:, days].any(axis=1) & ~busy[:, win].any(axis=1)
                )
                if len(segs) < 3:
                    continue
                if kind in (S.LEVEL_SHIFT, S.RAMP) or rng.random() >= OS_ALL_COUNTRIES_P:
                    k = max(3, round(len(segs) * rng.uniform(0.15, 0.5)))
                    segs = np.sort(rng.choice(segs, size=k, replace=False))
                country = ""
            if not len(segs):
                continue
            f = _factors(kind, mag, duration, ramp_days, ramp_out)
            active = np.abs(f - 1) >= p.label_min_effect - 1e-12
            labeled = present[np.ix_(segs, days)] & active[None, :]
            if not labeled.any():
                continue
            break
        else:
            log.warning("could not place a %s %s anomaly in the %s window", difficulty, kind, window)
            continue
        aid = len(records) + 1
        effect[np.ix_(segs, days)] *= f[None, :]
        st = np.where(labeled, np.abs(np.log(np.maximum(f, 1e-6)))[None, :], 0.0)
        block_strength = strength[np.ix_(segs, days)]
        stronger = st > block_strength
        block_ids = label_id[np.ix_(segs, days)]
        strength[np.ix_(segs, days)] = np.where(stronger, st, block_strength)
        label_id[np.ix_(segs, days)] = np.where(stronger, aid, block_ids)
        busy[segs, win] = True
        records.append(
            {
                "anomaly_id": aid,
                "kind": kind,
                "scope": scope,
                S.COUNTRY: country,
                S.OS: os_name,
                "countries": " ".join(sorted({w.countries[c] for c in w.seg_country[segs]})),
                "start_date": w.dates[first].date().isoformat(),
                "end_date": w.dates[first + duration - 1].date().isoformat(),
                "magnitude": round(mag, 4),
                "difficulty": difficulty,
                "window": window,
                "ramp_days": ramp_days if kind == S.RAMP else None,
                "n_segments": int(present[np.ix_(segs, days)].any(axis=1).sum()),
                "labeled_points": int(labeled.sum()),
                "description": _describe(
                    kind, mag, duration, ramp_days, window == S.EVALUATION and to_end, difficulty
                ),
            }
        )
    return Anomalies(records=records, effect=effect, label_id=label_id)


# --- raw text and planted defects ------------------------------------------------------------------------
@dataclass
class Export:
    text: pd.DataFrame  # the api_counts.csv rows, in file order
    defects: pd.DataFrame  # defects.csv
    point_defect: dict[tuple[int, int], str]  # (segment, day) -> the defect kind planted on its row


def plant_defects(p: GenerateParams, w: World, counts: np.ndarray, anomalous: np.ndarray) -> Export:
    """Write the true rows as text and spoil `defect_rate` of them (kinds balanced), plus the five-day
    OS relabeling. Each row carries at most one defect."""
    rng = np.random.default_rng([p.seed, 7])
    n_days = len(w.dates)
    present = w.present
    seg_code = w.seg_code
    day_idx, seg_idx = np.nonzero(present.T)
    seg_rank = np.argsort(np.argsort(seg_code.astype(str) + "/" + w.seg_os.astype(str)))
    order = np.lexsort((seg_rank[seg_idx], day_idx))  # export order: by date, then country, then OS
    day_idx, seg_idx = day_idx[order], seg_idx[order]
    n = len(seg_idx)
    date_text = np.array([d.date().isoformat() for d in w.dates], dtype=object)
    text = {
        S.DATE: date_text[day_idx].copy(),
        S.COUNTRY: seg_code[seg_idx].copy(),
        S.OS: w.seg_os[seg_idx].copy(),
        S.COUNT: counts[seg_idx, day_idx].astype(np.int64).astype(str).astype(object),
    }
    first_day = np.where(present.any(axis=1), np.argmax(present, axis=1), -1)
    last_day = n_days - 1 - np.argmax(present[:, ::-1], axis=1)
    edge = (day_idx == first_day[seg_idx]) | (day_idx == last_day[seg_idx])
    calm = ~anomalous[seg_idx, day_idx] & ~edge  # where destructive defects may go
    used = np.zeros(n, bool)
    removed = np.zeros(n, bool)
    extra: list[tuple[int, dict[str, str]]] = []  # (row copied, overrides), re-sent after the day's block
    logged: list[dict] = []
    point_defect: dict[tuple[int, int], str] = {}

    def log_defect(
        kind: str, row: int | None, value: str = "", code: str | None = None, extra_k: int | None = None
    ):
        action, default_code = DEFECTS.get(kind, ("repair", None))
        logged.append(
            {
                "kind": kind,
                "action": action,
                "reason_code": code or default_code,
                "_row": row if extra_k is None else None,
                "_extra": extra_k,
                S.DATE: date_text[day_idx[row]],
                S.COUNTRY: seg_code[seg_idx[row]],
                S.OS: w.seg_os[seg_idx[row]],
                "value": value,
            }
        )
        point_defect.setdefault((int(seg_idx[row]), int(day_idx[row])), kind)

    # The logging change: five days in the earlier weeks where one OS went out under another spelling.
    if p.defect_rate > 0:
        os_name = S.IOS if S.IOS in p.os else p.os[0]
        spelling = str(
            rng.choice([s for s in OS_SPELLINGS[os_name] if _os_repair_code(s, os_name) == "mapped_os"])
        )
        d0 = int(rng.integers(WARMUP_DAYS, max(WARMUP_DAYS + 1, n_days - p.evaluation_days - 5)))
        block = np.flatnonzero((w.seg_os[seg_idx] == os_name) & (day_idx >= d0) & (day_idx < d0 + 5))
        for r in block:
            text[S.OS][r] = spelling
            used[r] = True
            log_defect(OS_RELABEL, int(r), spelling, _os_repair_code(spelling, os_name))

    n_def = round(p.defect_rate * n)
    kinds = _allocate(DEFECT_WEIGHTS, n_def, rng) if n_def else []
    # 'UK' for GB first, so the classic mistake is always among the invalid codes.
    gb_rows = np.flatnonzero(seg_code[seg_idx] == "GB")

    def take(destructive: bool, cond: np.ndarray | None = None) -> int | None:
        ok = ~used & (calm if destructive else True)
        if cond is not None:
            ok &= cond
        cand = np.flatnonzero(ok)
        if not len(cand):
            return None
        r = int(cand[rng.integers(len(cand))])
        used[r] = True
        return r

    uk_done = False
    for kind in kinds:
        destructive = kind in DESTRUCTIVE
        if kind == "missing_country_day":
            # a whole date missing for a country: every row of it calm and unused, inside the country's span
            c_of = w.seg_country[seg_idx]
            key = c_of * n_days + day_idx
            ok_rows = calm & ~used
            bad_keys = np.unique(key[~ok_rows])
            c_first = np.full(len(w.countries), n_days)
            c_last = np.full(len(w.countries), -1)
            np.minimum.at(c_first, c_of, day_idx)
            np.maximum.at(c_last, c_of, day_idx)
            inside = (day_idx > c_first[c_of]) & (day_idx < c_last[c_of])
            cand_keys = np.setdiff1d(np.unique(key[inside]), bad_keys)
            if not len(cand_keys):
                continue
            k = int(cand_keys[rng.integers(len(cand_keys))])
            rows = np.flatnonzero(key == k)
            used[rows] = True
            removed[rows] = True
            for r in rows:
                log_defect(kind, int(r))
            continue
        cond = None
        if kind == "invalid_country" and not uk_done and len(gb_rows):
            cond = np.zeros(n, bool)
            cond[gb_rows] = True
        r = take(destructive, cond)
        if r is None and cond is not None:
            r = take(destructive)
        if r is None:
            continue
        count = int(counts[seg_idx[r], day_idx[r]])
        d = w.dates[day_idx[r]].date()
        value = ""
        code = None
        if kind == "bad_date":
            fmt = str(rng.choice(BAD_DATES))
            value = fmt.format(dmy=d.strftime("%d/%m/%Y"), y=d.year, iso=d.isoformat(), d2=f"{d.day:02d}")
            text[S.DATE][r] = value
        elif kind == "out_of_period":
            choice = rng.integers(3)
            if choice == 0:
                new = (
                    d.replace(year=d.year - 1)
                    if not (d.month == 2 and d.day == 29)
                    else d - timedelta(days=365)
                )
            elif choice == 1:
                new = p.end + timedelta(days=int(rng.integers(1, 91)))
            else:
                new = p.start - timedelta(days=int(rng.integers(1, 61)))
            value = new.isoformat()
            text[S.DATE][r] = value
        elif kind == "invalid_country":
            value = "UK" if text[S.COUNTRY][r] == "GB" else str(rng.choice(INVALID_COUNTRIES))
            uk_done = uk_done or value == "UK"
            text[S.COUNTRY][r] = value
        elif kind == "unknown_os":
            value = str(rng.choice(UNKNOWN_OS))
            text[S.OS][r] = value
        elif kind == "negative_count":
            value = f"-{max(count, 1)}"
            text[S.COUNT][r] = value
        elif kind == "non_numeric_count":
            forms = ["n/a", "#N/A", f"{count}.5"] + ([f"{count:,}"] if count >= 1000 else [])
            value = str(rng.choice(forms))
            text[S.COUNT][r] = value
        elif kind == "missing_count":
            text[S.COUNT][r] = ""
        elif kind == "absurd_count":
            if rng.random() < 0.5:
                value = str(int(rng.choice(ABSURD_SENTINELS)))
            else:
                base = max(w.level[seg_idx[r]], count, 10.0)
                value = str(int(base * 10 ** rng.uniform(4, 5)))
            text[S.COUNT][r] = value
        elif kind == "exact_duplicate":
            extra.append((r, {}))
            log_defect(kind, r, extra_k=len(extra) - 1)
            point_defect[(int(seg_idx[r]), int(day_idx[r]))] = kind
            continue
        elif kind == "conflicting_duplicate":
            factor = rng.uniform(0.6, 0.9) if rng.random() < 0.5 else rng.uniform(1.1, 1.5)
            other = round(count * factor)
            if other == count:
                other = count + int(rng.integers(1, 4))
            value = str(other)
            extra.append((r, {S.COUNT: value}))
            log_defect(kind, r, text[S.COUNT][r])  # the original row: quarantined too
            log_defect(kind, r, value, extra_k=len(extra) - 1)
            continue
        elif kind == "country_case":
            c = text[S.COUNTRY][r]
            value = str(rng.choice([c.lower(), f" {c}", f"{c} ", f" {c.lower()} ", c.title()]))
            text[S.COUNTRY][r] = value
        elif kind == "os_spelling":
            os_name = text[S.OS][r]
            value = str(rng.choice(OS_SPELLINGS[os_name]))
            code = _os_repair_code(value, os_name)
            text[S.OS][r] = value
        elif kind == "missing_day":
            removed[r] = True
        log_defect(kind, r, value, code)

    # Assemble the file: originals (minus removed rows) in order, each duplicate after its day's block.
    frame = pd.DataFrame(text)
    frame["_day"] = day_idx
    frame["_order"] = np.arange(n)
    frame["_row"] = np.arange(n)
    frame["_extra"] = -1
    dups = []
    for k, (r, over) in enumerate(extra):
        row = frame.iloc[r].to_dict()
        row.update(over)
        row.update({"_order": n + k, "_row": -1, "_extra": k})
        dups.append(row)
    if dups:
        frame = pd.concat([frame, pd.DataFrame(dups)], ignore_index=True)
    keep = np.ones(len(frame), bool)
    keep[:n] = ~removed
    frame = frame[keep].sort_values(["_day", "_order"], kind="stable").reset_index(drop=True)
    line_of_row = dict(zip(frame["_row"], frame.index + 2, strict=True))
    line_of_extra = dict(zip(frame["_extra"], frame.index + 2, strict=True))
    for d in logged:
        row, k = d.pop("_row"), d.pop("_extra")
        d["line"] = line_of_extra[k] if k is not None else line_of_row.get(row)
    defects = pd.DataFrame(logged, columns=[*DEFECT_COLUMNS])
    defects["line"] = defects["line"].astype("Int64")
    return Export(text=frame[S.RAW_COLUMNS], defects=defects, point_defect=point_defect)


# --- the stage -------------------------------------------------------------------------------------------
def labels_frame(
    p: GenerateParams, w: World, an: Anomalies, counts: np.ndarray, point_defect: dict[tuple[int, int], str]
) -> pd.DataFrame:
    seg_idx, day_idx = np.nonzero(w.present)
    ids = an.label_id[seg_idx, day_idx]
    rec = pd.DataFrame(an.records).set_index("anomaly_id") if an.records else None

    def lookup(col: str) -> pd.Series:
        if rec is None:
            return pd.Series(pd.NA, index=range(len(ids)), dtype="string")
        return pd.Series(rec[col].reindex(ids).to_numpy(), dtype="string")

    eval_start = len(w.dates) - p.evaluation_days
    defect = [point_defect.get((int(s), int(d))) for s, d in zip(seg_idx, day_idx, strict=True)]
    df = pd.DataFrame(
        {
            S.DATE: w.dates[day_idx].as_unit("us"),
            S.COUNTRY: w.seg_code[seg_idx].astype(str),
            S.OS: w.seg_os[seg_idx].astype(str),
            "expected_count": w.expected[seg_idx, day_idx],
            "count_true": counts[seg_idx, day_idx].astype(np.int64),
            "effect": an.effect[seg_idx, day_idx],
            "is_anomaly": ids > 0,
            "anomaly_id": pd.array(np.where(ids > 0, ids, 0), dtype="Int64"),
            "kind": lookup("kind"),
            "difficulty": lookup("difficulty"),
            "window": np.where(day_idx >= eval_start, S.EVALUATION, S.EARLIER),
            "defect": pd.Series(defect, dtype="string"),
        }
    )
    df.loc[~df["is_anomaly"], "anomaly_id"] = pd.NA
    return df.sort_values(S.KEY, kind="stable").reset_index(drop=True)[S.LABEL_COLUMNS]


def segments_frame(w: World) -> pd.DataFrame:
    launch = w.launch_day > 0
    return pd.DataFrame(
        {
            S.COUNTRY: w.seg_code.astype(str),
            S.OS: w.seg_os.astype(str),
            "country_rank": w.seg_country + 1,
            "weekend": [w.weekend[c] for c in w.seg_country],
            "level": np.round(w.level, 2),
            "monthly_growth": np.round(np.expm1(w.growth * 30), 4),
            "noise_sd": np.round(w.noise_sd, 4),
            "bursty": w.bursty,
            "launch_date": [
                w.dates[d].date().isoformat() if ok else ""
                for d, ok in zip(w.launch_day, launch, strict=True)
            ],
            "median_expected": np.round(np.nanmedian(w.expected, axis=1), 2),
        }
    )


def generate(p: GenerateParams, out_dir: Path) -> dict:
    """Write the raw folder (see the module docstring). Returns a summary (also logged)."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in S.RAW_EXTENSIONS:
        (out_dir / f"{S.COUNTS}{ext}").unlink(missing_ok=True)
    w = build_world(p)
    an = plant_anomalies(p, w)
    mu = np.where(w.present, w.expected * w.noise * an.effect, 0.0)
    counts = np.random.default_rng([p.seed, 8]).poisson(mu)
    anomalous = an.label_id > 0
    log.info(
        "world: %d segments x %d days, %d anomalies; planting defects", *w.expected.shape, len(an.records)
    )
    export = plant_defects(p, w, counts, anomalous)
    labels = labels_frame(p, w, an, counts, export.point_defect)

    export.text.to_csv(out_dir / f"{S.COUNTS}.csv", index=False)
    labels.to_parquet(out_dir / S.LABELS_FILE, index=False)
    anomalies = pd.DataFrame(an.records, columns=S.ANOMALY_COLUMNS)
    anomalies["ramp_days"] = anomalies["ramp_days"].astype("Int64")
    anomalies.to_csv(out_dir / S.ANOMALIES_FILE, index=False)
    export.defects.to_csv(out_dir / S.DEFECTS_FILE, index=False)
    segments_frame(w).to_csv(out_dir / S.SEGMENTS_FILE, index=False)
    hol = w.holidays.assign(factor_mobile=np.round(np.exp(-w.holidays["depth"]), 3)).drop(columns="depth")
    hol.to_csv(out_dir / S.HOLIDAYS_FILE, index=False)

    def counter(col: str, df: pd.DataFrame = anomalies) -> dict[str, int]:
        return dict(sorted(Counter(df[col]).items()))

    ev = anomalies[anomalies["window"] == S.EVALUATION]
    summary = {
        "rows": len(export.text),
        "true_points": len(labels),
        "segments": len(w.seg_os),
        "countries": len(w.countries),
        "days": len(w.dates),
        "period": f"{p.start.isoformat()}..{p.end.isoformat()}",
        "requests_per_day_median": int(np.median(counts.sum(axis=0))),
        "launches": int((w.launch_day > 0).sum()),
        "holiday_days": len(w.holidays),
        "anomalies": len(anomalies),
        "anomalies_by_window": counter("window"),
        "anomalies_by_kind": counter("kind"),
        "anomalies_by_scope": counter("scope"),
        "anomalies_by_difficulty": counter("difficulty"),
        "evaluation_by_difficulty": counter("difficulty", ev),
        "anomalous_points": int(labels["is_anomaly"].sum()),
        "anomalous_share_evaluation": round(
            float(labels.loc[labels["window"] == S.EVALUATION, "is_anomaly"].mean()), 4
        ),
        "defects": dict(sorted(Counter(export.defects["kind"]).items())),
        "seconds": round(time.monotonic() - t0, 1),
    }
    log.info("generated %s", summary)
    return summary


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    generate(load_params(args.params).api_anomaly.generate, args.out)


if __name__ == "__main__":
    main()
