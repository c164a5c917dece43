//! Small cells decided over the whole research tier and counted in patients: one patient's
//! slides never pass for several people, a patient publishes the same values in every version
//! at the floor, a larger k only coarsens them, and versions joined together hold no
//! combination of label and quasi-identifiers shared by fewer patients than the floor.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use pathfed_datasets::anonymity::{ANY, TierDecision, TierSlide, protect_version};
use pathfed_datasets::manifest::{Candidate, Quasi};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn quasi(age_band: &str, sex: &str, hospital: &str, year: &str) -> Quasi {
    Quasi {
        age_band: age_band.into(),
        sex: sex.into(),
        hospital: hospital.into(),
        year: year.into(),
    }
}

/// (taxonomy, organ, label) of a cell.
type Cell = (&'static str, &'static str, &'static str);

const G1: Cell = ("gastric-group", "stomach", "GAS-G1");
const G5: Cell = ("gastric-group", "stomach", "GAS-G5");
const COLON_BENIGN: Cell = ("general", "colon", "GEN-B");

fn slide(id: &str, patient: &str, (taxonomy, organ, label): Cell, q: Quasi) -> TierSlide {
    TierSlide {
        id: id.into(),
        patient: patient.into(),
        taxonomy: taxonomy.into(),
        organ: organ.into(),
        label: label.into(),
        quasi: q,
    }
}

fn candidate(s: &TierSlide) -> Candidate {
    Candidate {
        id: s.id.clone(),
        patient: s.patient.clone(),
        label: s.label.clone(),
        quasi: s.quasi.clone(),
        object_key: String::new(),
        sha256: String::new(),
        dimensions: (1, 1),
        mpp: None,
        regions: serde_json::Value::Null,
        ai_discordant: None,
    }
}

/// A version's selection: the tier's slides of `taxonomy` (and `organ`), as curated.
fn select(tier: &[TierSlide], taxonomy: &str, organ: Option<&str>) -> Vec<Candidate> {
    tier.iter()
        .filter(|s| s.taxonomy == taxonomy && organ.is_none_or(|o| o == s.organ))
        .map(candidate)
        .collect()
}

/// Distinct patients per (label, published quasi-identifiers) over all `versions` together.
fn joined_groups<V: AsRef<[Candidate]>>(
    versions: &[V],
) -> BTreeMap<(String, Quasi), BTreeSet<String>> {
    let mut groups: BTreeMap<(String, Quasi), BTreeSet<String>> = BTreeMap::new();
    for version in versions {
        for s in version.as_ref() {
            groups
                .entry((s.label.clone(), s.quasi.clone()))
                .or_default()
                .insert(s.patient.clone());
        }
    }
    groups
}

/// Each patient's published values in `version`; panics where one patient's slides disagree.
fn values_by_patient(version: &[Candidate]) -> BTreeMap<String, Quasi> {
    let mut values = BTreeMap::new();
    for s in version {
        let previous = values.insert(s.patient.clone(), s.quasi.clone());
        assert!(
            previous.is_none_or(|p| p == s.quasi),
            "{}'s slides publish different values",
            s.patient
        );
    }
    values
}

/// Whether every field of `coarse` is the one of `fine` or `any`.
fn coarsens(coarse: &Quasi, fine: &Quasi) -> bool {
    [
        (&coarse.age_band, &fine.age_band),
        (&coarse.sex, &fine.sex),
        (&coarse.hospital, &fine.hospital),
        (&coarse.year, &fine.year),
    ]
    .iter()
    .all(|(c, f)| c == f || *c == ANY)
}

/// One of `of`, at random.
fn pick(rng: &mut StdRng, of: &[&str]) -> String {
    of[rng.random_range(0..of.len())].to_string()
}

/// The labels of the generated cohort's taxonomies.
fn labels(taxonomy: &str) -> &'static [&'static str] {
    if taxonomy == "gastric-group" {
        &["GAS-G1", "GAS-G3", "GAS-G5"]
    } else {
        &["GEN-B", "GEN-M"]
    }
}

