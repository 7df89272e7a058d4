//! Classification metrics and the choice of a decision threshold.
//!
//! Scores are probabilities of pneumonia; a score at or above the threshold is called
//! pneumonia. Labels are `true` for pneumonia.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Area under the ROC curve, with tied scores counted as half (the Mann–Whitney statistic).
///
/// Fails when the labels hold only one class, since the AUC is then undefined.
pub fn auc(scores: &[f32], labels: &[bool]) -> Result<f64> {
    check_inputs(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(Error::Metrics(format!(
            "AUC needs both classes, got {positives} positive and {negatives} negative"
        )));
    }

    // Rank all scores (ties get their average rank) and sum the ranks of the positives.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_positive = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let average_rank = (start + end + 1) as f64 / 2.0;
        let tied_positives = order[start..end].iter().filter(|&&i| labels[i]).count();
        rank_sum_positive += average_rank * tied_positives as f64;
        start = end;
    }

    let p = positives as f64;
    let n = negatives as f64;
    Ok((rank_sum_positive - p * (p + 1.0) / 2.0) / (p * n))
}

/// Checks that scores and labels pair up and that no score is NaN.
fn check_inputs(scores: &[f32], labels: &[bool]) -> Result<()> {
    if scores.len() != labels.len() {
        return Err(Error::Metrics(format!(
            "{} scores but {} labels",
            scores.len(),
            labels.len()
        )));
    }
    if scores.is_empty() {
        return Err(Error::Metrics("no scores".into()));
    }
    if scores.iter().any(|s| s.is_nan()) {
        return Err(Error::Metrics("a score is NaN".into()));
    }
    Ok(())
}

/// Counts of the four outcomes at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// Pneumonia called pneumonia.
    pub tp: usize,
    /// Normal called normal.
    pub tn: usize,
    /// Normal called pneumonia.
    pub fp: usize,
    /// Pneumonia called normal.
    pub fn_: usize,
}

impl Confusion {
    /// Tallies the outcomes of calling `score >= threshold` pneumonia.
    pub fn at(scores: &[f32], labels: &[bool], threshold: f32) -> Self {
        let mut c = Confusion::default();
        for (&s, &l) in scores.iter().zip(labels) {
            match (s >= threshold, l) {
                (true, true) => c.tp += 1,
                (false, false) => c.tn += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
            }
        }
        c
    }

    /// Number of images counted.
    pub fn n(&self) -> usize {
        self.tp + self.tn + self.fp + self.fn_
    }

    /// Share of all images classified correctly.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.n())
    }

    /// Share of pneumonia images called pneumonia (recall, true positive rate).
    pub fn sensitivity(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Share of normal images called normal (true negative rate).
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }

    /// Share of pneumonia calls that are right (positive predictive value).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Share of normal calls that are right (negative predictive value).
    pub fn npv(&self) -> f64 {
        ratio(self.tn, self.tn + self.fn_)
    }

    /// Harmonic mean of precision and sensitivity.
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// `num / den`, or 0 when there is nothing to divide (no such images).
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The headline figures of a model on a set of images, at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Area under the ROC curve (threshold-free).
    pub auc: f64,
    /// Share of images classified correctly.
    pub accuracy: f64,
    /// True positive rate.
    pub sensitivity: f64,
    /// True negative rate.
    pub specificity: f64,
    /// Positive predictive value.
    pub precision: f64,
    /// Harmonic mean of precision and sensitivity.
    pub f1: f64,
    /// Number of images.
    pub n: usize,
    /// Pneumonia called pneumonia.
    pub tp: usize,
    /// Normal called normal.
    pub tn: usize,
    /// Normal called pneumonia.
    pub fp: usize,
    /// Pneumonia called normal.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// The threshold the counts were taken at.
    pub threshold: f32,
}

impl Metrics {
    /// Computes every figure for `scores` against `labels` at `threshold`.
    pub fn compute(scores: &[f32], labels: &[bool], threshold: f32) -> Result<Self> {
        let auc = auc(scores, labels)?;
        let c = Confusion::at(scores, labels, threshold);
        Ok(Self {
            auc,
            accuracy: c.accuracy(),
            sensitivity: c.sensitivity(),
            specificity: c.specificity(),
            precision: c.precision(),
            f1: c.f1(),
            n: c.n(),
            tp: c.tp,
            tn: c.tn,
            fp: c.fp,
            fn_: c.fn_,
            threshold,
        })
    }
}

