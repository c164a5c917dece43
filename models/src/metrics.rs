//! Slide-level evaluation: ROC AUC (ties counted half), balanced accuracy, sensitivity and
//! specificity at a threshold, the confusion matrix, percentile bootstrap intervals with a
//! seed, and mean ± sd over seeds. Binary tasks: `positive` is the score of the positive class.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

/// One scored case (a slide): its true class and the model's score for the positive class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// True class is the positive one.
    pub positive: bool,
    /// Score for the positive class (a probability).
    pub score: f64,
}

/// Counts at one threshold (score ≥ threshold predicts positive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// True negatives.
    pub tn: u64,
    /// False negatives.
    pub fn_: u64,
}

impl Confusion {
    /// Counts `cases` at `threshold`.
    pub fn at(cases: &[Scored], threshold: f64) -> Self {
        let mut c = Self::default();
        for case in cases {
            match (case.positive, case.score >= threshold) {
                (true, true) => c.tp += 1,
                (true, false) => c.fn_ += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// TP / (TP + FN); `None` without positives.
    pub fn sensitivity(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// TN / (TN + FP); `None` without negatives.
    pub fn specificity(&self) -> Option<f64> {
        ratio(self.tn, self.tn + self.fp)
    }

    /// Mean of sensitivity and specificity; `None` unless both classes occur.
    pub fn balanced_accuracy(&self) -> Option<f64> {
        Some((self.sensitivity()? + self.specificity()?) / 2.0)
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (Mann–Whitney). `None` unless both classes occur.
pub fn auc(cases: &[Scored]) -> Option<f64> {
    let mut sorted: Vec<Scored> = cases
        .iter()
        .copied()
        .filter(|c| c.score.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.score.total_cmp(&b.score));
    let positives = sorted.iter().filter(|c| c.positive).count() as f64;
    let negatives = sorted.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Mid-ranks over runs of equal scores.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].score == sorted[i].score {
            j += 1;
        }
        let mid_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mid_rank * sorted[i..j].iter().filter(|c| c.positive).count() as f64;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// The ROC curve as (false-positive rate, true-positive rate) points from (0,0) to (1,1),
/// one per distinct threshold.
pub fn roc_curve(cases: &[Scored]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<Scored> = cases.to_vec();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let p = sorted.iter().filter(|c| c.positive).count().max(1) as f64;
    let n = sorted.iter().filter(|c| !c.positive).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![(0.0, 0.0)];
    let mut i = 0;
    while i < sorted.len() {
        let score = sorted[i].score;
        while i < sorted.len() && sorted[i].score == score {
            if sorted[i].positive {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        points.push((fp / n, tp / p));
    }
    points
}

/// A point estimate with a confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The estimate on all cases.
    pub value: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// Balanced accuracy of a call that cannot tell the positive class from the rest. Ours is the
/// positive class against the others (the mean of sensitivity and specificity), so chance is
/// 1/2 whatever the number of classes: 1/K is chance only for the K-class mean recall, which
/// is not what is measured here, and would let a useless three-class model pass at 0.4.
pub const CHANCE_BALANCED_ACCURACY: f64 = 0.5;

/// Whether a balanced accuracy shows that a model discriminates: the estimate and the whole
/// interval above [`CHANCE_BALANCED_ACCURACY`]. Unmeasured (`None`) or not a number does not.
pub fn above_chance(balanced_accuracy: Option<&Interval>) -> bool {
    balanced_accuracy
        .is_some_and(|i| i.value > CHANCE_BALANCED_ACCURACY && i.low > CHANCE_BALANCED_ACCURACY)
}

/// Percentile bootstrap interval (level e.g. 0.95) of `metric` over `resamples` resamples of
/// `cases` with replacement, reproducible with `seed`. Resamples where the metric is undefined
/// (one class only) are skipped; `None` if the metric is undefined on all cases.
pub fn bootstrap(
    cases: &[Scored],
    metric: impl Fn(&[Scored]) -> Option<f64>,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<Interval> {
    let value = metric(cases)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut draws = Vec::with_capacity(resamples);
    let mut sample = Vec::with_capacity(cases.len());
    for _ in 0..resamples {
        sample.clear();
        sample.extend((0..cases.len()).map(|_| cases[rng.random_range(0..cases.len())]));
        if let Some(v) = metric(&sample) {
            draws.push(v);
        }
    }
    if draws.is_empty() {
        return Some(Interval {
            value,
            low: value,
            high: value,
        });
    }
    draws.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    Some(Interval {
        value,
        low: quantile(&draws, tail),
        high: quantile(&draws, 1.0 - tail),
    })
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_sd(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Everything reported for a test split at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Cases (slides) evaluated.
    pub cases: usize,
    /// Threshold on the positive score.
    pub threshold: f64,
    /// ROC AUC with a bootstrap interval.
    pub auc: Option<Interval>,
    /// Balanced accuracy with a bootstrap interval.
    pub balanced_accuracy: Option<Interval>,
    /// Sensitivity with a bootstrap interval.
    pub sensitivity: Option<Interval>,
    /// Specificity with a bootstrap interval.
    pub specificity: Option<Interval>,
    /// Counts at the threshold.
    pub confusion: Confusion,
    /// ROC points (FPR, TPR).
    pub roc: Vec<(f64, f64)>,
}

/// Bootstrap resamples behind every interval.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// Evaluates `cases` at `threshold` with 95 % bootstrap intervals (seeded).
pub fn evaluate(cases: &[Scored], threshold: f64, seed: u64) -> Evaluation {
    let at = |f: fn(&Confusion) -> Option<f64>| move |c: &[Scored]| f(&Confusion::at(c, threshold));
    let interval =
        |m: &dyn Fn(&[Scored]) -> Option<f64>| bootstrap(cases, m, BOOTSTRAP_RESAMPLES, 0.95, seed);
    Evaluation {
        cases: cases.len(),
        threshold,
        auc: interval(&auc),
        balanced_accuracy: interval(&at(Confusion::balanced_accuracy)),
        sensitivity: interval(&at(Confusion::sensitivity)),
        specificity: interval(&at(Confusion::specificity)),
        confusion: Confusion::at(cases, threshold),
        roc: roc_curve(cases),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases(list: &[(bool, f64)]) -> Vec<Scored> {
        list.iter()
            .map(|&(positive, score)| Scored { positive, score })
            .collect()
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // Pairs (pos, neg): 0.9>0.1, 0.9>0.5, 0.5=0.5 (half), 0.5>0.1 → (1+1+0.5+1)/4.
        let c = cases(&[(true, 0.9), (true, 0.5), (false, 0.5), (false, 0.1)]);
        assert_eq!(auc(&c), Some(3.5 / 4.0));
        // All scores equal: chance.
        let c = cases(&[(true, 0.3), (false, 0.3), (true, 0.3)]);
        assert_eq!(auc(&c), Some(0.5));
        // Perfectly inverted.
        let c = cases(&[(true, 0.1), (false, 0.9)]);
        assert_eq!(auc(&c), Some(0.0));
        assert_eq!(auc(&cases(&[(true, 0.1), (true, 0.9)])), None);
    }

    #[test]
    fn confusion_and_balanced_accuracy_by_hand() {
        // Positives 0.9, 0.6, 0.4 ; negatives 0.7, 0.2 at 0.5: TP 2, FN 1, FP 1, TN 1.
        let c = cases(&[
            (true, 0.9),
            (true, 0.6),
            (true, 0.4),
            (false, 0.7),
            (false, 0.2),
        ]);
        let m = Confusion::at(&c, 0.5);
        assert_eq!(
            m,
            Confusion {
                tp: 2,
                fp: 1,
                tn: 1,
                fn_: 1
            }
        );
        assert_eq!(m.sensitivity(), Some(2.0 / 3.0));
        assert_eq!(m.specificity(), Some(0.5));
        assert_eq!(m.balanced_accuracy(), Some((2.0 / 3.0 + 0.5) / 2.0));
        // Score equal to the threshold predicts positive.
        assert_eq!(Confusion::at(&cases(&[(true, 0.5)]), 0.5).tp, 1);
    }

    #[test]
    fn roc_runs_from_origin_to_corner_through_tied_steps() {
        let c = cases(&[(true, 0.9), (true, 0.5), (false, 0.5), (false, 0.1)]);
        assert_eq!(
            roc_curve(&c),
            [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]
        );
    }

    #[test]
    fn bootstrap_is_reproducible_and_brackets_the_estimate() {
        let c: Vec<Scored> = (0..60)
            .map(|i| Scored {
                positive: i % 2 == 0,
                score: ((i * 37) % 60) as f64 / 60.0 + if i % 2 == 0 { 0.2 } else { 0.0 },
            })
            .collect();
        let a = bootstrap(&c, auc, 500, 0.95, 7).unwrap();
        let b = bootstrap(&c, auc, 500, 0.95, 7).unwrap();
        assert_eq!(a, b, "same seed, same interval");
        let other = bootstrap(&c, auc, 500, 0.95, 8).unwrap();
        assert_ne!(a, other, "another seed draws other resamples");
        assert!(a.low < a.value && a.value < a.high, "{a:?}");
        assert!(a.high - a.low < 0.4, "{a:?}");
    }

    #[test]
    fn above_chance_needs_the_whole_interval_above_one_half() {
        let i = |value, low, high| Interval { value, low, high };
        assert!(above_chance(Some(&i(0.9, 0.7, 1.0))));
        // The interval reaches chance: not shown to discriminate.
        assert!(!above_chance(Some(&i(0.7, 0.5, 0.9))));
        assert!(!above_chance(Some(&i(0.6, 0.3, 0.8))));
        // At or below chance, unmeasured, or not a number.
        assert!(!above_chance(Some(&i(0.5, 0.5, 0.5))));
        assert!(!above_chance(Some(&i(0.2, 0.1, 0.3))));
        assert!(!above_chance(None));
        assert!(!above_chance(Some(&i(f64::NAN, 0.7, 1.0))));
    }

    #[test]
    fn mean_and_sample_sd() {
        assert_eq!(mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).0, 5.0);
        let (_, sd) = mean_sd(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_sd(&[3.0]), (3.0, 0.0));
    }
}
