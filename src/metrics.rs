//! Classification metrics and the choice of a decision threshold.
//!
//! Scores are probabilities of pneumonia; a score at or above the threshold is called
//! pneumonia. Labels are `true` for pneumonia.
//!
//! Threshold-free figures: [`auc`], [`average_precision`] (AUPRC), [`brier_score`],
//! [`expected_calibration_error`], with the curves behind them ([`roc_curve`], [`pr_curve`],
//! [`reliability_bins`]). Figures at a threshold: [`Confusion`] and [`Metrics`]. Their
//! uncertainty: [`stratified_bootstrap`]. Figures that need both classes fail with a clear
//! error on one class instead of returning NaN.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod bootstrap;

pub use bootstrap::{
    Bootstrap, BootstrapConfig, DEFAULT_BOOTSTRAP_SEED, DEFAULT_RESAMPLES, Figures, Interval,
    ROC_BAND_POINTS, RocBandPoint, percentile, stratified_bootstrap,
};

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

/// Checks that labels hold both classes, naming the figure that needs them.
fn check_both_classes(labels: &[bool], figure: &str) -> Result<()> {
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(Error::Metrics(format!(
            "{figure} needs both classes, got {positives} positive and {negatives} negative"
        )));
    }
    Ok(())
}

/// Checks that every score is a probability, in `[0, 1]`.
fn check_probabilities(scores: &[f32], figure: &str) -> Result<()> {
    match scores.iter().find(|s| !(0.0..=1.0).contains(*s)) {
        Some(bad) => Err(Error::Metrics(format!(
            "{figure} needs probabilities in [0, 1], got {bad}"
        ))),
        None => Ok(()),
    }
}

/// Positives and negatives counted at each distinct score, highest score first.
///
/// Every threshold-free figure below is computed from this form, so that a bootstrap resample
/// (which only changes how often each image counts) reuses the same code as the point estimate.
#[derive(Debug, Clone)]
pub(crate) struct Tally {
    /// Distinct scores, highest first.
    pub(crate) scores: Vec<f32>,
    /// Positives at each distinct score.
    pub(crate) positives: Vec<usize>,
    /// Negatives at each distinct score.
    pub(crate) negatives: Vec<usize>,
}

