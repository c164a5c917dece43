//! How often a model agreed with the pathologists: every sign-out (and amendment) of a case
//! whose slides have AI results records, per slide and model version, the model's call next
//! to the final diagnosis (table `ai_feedback`, written by consultation). Here those rows
//! become the concordance shown on the model's card: aggregate counts only, no case or
//! patient, so researchers may read it.

use std::collections::BTreeMap;

use pathfed_core::Platform;
use pathfed_training::metrics::Interval;
use serde::Serialize;
use sqlx::Row as _;

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
    let rows = sqlx::query(
        "SELECT ai_positive, final_code, final_positive, agree FROM ai_feedback \
         WHERE model_name = $1 AND model_version = $2",
    )
    .bind(model)
    .bind(version)
    .fetch_all(platform.db.pool())
    .await?;
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
    for row in &rows {
        let ai: i64 = row.try_get("ai_positive")?;
        let final_positive: i64 = row.try_get("final_positive")?;
        let agree: Option<i64> = row.try_get("agree")?;
        let code: String = row.try_get("final_code")?;
        let entry = c.by_final_diagnosis.entry(code).or_insert((0, 0));
        entry.0 += 1;
        if let Some(agree) = agree {
            c.comparable += 1;
            entry.1 += agree;
            if agree == 1 {
                c.agreements += 1;
            } else {
                c.discordant += 1;
            }
        }
        // A diagnosis the model cannot name (non-diagnostic, say) is no negative either.
        if agree.is_none() {
            continue;
        }
        match (ai != 0, final_positive != 0) {
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