#[test]
fn five_slides_of_one_patient_are_one_patient_not_five() {
    let usual = quasi("60-69", "male", "rh-a", "2026");
    let mut tier: Vec<TierSlide> = (0..5)
        .map(|i| {
            let id = format!("rs-q{i}");
            slide(&id, &format!("rp-q{i}"), G1, usual.clone())
        })
        .collect();
    // One patient, five slides, alone in their group: counted in slides it would pass at 5.
    for i in 0..5 {
        let rare = quasi("20-29", "female", "rh-a", "2026");
        tier.push(slide(&format!("rs-p{i}"), "rp-p", G1, rare));
    }
    let decision = TierDecision::decide(&tier, 5);
    for i in 0..5 {
        assert!(
            decision.is_suppressed(&format!("rs-p{i}")),
            "rs-p{i} published"
        );
    }
    let (kept, report) = protect_version(select(&tier, "gastric-group", None), &decision, 5);
    assert!(kept.iter().all(|s| s.patient != "rp-p"), "{kept:?}");
    assert_eq!(kept.len(), 5);
    assert_eq!(
        report.smallest_published, 5,
        "counted in patients: {report:?}"
    );
    assert_eq!((report.suppressed, report.min_cell_size), (5, 5));

    // The same five slides and five other patients of their own values: a group of 6.
    for i in 0..5 {
        let rare = quasi("20-29", "female", "rh-a", "2026");
        tier.push(slide(&format!("rs-r{i}"), &format!("rp-r{i}"), G1, rare));
    }
    let decision = TierDecision::decide(&tier, 5);
    let (kept, report) = protect_version(select(&tier, "gastric-group", None), &decision, 5);
    assert_eq!(kept.len(), 15);
    assert_eq!(report.smallest_published, 5, "{report:?}");
    assert_eq!((report.suppressed, report.generalised), (0, 0));
}

#[test]
fn patients_alone_climb_together_and_all_their_slides_carry_the_same_values() {
    let tier = vec![
        slide("rs-a", "rp-a", G1, quasi("60-69", "male", "rh-a", "2025")),
        slide("rs-b", "rp-b", G1, quasi("60-69", "male", "rh-a", "2025")),
        // Two women of different ages, three slides each, one in another year.
        slide(
            "rs-c1",
            "rp-c",
            G1,
            quasi("20-29", "female", "rh-a", "2025"),
        ),
        slide(
            "rs-c2",
            "rp-c",
            G1,
            quasi("20-29", "female", "rh-a", "2025"),
        ),
        slide(
            "rs-c3",
            "rp-c",
            G1,
            quasi("20-29", "female", "rh-a", "2026"),
        ),
        slide(
            "rs-d1",
            "rp-d",
            G1,
            quasi("30-39", "female", "rh-b", "2025"),
        ),
        slide(
            "rs-d2",
            "rp-d",
            G1,
            quasi("30-39", "female", "rh-b", "2025"),
        ),
        slide(
            "rs-d3",
            "rp-d",
            G1,
            quasi("30-39", "female", "rh-b", "2025"),
        ),
    ];
    let decision = TierDecision::decide(&tier, 2);
    let (kept, report) = protect_version(select(&tier, "gastric-group", None), &decision, 2);
    assert_eq!(kept.len(), 8, "nobody needs leaving out: {report:?}");
    let values = values_by_patient(&kept);
    assert_eq!(values["rp-a"], quasi("60-69", "male", "rh-a", "2025"));
    assert_eq!(values["rp-c"], quasi(ANY, "female", ANY, ANY));
    assert_eq!(values["rp-d"], values["rp-c"]);
    assert_eq!(report.smallest_published, 2);
    assert_eq!(report.generalised, 6);
}