impl Tally {
    /// Groups `scores` by value and counts each image once. Also returns, for each image, the
    /// index of its group. Inputs must have passed [`check_inputs`].
    pub(crate) fn grouped(scores: &[f32], labels: &[bool]) -> (Self, Vec<usize>) {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));

        let mut tally = Tally {
            scores: Vec::new(),
            positives: Vec::new(),
            negatives: Vec::new(),
        };
        let mut group_of = vec![0; scores.len()];
        for &i in &order {
            if tally.scores.last() != Some(&scores[i]) {
                tally.scores.push(scores[i]);
                tally.positives.push(0);
                tally.negatives.push(0);
            }
            let group = tally.scores.len() - 1;
            group_of[i] = group;
            if labels[i] {
                tally.positives[group] += 1;
            } else {
                tally.negatives[group] += 1;
            }
        }
        (tally, group_of)
    }

    /// The same groups with every count set to zero.
    pub(crate) fn emptied(&self) -> Self {
        Tally {
            scores: self.scores.clone(),
            positives: vec![0; self.scores.len()],
            negatives: vec![0; self.scores.len()],
        }
    }

    /// All positives.
    pub(crate) fn total_positives(&self) -> usize {
        self.positives.iter().sum()
    }

    /// All negatives.
    pub(crate) fn total_negatives(&self) -> usize {
        self.negatives.iter().sum()
    }

    /// Area under the ROC curve, ties counted as half. Needs both classes.
    pub(crate) fn auc(&self) -> f64 {
        // From the lowest score up: each positive beats the negatives strictly below it and
        // ties, for half, with the negatives at its own score.
        let mut negatives_below = 0usize;
        let mut wins = 0.0;
        for g in (0..self.scores.len()).rev() {
            wins += self.positives[g] as f64
                * (negatives_below as f64 + 0.5 * self.negatives[g] as f64);
            negatives_below += self.negatives[g];
        }
        wins / (self.total_positives() as f64 * self.total_negatives() as f64)
    }

    /// Average precision (see [`average_precision`]). Needs a positive.
    pub(crate) fn average_precision(&self) -> f64 {
        let positives = self.total_positives() as f64;
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut area = 0.0;
        for g in 0..self.scores.len() {
            tp += self.positives[g];
            fp += self.negatives[g];
            if self.positives[g] > 0 {
                area += (self.positives[g] as f64 / positives) * (tp as f64 / (tp + fp) as f64);
            }
        }
        area
    }

    /// The outcomes of calling every score at or above `threshold` positive.
    pub(crate) fn confusion_at(&self, threshold: f32) -> Confusion {
        let called = self.scores.partition_point(|&s| s >= threshold);
        let tp: usize = self.positives[..called].iter().sum();
        let fp: usize = self.negatives[..called].iter().sum();
        Confusion {
            tp,
            tn: self.total_negatives() - fp,
            fp,
            fn_: self.total_positives() - tp,
        }
    }

    /// Mean squared difference between score and outcome.
    pub(crate) fn brier(&self) -> f64 {
        let mut total = 0.0;
        for g in 0..self.scores.len() {
            let s = self.scores[g] as f64;
            total += self.positives[g] as f64 * (1.0 - s).powi(2);
            total += self.negatives[g] as f64 * s.powi(2);
        }
        total / (self.total_positives() + self.total_negatives()) as f64
    }

    /// The ROC curve's corners, from (0, 0) to (1, 1). Needs both classes.
    pub(crate) fn roc_points(&self) -> Vec<RocPoint> {
        let positives = self.total_positives() as f64;
        let negatives = self.total_negatives() as f64;
        let mut points = Vec::with_capacity(self.scores.len() + 1);
        points.push(RocPoint {
            threshold: None,
            fpr: 0.0,
            tpr: 0.0,
        });
        let (mut tp, mut fp) = (0usize, 0usize);
        for g in 0..self.scores.len() {
            tp += self.positives[g];
            fp += self.negatives[g];
            points.push(RocPoint {
                threshold: Some(self.scores[g]),
                fpr: fp as f64 / negatives,
                tpr: tp as f64 / positives,
            });
        }
        points
    }

    /// Images per equal-width probability bin and their calibration.
    pub(crate) fn reliability(&self, bins: usize) -> Vec<ReliabilityBin> {
        let mut count = vec![0usize; bins];
        let mut probability_sum = vec![0.0f64; bins];
        let mut positive_count = vec![0usize; bins];
        for g in 0..self.scores.len() {
            let s = self.scores[g] as f64;
            let bin = ((s * bins as f64).floor().max(0.0) as usize).min(bins - 1);
            let n = self.positives[g] + self.negatives[g];
            count[bin] += n;
            probability_sum[bin] += s * n as f64;
            positive_count[bin] += self.positives[g];
        }
        (0..bins)
            .map(|b| ReliabilityBin {
                lower: b as f64 / bins as f64,
                upper: (b + 1) as f64 / bins as f64,
                count: count[b],
                mean_probability: (count[b] > 0).then(|| probability_sum[b] / count[b] as f64),
                observed_rate: (count[b] > 0).then(|| positive_count[b] as f64 / count[b] as f64),
            })
            .collect()
    }
}

/// Average precision (AUPRC): the area under the step-wise precision–recall curve,
///
/// `AP = Σₖ (Rₖ − Rₖ₋₁) · Pₖ`, with `R₀ = 0`,
///
/// where `k` runs over the distinct scores from highest to lowest and `Pₖ`, `Rₖ` are the
/// precision and recall of calling every score at or above the `k`-th one pneumonia. Images
/// with tied scores enter together; no interpolation between points (which would overstate
/// the area). A model that ranks at random scores about the prevalence.
///
/// Fails unless the labels hold both classes.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Result<f64> {
    check_inputs(scores, labels)?;
    check_both_classes(labels, "AUPRC")?;
    Ok(Tally::grouped(scores, labels).0.average_precision())
}

