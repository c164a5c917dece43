//! Small-cell protection that still holds when versions are joined.
//!
//! Research ids are stable, so whoever holds several versions can join them by slide and
//! patient. A protection decided per version composes badly: a patient generalised in one
//! version (where their group was small) but published in full in another gives away in the
//! join what the first one hid, and groups counted in slides let one patient's five slides
//! pass for five people. So small cells are decided once, over the whole live research tier,
//! and counted in patients:
//!
//! - **Cells** are (taxonomy, organ, label, age band, sex, hospital, year); a cell's size is
//!   the number of distinct research patients (`rp-`) in it. Taxonomy and organ belong to the
//!   cell because a version selects by them: every group of a version is then a union of whole
//!   tier cells, so no version has a group smaller than the tier's smallest.
//! - **One set of values per patient.** Where a patient's slides disagree on a field (two
//!   cases in different years), it reads `any` for all of them. Every slide of a patient
//!   publishes the same values, in every version, whatever that version selects.
//! - **A ladder**, [`LEVELS`]: all four fields, then without the year, without the hospital,
//!   without the age band, and none. Each level publishes a subset of the one before. In
//!   rounds, every patient with a slide in a cell below the floor climbs one level (all their
//!   slides with them), until no cell below the floor holds a patient who can still climb.
//!   Nobody else's values are coarsened to make room for a patient left alone: that would
//!   trade many patients' detail for one, so such a patient's slide is left out instead. The
//!   outcome depends on the tier alone, never on the order of anything.
//! - **Suppression**: a slide whose cell is still below the floor is left out of every
//!   version. A cell too small even with nothing published (fewer patients share its
//!   taxonomy, organ and label than the floor) is left out first, so a rare diagnosis does not
//!   drag its patient's other slides up the ladder.
//! - **Versions** publish the tier's values as they are when they ask for the floor. One
//!   asking a larger k climbs the same ladder further, from the tier's levels, over its own
//!   slides (groups of label and values), and leaves out what is still small: see
//!   [`protect_version`] for what that guarantees.
//!
//! The floor is the platform's `research.min_cell_size`, which only its operator sets;
//! opted-out patients whose forget job has not run yet count in no cell.
//!
//! Known limits: the decision is made over the tier as it is when a version is built, so
//! versions built at different times may publish a patient at different levels (each such
//! combination had at least the floor's patients in its own version); a withdrawal can leave
//! what remains readable of an older version's group below the floor (the rest of it was
//! published as it was); the label is published as it is (a group whose patients all share
//! one diagnosis reveals it, k-anonymity is not l-diversity); and slide dimensions, region
//! geometry and pixels are not treated as quasi-identifiers.

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{Candidate, Quasi, SmallCells};

/// What a field reads once generalised.
pub const ANY: &str = "any";

/// The generalisation ladder: which of (age band, sex, hospital, year) each level publishes.
/// Each level publishes a subset of the one before, so two levels of one patient's values are
/// always one a coarsening of the other.
pub const LEVELS: [[bool; 4]; 5] = [
    [true, true, true, true],
    [true, true, true, false],
    [true, true, false, false],
    [false, true, false, false],
    [false, false, false, false],
];

/// The last level: nothing published.
const TOP: usize = LEVELS.len() - 1;

/// `quasi` as level `level` of [`LEVELS`] publishes it: other fields read [`ANY`].
pub fn generalise(quasi: &Quasi, level: usize) -> Quasi {
    let [age_band, sex, hospital, year] = LEVELS[level.min(TOP)];
    let keep = |publish: bool, value: &str| {
        if publish {
            value.to_string()
        } else {
            ANY.to_string()
        }
    };
    Quasi {
        age_band: keep(age_band, &quasi.age_band),
        sex: keep(sex, &quasi.sex),
        hospital: keep(hospital, &quasi.hospital),
        year: keep(year, &quasi.year),
    }
}

/// A live research slide as the tier-wide decision sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TierSlide {
    /// Research slide id.
    pub id: String,
    /// Research patient id.
    pub patient: String,
    /// Taxonomy of its label.
    pub taxonomy: String,
    /// Organ.
    pub organ: String,
    /// Slide-level label (taxonomy code).
    pub label: String,
    /// Quasi-identifiers as curated.
    pub quasi: Quasi,
}