#[test]
fn a_patient_publishes_the_same_values_in_versions_of_other_selections() {
    let q = |age: &str, sex: &str| quasi(age, sex, "rh-a", "2026");
    let tier = vec![
        // A: a stomach slide in a big group, a colon slide alone with their values.
        slide("rs-a1", "rp-a", G1, q("60-69", "male")),
        slide("rs-a2", "rp-a", COLON_BENIGN, q("60-69", "male")),
        slide("rs-b", "rp-b", G1, q("60-69", "male")),
        slide("rs-c", "rp-c", G1, q("70-79", "female")),
        slide("rs-d", "rp-d", G1, q("50-59", "female")),
        slide("rs-e", "rp-e", COLON_BENIGN, q("30-39", "female")),
        // X: two slides alone with their diagnosis.
        slide("rs-x1", "rp-x", G5, q("60-69", "male")),
        slide("rs-x2", "rp-x", G5, q("60-69", "male")),
    ];
    let decision = TierDecision::decide(&tier, 2);
    let (gastric, _) = protect_version(select(&tier, "gastric-group", None), &decision, 2);
    let (general, _) = protect_version(select(&tier, "general", None), &decision, 2);
    let (wider, report) = protect_version(select(&tier, "gastric-group", None), &decision, 3);
    assert!(report.smallest_published >= 3, "{report:?}");

    let (g, n, w) = (
        values_by_patient(&gastric),
        values_by_patient(&general),
        values_by_patient(&wider),
    );
    assert_eq!(
        g["rp-a"], n["rp-a"],
        "one patient, two versions, two sets of values"
    );
    assert_eq!(Some(&g["rp-a"]), decision.published("rp-a").as_ref());
    assert!(
        !g.contains_key("rp-x"),
        "one patient's two slides are not a group of two"
    );
    for (patient, values) in &w {
        assert!(
            coarsens(values, &g[patient]),
            "{patient}: {values:?} vs {:?}",
            g[patient]
        );
    }
    for (group, patients) in joined_groups(&[&gastric, &general, &wider]) {
        assert!(
            patients.len() >= 2,
            "{group:?} is shared by {patients:?} only"
        );
    }
}

#[test]
fn versions_of_any_selection_joined_hold_no_group_below_the_floor() {
    let mut rng = StdRng::seed_from_u64(17);
    let organs = [
        ("stomach", "gastric-group"),
        ("colon", "general"),
        ("skin", "general"),
    ];
    let mut tier = Vec::new();
    for patient in 0..120 {
        let hospital = pick(&mut rng, &["rh-a", "rh-b", "rh-c"]);
        let sex = pick(&mut rng, &["female", "male"]);
        let age = pick(&mut rng, &["40-49", "50-59", "60-69", "70-79"]);
        for n in 0..rng.random_range(1..4) {
            let (organ, taxonomy) = organs[rng.random_range(0..organs.len())];
            // Now and then a case in another year.
            let year = pick(&mut rng, &["2025", "2025", "2026"]);
            let choices = labels(taxonomy);
            let label = choices[rng.random_range(0..choices.len())];
            tier.push(slide(
                &format!("rs-{patient:03}-{n}"),
                &format!("rp-{patient:03}"),
                (taxonomy, organ, label),
                quasi(&age, &sex, &hospital, &year),
            ));
        }
    }
    let floor = 3;
    let decision = TierDecision::decide(&tier, floor);
    let selections: [(&str, Option<&str>); 5] = [
        ("gastric-group", None),
        ("gastric-group", Some("stomach")),
        ("general", None),
        ("general", Some("colon")),
        ("general", Some("skin")),
    ];
    let mut at_floor = Vec::new();
    let mut larger = Vec::new();
    for (taxonomy, organ) in selections {
        for k in [floor, 4, 7] {
            let (kept, report) = protect_version(select(&tier, taxonomy, organ), &decision, k);
            assert!(
                kept.is_empty() || report.smallest_published >= k,
                "{taxonomy} {organ:?} at {k}: {report:?}"
            );
            for (group, patients) in joined_groups(&[&kept]) {
                assert!(
                    patients.len() as u64 >= k,
                    "{taxonomy} {organ:?} at {k}: {group:?}"
                );
            }
            if k == floor {
                at_floor.push(kept);
            } else {
                larger.push(kept);
            }
        }
    }
    // At the floor, every version publishes each patient's values as the tier decided them.
    let mut seen: BTreeMap<String, Quasi> = BTreeMap::new();
    for version in &at_floor {
        for (patient, values) in values_by_patient(version) {
            assert_eq!(
                Some(&values),
                decision.published(&patient).as_ref(),
                "{patient}"
            );
            let previous = seen.insert(patient.clone(), values.clone());
            assert!(previous.is_none_or(|p| p == values), "{patient}");
        }
    }
    // A larger k only coarsens them.
    for version in &larger {
        for (patient, values) in values_by_patient(version) {
            assert!(coarsens(&values, &seen[&patient]), "{patient}: {values:?}");
        }
    }
    // Every version joined with every other: no combination below the floor.
    let all: Vec<&[Candidate]> = at_floor.iter().chain(&larger).map(Vec::as_slice).collect();
    let groups = joined_groups(&all);
    assert!(
        groups.len() >= 5,
        "a cohort that publishes something: {groups:?}"
    );
    for (group, patients) in groups {
        assert!(patients.len() as u64 >= floor, "{group:?}: {patients:?}");
    }
}