/// Brier score: the mean of `(p − y)²` over images, `y` being 1 for pneumonia. 0 is perfect;
/// always answering the prevalence `π` scores `π(1 − π)`.
///
/// Defined for one class too; fails on empty input or scores outside `[0, 1]`.
pub fn brier_score(scores: &[f32], labels: &[bool]) -> Result<f64> {
    check_inputs(scores, labels)?;
    check_probabilities(scores, "the Brier score")?;
    Ok(Tally::grouped(scores, labels).0.brier())
}

/// Bins of the reliability diagram and of [`expected_calibration_error`] unless told otherwise.
pub const ECE_BINS: usize = 10;

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    /// Lower edge of the bin (inclusive).
    pub lower: f64,
    /// Upper edge of the bin (exclusive, except the last bin, which includes 1).
    pub upper: f64,
    /// Images whose probability falls in the bin.
    pub count: usize,
    /// Their mean predicted probability; `None` for an empty bin.
    pub mean_probability: Option<f64>,
    /// Their observed share of pneumonia; `None` for an empty bin.
    pub observed_rate: Option<f64>,
}

/// The reliability diagram's bins: `[0, 1]` cut into `bins` equal-width bins,
/// `[i/bins, (i+1)/bins)` (the last one closed), each with its count, mean probability and
/// observed share of pneumonia. A probability belongs to the bin of its stored `f32` value.
///
/// Fails on empty input, `bins == 0`, or scores outside `[0, 1]`.
pub fn reliability_bins(
    scores: &[f32],
    labels: &[bool],
    bins: usize,
) -> Result<Vec<ReliabilityBin>> {
    check_inputs(scores, labels)?;
    check_probabilities(scores, "a reliability diagram")?;
    if bins == 0 {
        return Err(Error::Metrics(
            "a reliability diagram needs at least one bin".into(),
        ));
    }
    Ok(Tally::grouped(scores, labels).0.reliability(bins))
}

/// Expected calibration error over `bins` equal-width bins (see [`reliability_bins`]):
///
/// `ECE = Σ_b (n_b / N) · |observed_b − mean probability_b|`,
///
/// the gap between predicted and observed frequency, averaged over images. 0 is perfect. It
/// depends on the binning and is biased upwards in small samples (noise never cancels inside
/// `|·|`), so compare ECEs only at the same bins and similar sizes. [`ECE_BINS`] is the usual
/// choice.
pub fn expected_calibration_error(scores: &[f32], labels: &[bool], bins: usize) -> Result<f64> {
    Ok(ece_of(&reliability_bins(scores, labels, bins)?))
}

/// ECE from a reliability diagram's bins.
pub fn ece_of(bins: &[ReliabilityBin]) -> f64 {
    let total: usize = bins.iter().map(|b| b.count).sum();
    bins.iter()
        .filter_map(|b| {
            let gap = (b.observed_rate? - b.mean_probability?).abs();
            Some(b.count as f64 / total as f64 * gap)
        })
        .sum()
}

/// One corner of the ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// The threshold reaching this point (scores at or above it called pneumonia); `None` for
    /// the starting corner where nothing is called pneumonia.
    pub threshold: Option<f32>,
    /// False positive rate, 1 − specificity.
    pub fpr: f64,
    /// True positive rate, sensitivity.
    pub tpr: f64,
}

/// The ROC curve: one point per distinct score, highest threshold first, from (0, 0) to
/// (1, 1). Tied scores move both rates at once (a diagonal step), which is what makes the
/// trapezoidal area under these points equal [`auc`].
///
/// Fails unless the labels hold both classes.
pub fn roc_curve(scores: &[f32], labels: &[bool]) -> Result<Vec<RocPoint>> {
    check_inputs(scores, labels)?;
    check_both_classes(labels, "a ROC curve")?;
    Ok(Tally::grouped(scores, labels).0.roc_points())
}