/// What the whole live tier publishes at the platform's floor: each patient's values and the
/// slides left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierDecision {
    floor: u64,
    /// Each patient's values before generalisation (one per field for all their slides).
    base: BTreeMap<String, Quasi>,
    /// Each patient's level on [`LEVELS`]; absent means 0.
    levels: BTreeMap<String, usize>,
    /// Slide ids left out at the floor.
    suppressed: BTreeSet<String>,
}

impl TierDecision {
    /// Decides over `slides`: every live research slide of every taxonomy and organ, less
    /// those of patients who opted out, at `floor` patients (at least 1).
    pub fn decide(slides: &[TierSlide], floor: u64) -> Self {
        let floor = floor.max(1);
        let base = patient_values(slides.iter().map(|s| (s.patient.as_str(), &s.quasi)));
        let cells: Vec<Cell<'_, (&str, &str, &str)>> = slides
            .iter()
            .map(|s| Cell {
                slide: &s.id,
                patient: &s.patient,
                key: (s.taxonomy.as_str(), s.organ.as_str(), s.label.as_str()),
            })
            .collect();
        let mut levels = BTreeMap::new();
        let suppressed = climb(&cells, &base, &mut levels, floor);
        Self {
            floor,
            base,
            levels,
            suppressed,
        }
    }

    /// The floor it was decided at, in patients.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The patient's level on [`LEVELS`]; `None` for a patient the tier does not hold.
    pub fn level(&self, patient: &str) -> Option<usize> {
        self.base
            .contains_key(patient)
            .then(|| self.levels.get(patient).copied().unwrap_or(0))
    }

    /// What every slide of the patient publishes at the floor.
    pub fn published(&self, patient: &str) -> Option<Quasi> {
        Some(generalise(self.base.get(patient)?, self.level(patient)?))
    }

    /// Whether the slide is left out at the floor.
    pub fn is_suppressed(&self, slide: &str) -> bool {
        self.suppressed.contains(slide)
    }
}

/// Protects a version's selection (`candidates`, carrying their quasi-identifiers as curated)
/// with the tier's decision: each patient publishes the tier's values, and slides the tier
/// leaves out stay out. At `k` above the floor, the version's patients climb further from the
/// tier's levels over the version's own groups (label and values), and what is still below
/// `k` is left out.
///
/// What a larger `k` guarantees: no group of this version alone holds fewer than `k`
/// patients. Joined with other versions, a patient's values are the finest any of them
/// published, at most the tier's at the floor: joins are protected at the floor only.
///
/// The report counts groups in distinct patients; generalised and suppressed count slides.
pub fn protect_version(
    candidates: Vec<Candidate>,
    tier: &TierDecision,
    k: u64,
) -> (Vec<Candidate>, SmallCells) {
    let k = k.max(tier.floor);
    let before = candidates.len();
    // Slides the tier leaves out, or does not hold (curated after it was read), stay out.
    let selected: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| !tier.is_suppressed(&c.id) && tier.level(&c.patient).is_some())
        .collect();
    let mut levels: BTreeMap<String, usize> = selected
        .iter()
        .filter_map(|c| Some((c.patient.clone(), tier.level(&c.patient)?)))
        .collect();
    let suppressed = {
        let cells: Vec<Cell<'_, &str>> = selected
            .iter()
            .map(|c| Cell {
                slide: &c.id,
                patient: &c.patient,
                key: c.label.as_str(),
            })
            .collect();
        climb(&cells, &tier.base, &mut levels, k)
    };
    let mut generalised = 0;
    let mut kept = Vec::with_capacity(selected.len());
    for mut slide in selected {
        if suppressed.contains(&slide.id) {
            continue;
        }
        let level = levels.get(&slide.patient).copied().unwrap_or(0);
        let published = tier
            .base
            .get(&slide.patient)
            .map_or_else(|| generalise(&slide.quasi, TOP), |q| generalise(q, level));
        if published != slide.quasi {
            generalised += 1;
        }
        slide.quasi = published;
        kept.push(slide);
    }
    let report = SmallCells {
        min_cell_size: k,
        smallest_published: smallest_group(&kept),
        generalised,
        suppressed: (before - kept.len()) as u64,
    };
    (kept, report)
}

/// The smallest group of `slides` by label and quasi-identifiers, in distinct patients (0 when
/// there are none).
pub fn smallest_group(slides: &[Candidate]) -> u64 {
    let mut groups: BTreeMap<(&str, &Quasi), BTreeSet<&str>> = BTreeMap::new();
    for s in slides {
        groups
            .entry((s.label.as_str(), &s.quasi))
            .or_default()
            .insert(s.patient.as_str());
    }
    groups.values().map(|p| p.len() as u64).min().unwrap_or(0)
}