/// How the decision threshold is chosen on the validation split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum ThresholdRule {
    /// Maximise Youden's J (sensitivity + specificity − 1). Where a whole interval of
    /// thresholds ties, take its centre in logit space rather than an edge: on near-separable
    /// validation data the edges sit against one class and do not survive a shift.
    Youden,
    /// The highest threshold whose validation sensitivity is at least `target`.
    Sensitivity {
        /// The sensitivity to reach, in `(0, 1]`.
        target: f64,
    },
}

/// Picks a threshold on validation `scores` by `rule`.
pub fn choose_threshold(scores: &[f32], labels: &[bool], rule: ThresholdRule) -> Result<f32> {
    check_inputs(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 || positives == labels.len() {
        return Err(Error::Metrics(
            "choosing a threshold needs both classes in validation".into(),
        ));
    }

    let mut distinct: Vec<f32> = scores.to_vec();
    distinct.sort_by(f32::total_cmp);
    distinct.dedup();

    match rule {
        ThresholdRule::Youden => Ok(youden_threshold(scores, labels, &distinct)),
        ThresholdRule::Sensitivity { target } => {
            if !(target > 0.0 && target <= 1.0) {
                return Err(Error::Config(format!(
                    "target sensitivity must be in (0, 1], got {target}"
                )));
            }
            let best = distinct
                .iter()
                .rev()
                .find(|&&t| Confusion::at(scores, labels, t).sensitivity() >= target);
            Ok(*best.unwrap_or(&distinct[0]))
        }
    }
}

/// The centre, in logit space, of the widest run of candidate thresholds that maximises J.
fn youden_threshold(scores: &[f32], labels: &[bool], distinct: &[f32]) -> f32 {
    // Candidate k calls pneumonia for scores >= distinct[k]; it holds for every threshold in
    // (distinct[k-1], distinct[k]].
    let j: Vec<f64> = distinct
        .iter()
        .map(|&t| {
            let c = Confusion::at(scores, labels, t);
            c.sensitivity() + c.specificity() - 1.0
        })
        .collect();
    let best = j.iter().cloned().fold(f64::MIN, f64::max);

    let first = j.iter().position(|&v| v >= best - 1e-12).unwrap_or(0);
    let mut last = first;
    while last + 1 < j.len() && j[last + 1] >= best - 1e-12 {
        last += 1;
    }

    let low = if first == 0 {
        distinct[0]
    } else {
        distinct[first - 1]
    };
    let high = distinct[last];
    let centre = (logit(low) + logit(high)) / 2.0;
    let threshold = sigmoid(centre);

    // The centre must keep the decisions of the optimal run: strictly above `low` (unless the
    // run starts at the lowest score) and not above `high`.
    if (first == 0 || threshold > low) && threshold <= high {
        threshold
    } else {
        high
    }
}

/// The "uncertain — refer" band around the threshold: predictions inside it are flagged for a
/// person to read instead of being trusted as they are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UncertainBand {
    /// Lower edge, as a probability of pneumonia (exclusive).
    pub low: f32,
    /// Upper edge, as a probability of pneumonia (exclusive).
    pub high: f32,
    /// The validation accuracy outside the band that the band was widened to reach.
    pub target_accuracy: f64,
    /// Share of validation images that fell inside the band.
    pub validation_share: f64,
    /// Validation accuracy of the images outside the band.
    pub validation_accuracy_outside: f64,
}

impl UncertainBand {
    /// Whether a probability falls inside the band.
    pub fn contains(&self, probability: f32) -> bool {
        probability > self.low && probability < self.high
    }
}

/// Largest share of validation images the band may flag; past it the band stops widening even
/// if the accuracy target is not met, since a tool that refers everything is no tool.
pub const MAX_UNCERTAIN_SHARE: f64 = 0.25;