/// The true positive rate of a ROC curve at false positive rate `fpr`, reading the curve as the
/// straight lines between its points (where the curve rises vertically, the top is taken).
pub fn tpr_at_fpr(points: &[RocPoint], fpr: f64) -> f64 {
    let after = points.partition_point(|p| p.fpr <= fpr);
    if after == 0 {
        return 0.0;
    }
    let left = points[after - 1];
    match points.get(after) {
        Some(right) if right.fpr > left.fpr => {
            let share = (fpr - left.fpr) / (right.fpr - left.fpr);
            left.tpr + share * (right.tpr - left.tpr)
        }
        _ => left.tpr,
    }
}

/// One point of the precision–recall curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    /// Scores at or above this threshold are called pneumonia.
    pub threshold: f32,
    /// Sensitivity at the threshold.
    pub recall: f64,
    /// Positive predictive value at the threshold.
    pub precision: f64,
}

/// The precision–recall curve: one point per distinct score, highest threshold first (so
/// recall rises). [`average_precision`] is the step-wise area under these points.
///
/// Fails unless the labels hold both classes.
pub fn pr_curve(scores: &[f32], labels: &[bool]) -> Result<Vec<PrPoint>> {
    check_inputs(scores, labels)?;
    check_both_classes(labels, "a precision-recall curve")?;
    let tally = Tally::grouped(scores, labels).0;
    let positives = tally.total_positives() as f64;
    let (mut tp, mut fp) = (0usize, 0usize);
    Ok(tally
        .scores
        .iter()
        .enumerate()
        .map(|(g, &threshold)| {
            tp += tally.positives[g];
            fp += tally.negatives[g];
            PrPoint {
                threshold,
                recall: tp as f64 / positives,
                precision: tp as f64 / (tp + fp) as f64,
            }
        })
        .collect())
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

    /// Case A: 20 scores with ties inside and across classes, none on an ECE bin edge.
    const CASE_A_SCORES: [f32; 20] = [
        0.93, 0.87, 0.87, 0.84, 0.78, 0.78, 0.78, 0.71, 0.66, 0.62, 0.55, 0.47, 0.47, 0.44, 0.38,
        0.33, 0.29, 0.21, 0.14, 0.06,
    ];
    const CASE_A_LABELS: [u8; 20] = [1, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0];

    /// Case B: three tied groups of mixed classes.
    const CASE_B_SCORES: [f32; 8] = [0.22, 0.22, 0.22, 0.63, 0.63, 0.63, 0.63, 0.91];
    const CASE_B_LABELS: [u8; 8] = [0, 1, 0, 1, 0, 1, 1, 1];

    fn bools(labels: &[u8]) -> Vec<bool> {
        labels.iter().map(|&l| l == 1).collect()
    }

    fn close(actual: f64, expected: f64, what: &str) {
        assert!(
            (actual - expected).abs() < 1e-6,
            "{what}: {actual} is not {expected}"
        );
    }

    // The reference values of the next four tests were computed once with scikit-learn 1.9.1
    // (numpy 2.4.6) on the same scores cast to float32: roc_auc_score, average_precision_score,
    // brier_score_loss, roc_curve(drop_intermediate=False), precision_recall_curve and
    // calibration_curve(n_bins=10, strategy="uniform"), the ECE summed from the latter with
    // numpy bin counts.

    #[test]
    fn threshold_free_figures_match_scikit_learn() {
        let a = bools(&CASE_A_LABELS);
        close(
            auc(&CASE_A_SCORES, &a).unwrap(),
            0.7676767676767676,
            "AUC A",
        );
        close(
            average_precision(&CASE_A_SCORES, &a).unwrap(),
            0.7029058904058905,
            "AP A",
        );
        close(
            brier_score(&CASE_A_SCORES, &a).unwrap(),
            0.207809995556772,
            "Brier A",
        );
        close(
            expected_calibration_error(&CASE_A_SCORES, &a, 10).unwrap(),
            0.18999999295920134,
            "ECE A",
        );

        let b = bools(&CASE_B_LABELS);
        close(
            auc(&CASE_B_SCORES, &b).unwrap(),
            0.7666666666666667,
            "AUC B",
        );
        close(
            average_precision(&CASE_B_SCORES, &b).unwrap(),
            0.805,
            "AP B",
        );
        close(
            brier_score(&CASE_B_SCORES, &b).unwrap(),
            0.1901125000834466,
            "Brier B",
        );
        close(
            expected_calibration_error(&CASE_B_SCORES, &b, 10).unwrap(),
            0.11374999955296516,
            "ECE B",
        );
    }

    #[test]
    fn average_precision_matches_a_hand_count_with_ties() {
        // Case B from the top: 0.91 (1 positive) gives recall 1/5 at precision 1; 0.63 (3
        // positives, 1 negative) adds recall 3/5 at precision 4/5; 0.22 (1 positive, 2
        // negatives) adds recall 1/5 at precision 5/8.
        let expected = 0.2 * 1.0 + 0.6 * 0.8 + 0.2 * 0.625;
        close(
            average_precision(&CASE_B_SCORES, &bools(&CASE_B_LABELS)).unwrap(),
            expected,
            "AP",
        );
        // Perfect ranking scores 1 whatever the prevalence.
        close(
            average_precision(&[0.9, 0.8, 0.1], &[true, true, false]).unwrap(),
            1.0,
            "perfect AP",
        );
    }

    #[test]
    fn roc_curve_matches_scikit_learn() {
        let fpr = [
            0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 6.0, 7.0, 7.0, 8.0, 9.0, 10.0, 11.0,
        ]
        .map(|k: f64| k / 11.0);
        let tpr = [
            0.0, 1.0, 2.0, 3.0, 5.0, 5.0, 6.0, 6.0, 7.0, 8.0, 8.0, 8.0, 9.0, 9.0, 9.0, 9.0, 9.0,
        ]
        .map(|k: f64| k / 9.0);
        let thresholds = [
            0.93, 0.87, 0.84, 0.78, 0.71, 0.66, 0.62, 0.55, 0.47, 0.44, 0.38, 0.33, 0.29, 0.21,
            0.14, 0.06,
        ];
        let curve = roc_curve(&CASE_A_SCORES, &bools(&CASE_A_LABELS)).unwrap();
        assert_eq!(curve.len(), 17);
        assert_eq!(curve[0].threshold, None);
        for (k, point) in curve.iter().enumerate() {
            close(point.fpr, fpr[k], "FPR");
            close(point.tpr, tpr[k], "TPR");
            if k > 0 {
                assert_eq!(point.threshold, Some(thresholds[k - 1]));
            }
        }

        // The trapezoidal area under the points is the AUC, ties included.
        let area: f64 = curve
            .windows(2)
            .map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0)
            .sum();
        close(area, 0.7676767676767676, "area");
    }

    #[test]
    fn pr_curve_and_reliability_bins_match_scikit_learn() {
        // scikit-learn lists the points lowest threshold first and appends (recall 0,
        // precision 1); here they run highest threshold first.
        let curve = pr_curve(&CASE_B_SCORES, &bools(&CASE_B_LABELS)).unwrap();
        let expected = [(0.91, 0.2, 1.0), (0.63, 0.8, 0.8), (0.22, 1.0, 0.625)];
        assert_eq!(curve.len(), expected.len());
        for (point, (threshold, recall, precision)) in curve.iter().zip(expected) {
            assert_eq!(point.threshold, threshold);
            close(point.recall, recall, "recall");
            close(point.precision, precision, "precision");
        }

        let bins = reliability_bins(&CASE_A_SCORES, &bools(&CASE_A_LABELS), 10).unwrap();
        let counts: Vec<usize> = bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 1, 2, 2, 3, 1, 2, 4, 3, 1]);
        let observed = [0.0, 0.0, 0.0, 0.5, 1.0 / 3.0, 1.0, 0.5, 0.5, 2.0 / 3.0, 1.0];
        let predicted = [
            0.059999998659,
            0.140000000596,
            0.249999992549,
            0.355000004172,
            0.459999998411,
            0.550000011921,
            0.640000015497,
            0.762499973178,
            0.859999994437,
            0.930000007153,
        ];
        for (b, bin) in bins.iter().enumerate() {
            close(bin.observed_rate.unwrap(), observed[b], "observed rate");
            close(
                bin.mean_probability.unwrap(),
                predicted[b],
                "mean probability",
            );
            close(bin.lower, b as f64 / 10.0, "lower edge");
        }
    }

    #[test]
    fn calibration_figures_match_hand_counts() {
        // Two images at 0.25 (one pneumonia), two at 0.85 (both pneumonia), one at 1.0 (normal).
        let scores = [0.25, 0.25, 0.85, 0.85, 1.0];
        let labels = [true, false, true, true, false];
        let brier = (0.75f64.powi(2) + 0.25f64.powi(2) + 2.0 * 0.15f64.powi(2) + 1.0) / 5.0;
        close(brier_score(&scores, &labels).unwrap(), brier, "Brier");

        // Bins of 0.5: [0, 0.5) holds the 0.25s (gap |0.5 − 0.25|); [0.5, 1] holds the rest,
        // 1.0 included (mean probability 0.9, observed 2/3).
        let ece = 2.0 / 5.0 * 0.25 + 3.0 / 5.0 * (0.9 - 2.0 / 3.0);
        close(
            expected_calibration_error(&scores, &labels, 2).unwrap(),
            ece,
            "ECE",
        );
        let bins = reliability_bins(&scores, &labels, 4).unwrap();
        assert_eq!(bins[2].count, 0);
        assert_eq!(bins[2].observed_rate, None);

        // A perfectly calibrated and sharp model.
        close(
            brier_score(&[0.0, 1.0], &[false, true]).unwrap(),
            0.0,
            "Brier 0",
        );
        assert!(brier_score(&[1.5], &[true]).is_err());
        assert!(reliability_bins(&[0.5], &[true], 0).is_err());
    }

    #[test]
    fn tpr_at_fpr_reads_the_curve_between_its_points() {
        let curve = roc_curve(&CASE_B_SCORES, &bools(&CASE_B_LABELS)).unwrap();
        // Corners (0, 0), (0, 0.2), (1/3, 0.8), (1, 1): at FPR 0 the vertical rise gives 0.2.
        close(tpr_at_fpr(&curve, 0.0), 0.2, "at 0");
        close(
            tpr_at_fpr(&curve, 1.0 / 6.0),
            0.5,
            "halfway up the second segment",
        );
        close(
            tpr_at_fpr(&curve, 2.0 / 3.0),
            0.9,
            "halfway up the last segment",
        );
        close(tpr_at_fpr(&curve, 1.0), 1.0, "at 1");
    }

    #[test]
    fn single_class_inputs_are_errors_not_nan() {
        let scores = [0.2, 0.4, 0.9];
        for labels in [[true; 3], [false; 3]] {
            for err in [
                average_precision(&scores, &labels).unwrap_err(),
                roc_curve(&scores, &labels).unwrap_err(),
                pr_curve(&scores, &labels).unwrap_err(),
                stratified_bootstrap(&scores, &labels, 0.5, BootstrapConfig::default())
                    .unwrap_err(),
            ] {
                assert!(err.to_string().contains("both classes"), "{err}");
            }
        }
        assert!(average_precision(&[], &[]).is_err());
        assert!(brier_score(&[0.1, 0.2], &[true]).is_err());
    }
}
