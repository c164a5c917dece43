//! How often a model agreed with the pathologists: every sign-out (and amendment) of a case
//! whose slides have AI results records, per slide and model version, the model's call next
//! to the final diagnosis (table `ai_feedback`, written by consultation). Here those rows
//! become the concordance shown on the model's card: aggregate counts only, no case or
//! patient, so researchers may read it. The rows are read through
//! `pathfed_core::contracts::ai_feedback`.

use std::collections::BTreeMap;

use pathfed_core::Platform;
use pathfed_core::contracts::ai_feedback;
use pathfed_models::metrics::Interval;
use serde::Serialize;

use crate::error::InferResult;

/// Agreement of one model version with the final diagnoses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concordance {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
    /// Signed-out slides with a result of this version.
    pub slides: i64,
    /// Of which the final diagnosis is a class the model can name.
    pub comparable: i64,
    /// Of which the model's call was the final diagnosis.
    pub agreements: i64,
    /// Comparable slides where it was not: flagged for review in later dataset versions.
    pub discordant: i64,
    /// Share of comparable slides in agreement, with a 95% Wilson interval.
    pub agreement: Option<Interval>,
    /// Positive-class calls against the pathologists' on comparable slides (true/false
    /// positives/negatives, with the pathologists as the reference).
    pub tp: i64,
    /// See [`Concordance::tp`].
    pub fp: i64,
    /// See [`Concordance::tp`].
    pub fn_: i64,
    /// See [`Concordance::tp`].
    pub tn: i64,
    /// Share of the pathologists' positive slides the model flagged.
    pub sensitivity: Option<f64>,
    /// Share of the pathologists' negative slides the model did not flag.
    pub specificity: Option<f64>,
    /// Per final diagnosis: slides and agreements.
    pub by_final_diagnosis: BTreeMap<String, (i64, i64)>,
}

/// The 95% Wilson score interval of `k` successes in `n` trials.
pub fn wilson(k: i64, n: i64) -> Option<Interval> {
    if n <= 0 {
        return None;
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    Some(Interval {
        value: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

fn share(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The concordance of `model@version` (zeros when nothing was signed out yet).
pub async fn concordance(
    platform: &Platform,
    model: &str,
    version: i64,
) -> InferResult<Concordance> {
    let rows = ai_feedback::for_model(&platform.db, model, version).await?;
    let mut c = Concordance {
        model: model.to_string(),
        version,
        slides: rows.len() as i64,
        comparable: 0,
        agreements: 0,
        discordant: 0,
        agreement: None,
        tp: 0,
        fp: 0,
        fn_: 0,
        tn: 0,
        sensitivity: None,
        specificity: None,
        by_final_diagnosis: BTreeMap::new(),
    };
    for row in rows {
        let entry = c.by_final_diagnosis.entry(row.final_code).or_insert((0, 0));
        entry.0 += 1;
        if let Some(agree) = row.agree {
            c.comparable += 1;
            entry.1 += i64::from(agree);
            if agree {
                c.agreements += 1;
            } else {
                c.discordant += 1;
            }
        }
        // A diagnosis the model cannot name (non-diagnostic, say) is no negative either.
        if row.agree.is_none() {
            continue;
        }
        match (row.ai_positive, row.final_positive) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, true) => c.fn_ += 1,
            (false, false) => c.tn += 1,
        }
    }
    c.agreement = wilson(c.agreements, c.comparable);
    c.sensitivity = share(c.tp, c.tp + c.fn_);
    c.specificity = share(c.tn, c.tn + c.fp);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_hand_computed_values() {
        // 8 of 10: p = 0.8, interval (0.4902, 0.9433) to four places.
        let i = wilson(8, 10).unwrap_or(Interval {
            value: 0.0,
            low: 0.0,
            high: 0.0,
        });
        assert!((i.value - 0.8).abs() < 1e-12);
        assert!((i.low - 0.4902).abs() < 1e-4, "{i:?}");
        assert!((i.high - 0.9433).abs() < 1e-4, "{i:?}");
        // All agree: the upper bound is 1, the lower one stays below.
        let all = wilson(5, 5).unwrap_or(i);
        assert!((all.high - 1.0).abs() < 1e-12, "{all:?}");
        assert!(all.low > 0.5 && all.low < 0.6, "{all:?}");
        assert!(wilson(0, 0).is_none());
    }
}