/// Chooses the narrowest band, symmetric about `threshold` in logit space, outside which the
/// validation accuracy reaches `target_accuracy` (widening in steps of 0.05 logit, and never
/// past [`MAX_UNCERTAIN_SHARE`] of the images).
pub fn choose_uncertain_band(
    scores: &[f32],
    labels: &[bool],
    threshold: f32,
    target_accuracy: f64,
) -> Result<UncertainBand> {
    check_inputs(scores, labels)?;
    let centre = logit(threshold);
    let mut chosen: Option<UncertainBand> = None;

    for step in 0..=200 {
        let half_width = step as f32 * 0.05;
        let band = UncertainBand {
            low: sigmoid(centre - half_width),
            high: sigmoid(centre + half_width),
            target_accuracy,
            validation_share: 0.0,
            validation_accuracy_outside: 0.0,
        };
        let (mut inside, mut right, mut outside) = (0usize, 0usize, 0usize);
        for (&s, &l) in scores.iter().zip(labels) {
            if band.contains(s) {
                inside += 1;
            } else {
                outside += 1;
                right += usize::from((s >= threshold) == l);
            }
        }
        let share = inside as f64 / scores.len() as f64;
        if share > MAX_UNCERTAIN_SHARE {
            break;
        }
        let accuracy = ratio(right, outside);
        chosen = Some(UncertainBand {
            validation_share: share,
            validation_accuracy_outside: accuracy,
            ..band
        });
        if accuracy >= target_accuracy {
            break;
        }
    }

    chosen.ok_or_else(|| Error::Metrics("no uncertain band fits the validation scores".into()))
}

/// Log-odds of a probability, clamped away from 0 and 1.
pub fn logit(p: f32) -> f32 {
    let p = p.clamp(1e-6, 1.0 - 1e-6);
    (p / (1.0 - p)).ln()
}