/// One value per field per patient: the value all the patient's slides share, else [`ANY`].
fn patient_values<'a>(
    slides: impl Iterator<Item = (&'a str, &'a Quasi)>,
) -> BTreeMap<String, Quasi> {
    let mut values: BTreeMap<String, Quasi> = BTreeMap::new();
    for (patient, quasi) in slides {
        values
            .entry(patient.to_string())
            .and_modify(|one| merge(one, quasi))
            .or_insert_with(|| quasi.clone());
    }
    values
}

/// Keeps the fields of `one` that `other` shares; the others read [`ANY`].
fn merge(one: &mut Quasi, other: &Quasi) {
    for (mine, theirs) in [
        (&mut one.age_band, &other.age_band),
        (&mut one.sex, &other.sex),
        (&mut one.hospital, &other.hospital),
        (&mut one.year, &other.year),
    ] {
        if *mine != *theirs {
            *mine = ANY.to_string();
        }
    }
}

/// A slide in a climb: its patient and its cell's coordinates besides the quasi-identifiers.
struct Cell<'a, K> {
    slide: &'a str,
    patient: &'a str,
    key: K,
}

/// Climbs patients up [`LEVELS`] from `levels` until no group below `k` patients holds one who
/// can still climb; returns the ids of the slides left out (groups still below `k`).
fn climb<K: Ord + Clone>(
    cells: &[Cell<'_, K>],
    base: &BTreeMap<String, Quasi>,
    levels: &mut BTreeMap<String, usize>,
    k: u64,
) -> BTreeSet<String> {
    // At the top level a group is its key alone: a key with fewer than k patients cannot be
    // saved by generalising, so its slides go now and pull nobody up the ladder.
    let mut by_key: BTreeMap<&K, BTreeSet<&str>> = BTreeMap::new();
    for c in cells {
        by_key.entry(&c.key).or_default().insert(c.patient);
    }
    let mut suppressed = BTreeSet::new();
    let mut live: Vec<&Cell<'_, K>> = Vec::with_capacity(cells.len());
    for c in cells {
        let patients = by_key.get(&c.key).map_or(0, BTreeSet::len) as u64;
        if patients < k {
            suppressed.insert(c.slide.to_string());
        } else {
            live.push(c);
        }
    }
    // Every round moves at least one patient up; levels are bounded, so this ends.
    loop {
        let groups = group_patients(&live, base, levels);
        let small: BTreeSet<&str> = groups
            .values()
            .filter(|patients| (patients.len() as u64) < k)
            .flat_map(|patients| patients.iter().copied())
            .collect();
        let mut climbed = false;
        for patient in small {
            let level = levels.entry(patient.to_string()).or_insert(0);
            if *level < TOP {
                *level += 1;
                climbed = true;
            }
        }
        if !climbed {
            break;
        }
    }
    let groups = group_patients(&live, base, levels);
    for c in &live {
        let patients = groups
            .get(&group_of(c, base, levels))
            .map_or(0, BTreeSet::len) as u64;
        if patients < k {
            suppressed.insert(c.slide.to_string());
        }
    }
    suppressed
}

/// The group a slide falls in: its key and its patient's values at the patient's level.
fn group_of<K: Clone>(
    cell: &Cell<'_, K>,
    base: &BTreeMap<String, Quasi>,
    levels: &BTreeMap<String, usize>,
) -> (K, Quasi) {
    let level = levels.get(cell.patient).copied().unwrap_or(0);
    let quasi = base.get(cell.patient).map_or_else(
        || generalise(&Quasi::default(), TOP),
        |q| generalise(q, level),
    );
    (cell.key.clone(), quasi)
}

/// Distinct patients per group.
fn group_patients<'a, K: Ord + Clone>(
    live: &[&Cell<'a, K>],
    base: &BTreeMap<String, Quasi>,
    levels: &BTreeMap<String, usize>,
) -> BTreeMap<(K, Quasi), BTreeSet<&'a str>> {
    let mut groups: BTreeMap<(K, Quasi), BTreeSet<&'a str>> = BTreeMap::new();
    for c in live {
        groups
            .entry(group_of(c, base, levels))
            .or_default()
            .insert(c.patient);
    }
    groups
}