/// The logistic function.
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Mean binary cross-entropy of probabilities against labels.
pub fn log_loss(scores: &[f32], labels: &[bool]) -> f64 {
    let total: f64 = scores
        .iter()
        .zip(labels)
        .map(|(&p, &l)| {
            let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
            if l { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / scores.len().max(1) as f64
}

/// Fits a temperature `T` for `sigmoid(logit / T)` that minimises the log loss on validation
/// logits (temperature scaling). Searched in log space; always positive.
pub fn fit_temperature(logits: &[f32], labels: &[bool]) -> f32 {
    let loss = |log_t: f64| {
        let t = log_t.exp() as f32;
        let probs: Vec<f32> = logits.iter().map(|&z| sigmoid(z / t)).collect();
        log_loss(&probs, labels)
    };

    // Golden-section search over log T in [ln 0.05, ln 20].
    let (mut a, mut b) = (0.05f64.ln(), 20.0f64.ln());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..80 {
        let c = b - ratio * (b - a);
        let d = a + ratio * (b - a);
        if loss(c) < loss(d) {
            b = d;
        } else {
            a = c;
        }
    }
    ((a + b) / 2.0).exp() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_a_hand_count() {
        // Positives 0.9, 0.4; negatives 0.8, 0.2, 0.1. Pairs won: (0.9 beats all 3) + (0.4 beats
        // 0.2 and 0.1) = 5 of 6.
        let scores = [0.9, 0.8, 0.4, 0.2, 0.1];
        let labels = [true, false, true, false, false];
        assert!((auc(&scores, &labels).unwrap() - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn auc_counts_ties_as_half() {
        // Positive 0.5 ties negative 0.5 (half), beats 0.3; positive 0.7 beats both: 3.5 of 4.
        let scores = [0.5, 0.7, 0.5, 0.3];
        let labels = [true, true, false, false];
        assert!((auc(&scores, &labels).unwrap() - 3.5 / 4.0).abs() < 1e-12);
        assert!((auc(&[0.5; 4], &labels).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_of_a_single_class_is_an_error_not_nan() {
        let err = auc(&[0.1, 0.2], &[true, true]).unwrap_err();
        assert!(err.to_string().contains("both classes"), "{err}");
        assert!(auc(&[], &[]).is_err());
        assert!(auc(&[f32::NAN, 0.1], &[true, false]).is_err());
    }

    #[test]
    fn confusion_and_rates_match_hand_counts() {
        let scores = [0.9, 0.6, 0.4, 0.7, 0.2, 0.1];
        let labels = [true, true, true, false, false, false];
        let m = Metrics::compute(&scores, &labels, 0.5).unwrap();
        assert_eq!((m.tp, m.fn_, m.fp, m.tn), (2, 1, 1, 2));
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert!((m.sensitivity - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.specificity - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
        // Positive 0.9 beats all three negatives, 0.6 and 0.4 beat two each: 7 of 9 pairs.
        assert!((m.auc - 7.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn youden_takes_the_centre_of_a_separating_gap() {
        // Negatives up to 0.2, positives from 0.8: every threshold in (0.2, 0.8] is perfect; the
        // logit-space centre of that gap is 0.5.
        let scores = [0.05, 0.1, 0.2, 0.8, 0.9, 0.95];
        let labels = [false, false, false, true, true, true];
        let t = choose_threshold(&scores, &labels, ThresholdRule::Youden).unwrap();
        assert!((t - 0.5).abs() < 1e-4, "{t}");
        let c = Confusion::at(&scores, &labels, t);
        assert_eq!((c.fp, c.fn_), (0, 0));
    }

    #[test]
    fn youden_keeps_the_optimum_when_classes_overlap() {
        let scores = [0.1, 0.3, 0.35, 0.6, 0.4, 0.7, 0.9];
        let labels = [false, false, false, false, true, true, true];
        let t = choose_threshold(&scores, &labels, ThresholdRule::Youden).unwrap();
        let c = Confusion::at(&scores, &labels, t);
        // Best J is 1 - 1/4 = 0.75 (one false positive at 0.6).
        assert!(
            (c.sensitivity() + c.specificity() - 1.75).abs() < 1e-9,
            "{t} {c:?}"
        );
    }

    #[test]
    fn sensitivity_rule_reaches_the_target_with_the_highest_threshold() {
        let scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95];
        let labels = [
            false, true, false, true, false, true, true, true, true, true,
        ];
        let rule = ThresholdRule::Sensitivity { target: 0.85 };
        let t = choose_threshold(&scores, &labels, rule).unwrap();
        assert_eq!(t, 0.4);
        assert!(Confusion::at(&scores, &labels, t).sensitivity() >= 0.85);
    }

    #[test]
    fn uncertain_band_widens_until_the_outside_is_accurate() {
        // Errors sit close to the threshold 0.5: at 0.45 (a positive) and 0.55 (a negative).
        let scores = [0.05, 0.1, 0.2, 0.55, 0.45, 0.8, 0.9, 0.95, 0.97, 0.99];
        let labels = [
            false, false, false, false, true, true, true, true, true, true,
        ];
        let band = choose_uncertain_band(&scores, &labels, 0.5, 0.99).unwrap();
        assert!(band.contains(0.45) && band.contains(0.55), "{band:?}");
        assert!(!band.contains(0.2) && !band.contains(0.8), "{band:?}");
        assert_eq!(band.validation_accuracy_outside, 1.0);
        assert!((band.validation_share - 0.2).abs() < 1e-12);
    }

    #[test]
    fn uncertain_band_never_flags_more_than_the_cap() {
        // Hopelessly mixed scores: the band stops at the cap instead of swallowing everything.
        let scores: Vec<f32> = (0..100).map(|i| 0.3 + 0.004 * i as f32).collect();
        let labels: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        let band = choose_uncertain_band(&scores, &labels, 0.5, 0.99).unwrap();
        assert!(band.validation_share <= MAX_UNCERTAIN_SHARE);
        assert!(band.validation_accuracy_outside < 0.99);
    }

    #[test]
    fn temperature_scaling_softens_overconfident_logits() {
        // Logits of ±6 but only 80% right: the fitted temperature must be well above 1.
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for i in 0..100 {
            let right = i % 5 != 0;
            let positive = i % 2 == 0;
            logits.push(if positive == right { 6.0 } else { -6.0 });
            labels.push(positive);
        }
        let t = fit_temperature(&logits, &labels);
        // The optimum is where sigmoid(6/T) = 0.8, so T = 6 / ln 4.
        assert!((t - 6.0 / 4f32.ln()).abs() < 0.05, "{t}");
    }
}
