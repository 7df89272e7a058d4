//! Confidence intervals by the stratified percentile bootstrap.
//!
//! The method: draw, with replacement, as many positives from the positives as there are and
//! as many negatives from the negatives as there are (so every resample keeps the observed
//! prevalence and always holds both classes); compute every figure on the resample; repeat
//! [`BootstrapConfig::resamples`] times (2,000 by default) with a seeded ChaCha8 generator; the
//! 95% interval of a figure runs from the 2.5th to the 97.5th percentile of its resampled
//! values (linear interpolation between order statistics). The threshold stays fixed at the
//! stored one: the intervals describe the frozen model, not a re-tuned one.
//!
//! Resampling images treats them as independent. Images of the same child are not, so where a
//! child contributes several images the intervals are somewhat too narrow; resampling children
//! instead of images would fix that.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{RocPoint, Tally, check_both_classes, check_inputs, check_probabilities, tpr_at_fpr};
use crate::error::{Error, Result};

/// Resamples drawn unless told otherwise.
pub const DEFAULT_RESAMPLES: usize = 2000;

/// Seed of the resampling unless told otherwise.
pub const DEFAULT_BOOTSTRAP_SEED: u64 = 20_180_222;

/// Points of the false-positive-rate grid at which the ROC band is computed: 0, 0.01, …, 1.
pub const ROC_BAND_POINTS: usize = 101;

/// How the bootstrap is run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples.
    pub resamples: usize,
    /// Seed of the ChaCha8 generator that draws them.
    pub seed: u64,
    /// Coverage of the intervals, in `(0, 1)`.
    pub confidence: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: DEFAULT_RESAMPLES,
            seed: DEFAULT_BOOTSTRAP_SEED,
            confidence: 0.95,
        }
    }
}

/// A confidence interval, written as `[low, high]` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "[f64; 2]", from = "[f64; 2]")]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl From<Interval> for [f64; 2] {
    fn from(interval: Interval) -> Self {
        [interval.low, interval.high]
    }
}

impl From<[f64; 2]> for Interval {
    fn from([low, high]: [f64; 2]) -> Self {
        Interval { low, high }
    }
}

impl Interval {
    /// Whether `value` lies within the interval, bounds included.
    pub fn contains(&self, value: f64) -> bool {
        self.low <= value && value <= self.high
    }

    /// `high − low`.
    pub fn width(&self) -> f64 {
        self.high - self.low
    }
}

/// The bootstrapped figures of one set of scores at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures<T> {
    /// Area under the ROC curve.
    pub auc: T,
    /// Average precision.
    pub auprc: T,
    /// Share classified correctly.
    pub accuracy: T,
    /// True positive rate.
    pub sensitivity: T,
    /// True negative rate.
    pub specificity: T,
    /// Positive predictive value.
    pub precision: T,
    /// Negative predictive value.
    pub npv: T,
    /// Harmonic mean of precision and sensitivity.
    pub f1: T,
    /// Brier score.
    pub brier: T,
}

impl Figures<f64> {
    /// Every figure of `tally` at `threshold`.
    fn of(tally: &Tally, threshold: f32) -> Self {
        let confusion = tally.confusion_at(threshold);
        Figures {
            auc: tally.auc(),
            auprc: tally.average_precision(),
            accuracy: confusion.accuracy(),
            sensitivity: confusion.sensitivity(),
            specificity: confusion.specificity(),
            precision: confusion.precision(),
            npv: confusion.npv(),
            f1: confusion.f1(),
            brier: tally.brier(),
        }
    }
}

/// One point of the ROC confidence band.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocBandPoint {
    /// False positive rate (a grid point).
    pub fpr: f64,
    /// True positive rate of the observed curve there.
    pub tpr: f64,
    /// Percentile interval of the resampled curves' true positive rate there.
    pub interval: Interval,
}

/// What the bootstrap found.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The settings it ran with.
    pub config: BootstrapConfig,
    /// The figures on the data as observed.
    pub estimate: Figures<f64>,
    /// Their percentile intervals.
    pub intervals: Figures<Interval>,
    /// Pointwise interval of the true positive rate on a grid of false positive rates.
    pub roc_band: Vec<RocBandPoint>,
    /// The figures of every resample, in the order drawn.
    pub replicates: Vec<Figures<f64>>,
}

/// Runs the stratified percentile bootstrap (see the module documentation) of every figure in
/// [`Figures`] for probabilities `scores` against `labels`, at the fixed `threshold`.
///
/// Fails unless the labels hold both classes, the scores are probabilities, and the settings
/// make sense (at least two resamples, confidence in `(0, 1)`).
pub fn stratified_bootstrap(
    scores: &[f32],
    labels: &[bool],
    threshold: f32,
    config: BootstrapConfig,
) -> Result<Bootstrap> {
    check_inputs(scores, labels)?;
    check_both_classes(labels, "the bootstrap")?;
    check_probabilities(scores, "the bootstrap")?;
    if config.resamples < 2 || !(config.confidence > 0.0 && config.confidence < 1.0) {
        return Err(Error::Config(format!(
            "the bootstrap needs at least 2 resamples and a confidence in (0, 1), got {} and {}",
            config.resamples, config.confidence
        )));
    }

    let (observed, group_of) = Tally::grouped(scores, labels);
    let positives: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let negatives: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    let grid: Vec<f64> = (0..ROC_BAND_POINTS)
        .map(|k| k as f64 / (ROC_BAND_POINTS - 1) as f64)
        .collect();

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut replicates = Vec::with_capacity(config.resamples);
    let mut band_samples = vec![Vec::with_capacity(config.resamples); grid.len()];
    for _ in 0..config.resamples {
        let resample = resample(&observed, &group_of, &positives, &negatives, &mut rng);
        replicates.push(Figures::of(&resample, threshold));
        let curve = resample.roc_points();
        for (samples, &fpr) in band_samples.iter_mut().zip(&grid) {
            samples.push(tpr_at_fpr(&curve, fpr));
        }
    }

    let tail = (1.0 - config.confidence) / 2.0;
    let interval_of = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        Interval {
            low: percentile(&values, tail),
            high: percentile(&values, 1.0 - tail),
        }
    };
    let field = |get: fn(&Figures<f64>) -> f64| interval_of(replicates.iter().map(get).collect());
    let intervals = Figures {
        auc: field(|f| f.auc),
        auprc: field(|f| f.auprc),
        accuracy: field(|f| f.accuracy),
        sensitivity: field(|f| f.sensitivity),
        specificity: field(|f| f.specificity),
        precision: field(|f| f.precision),
        npv: field(|f| f.npv),
        f1: field(|f| f.f1),
        brier: field(|f| f.brier),
    };

    let observed_curve: Vec<RocPoint> = observed.roc_points();
    let roc_band = grid
        .iter()
        .zip(band_samples)
        .map(|(&fpr, samples)| RocBandPoint {
            fpr,
            tpr: tpr_at_fpr(&observed_curve, fpr),
            interval: interval_of(samples),
        })
        .collect();

    Ok(Bootstrap {
        config,
        estimate: Figures::of(&observed, threshold),
        intervals,
        roc_band,
        replicates,
    })
}

/// One stratified resample, as counts per distinct score: `positives.len()` draws from the
/// positives, then `negatives.len()` draws from the negatives.
fn resample(
    observed: &Tally,
    group_of: &[usize],
    positives: &[usize],
    negatives: &[usize],
    rng: &mut ChaCha8Rng,
) -> Tally {
    let mut tally = observed.emptied();
    for _ in 0..positives.len() {
        let image = positives[rng.random_range(0..positives.len())];
        tally.positives[group_of[image]] += 1;
    }
    for _ in 0..negatives.len() {
        let image = negatives[rng.random_range(0..negatives.len())];
        tally.negatives[group_of[image]] += 1;
    }
    tally
}

/// The `q`-quantile of ascending `sorted` values, interpolating linearly between the order
/// statistics at positions `⌊(n−1)q⌋` and `⌈(n−1)q⌉`.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let share = position - below as f64;
    sorted[below] + share * (sorted[above] - sorted[below])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Confusion, auc, average_precision};

    /// How often each value occurs among `values`, as a share.
    fn share_of(values: &[f64], value: f64) -> f64 {
        values.iter().filter(|&&v| (v - value).abs() < 1e-9).count() as f64 / values.len() as f64
    }

    #[test]
    fn resampled_figures_follow_the_exact_bootstrap_distribution() {
        // Positives 0.9 and 0.4, negatives 0.6 and 0.1. A stratified resample draws each pair
        // with replacement: {0.9, 0.9} and {0.4, 0.4} with chance 1/4 each, the mixed pair 1/2.
        // By hand, the AUC of the 3 × 3 combinations is:
        //   positives {0.9, 0.9}: 1 whatever the negatives;
        //   positives {0.4, 0.4}: 0 vs {0.6, 0.6}, 1 vs {0.1, 0.1}, 1/2 vs the mixed pair;
        //   mixed positives:    1/2 vs {0.6, 0.6}, 1 vs {0.1, 0.1}, 3/4 vs the mixed pair;
        // so P(0) = 1/16, P(1/2) = 4/16, P(3/4) = 4/16, P(1) = 7/16, and the 95% percentile
        // interval is [0, 1] (more than 2.5% of the mass sits at each end).
        let scores = [0.9, 0.4, 0.6, 0.1];
        let labels = [true, true, false, false];
        let config = BootstrapConfig {
            resamples: 4000,
            seed: 7,
            confidence: 0.95,
        };
        let result = stratified_bootstrap(&scores, &labels, 0.5, config).unwrap();
        assert_eq!(result.replicates.len(), 4000);

        let aucs: Vec<f64> = result.replicates.iter().map(|r| r.auc).collect();
        for (value, chance) in [(0.0, 1.0), (0.5, 4.0), (0.75, 4.0), (1.0, 7.0)] {
            let seen = share_of(&aucs, value);
            assert!(
                (seen - chance / 16.0).abs() < 0.025,
                "AUC {value}: seen {seen}, expected {}",
                chance / 16.0
            );
        }
        assert!((aucs.iter().sum::<f64>() / 4000.0 - 0.75).abs() < 0.02);
        assert_eq!(
            result.intervals.auc,
            Interval {
                low: 0.0,
                high: 1.0
            }
        );
        assert_eq!(result.estimate.auc, 0.75);

        // At threshold 0.5 the sensitivity is 1, 0 or 1/2 with the positives' draw.
        let sensitivities: Vec<f64> = result.replicates.iter().map(|r| r.sensitivity).collect();
        for (value, chance) in [(0.0, 0.25), (0.5, 0.5), (1.0, 0.25)] {
            assert!((share_of(&sensitivities, value) - chance).abs() < 0.03);
        }
        // Both negatives are always called normal except the 0.6: specificity 1, 1/2 or 0.
        let specificities: Vec<f64> = result.replicates.iter().map(|r| r.specificity).collect();
        assert!((share_of(&specificities, 0.5) - 0.5).abs() < 0.03);
    }

    #[test]
    fn the_fast_resample_path_matches_a_brute_force_recount() {
        // Expand random multiplicities into explicit vectors and recompute every figure with
        // the plain functions; the tallied path must agree exactly.
        let scores = [
            0.95, 0.8, 0.8, 0.7, 0.55, 0.5, 0.5, 0.5, 0.3, 0.2, 0.2, 0.05,
        ];
        let labels = [
            true, true, false, true, false, true, false, true, false, true, false, false,
        ];
        let (observed, group_of) = Tally::grouped(&scores, &labels);
        let positives: Vec<usize> = (0..12).filter(|&i| labels[i]).collect();
        let negatives: Vec<usize> = (0..12).filter(|&i| !labels[i]).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(3);

        for _ in 0..200 {
            let mut expanded_scores = Vec::new();
            let mut expanded_labels = Vec::new();
            let mut tally = observed.emptied();
            for (members, is_positive) in [(&positives, true), (&negatives, false)] {
                for _ in 0..members.len() {
                    let image = members[rng.random_range(0..members.len())];
                    expanded_scores.push(scores[image]);
                    expanded_labels.push(is_positive);
                    if is_positive {
                        tally.positives[group_of[image]] += 1;
                    } else {
                        tally.negatives[group_of[image]] += 1;
                    }
                }
            }

            let fast = Figures::of(&tally, 0.5);
            let confusion = Confusion::at(&expanded_scores, &expanded_labels, 0.5);
            let brier = expanded_scores
                .iter()
                .zip(&expanded_labels)
                .map(|(&s, &l)| (s as f64 - if l { 1.0 } else { 0.0 }).powi(2))
                .sum::<f64>()
                / 12.0;
            let expected = Figures {
                auc: auc(&expanded_scores, &expanded_labels).unwrap(),
                auprc: average_precision(&expanded_scores, &expanded_labels).unwrap(),
                accuracy: confusion.accuracy(),
                sensitivity: confusion.sensitivity(),
                specificity: confusion.specificity(),
                precision: confusion.precision(),
                npv: confusion.npv(),
                f1: confusion.f1(),
                brier,
            };
            for (name, a, b) in [
                ("auc", fast.auc, expected.auc),
                ("auprc", fast.auprc, expected.auprc),
                ("accuracy", fast.accuracy, expected.accuracy),
                ("sensitivity", fast.sensitivity, expected.sensitivity),
                ("specificity", fast.specificity, expected.specificity),
                ("precision", fast.precision, expected.precision),
                ("npv", fast.npv, expected.npv),
                ("f1", fast.f1, expected.f1),
                ("brier", fast.brier, expected.brier),
            ] {
                assert!((a - b).abs() < 1e-12, "{name}: {a} vs {b}");
            }
        }
    }

    /// `n` scores of a fair model: positives `√u`, negatives `1 − √u` for uniform `u`, three
    /// positives to one negative.
    fn synthetic(n: usize, seed: u64) -> (Vec<f32>, Vec<bool>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let positive = i % 4 != 0;
                let root = rng.random::<f32>().sqrt();
                (if positive { root } else { 1.0 - root }, positive)
            })
            .unzip()
    }

    /// Every figure with its name, for checks over all of them.
    fn named<T: Copy>(f: &Figures<T>) -> [(&'static str, T); 9] {
        [
            ("auc", f.auc),
            ("auprc", f.auprc),
            ("accuracy", f.accuracy),
            ("sensitivity", f.sensitivity),
            ("specificity", f.specificity),
            ("precision", f.precision),
            ("npv", f.npv),
            ("f1", f.f1),
            ("brier", f.brier),
        ]
    }

    #[test]
    fn intervals_hold_the_estimate_and_narrow_with_more_data() {
        let (small_scores, small_labels) = synthetic(80, 1);
        let (large_scores, large_labels) = synthetic(3000, 2);
        let config = BootstrapConfig::default();
        let small = stratified_bootstrap(&small_scores, &small_labels, 0.5, config).unwrap();
        let large = stratified_bootstrap(&large_scores, &large_labels, 0.5, config).unwrap();

        for result in [&small, &large] {
            for ((name, estimate), (_, interval)) in named(&result.estimate)
                .into_iter()
                .zip(named(&result.intervals))
            {
                assert!(
                    interval.contains(estimate),
                    "{name}: {estimate} outside {interval:?}"
                );
            }
        }
        for ((name, narrow), (_, wide)) in named(&large.intervals)
            .into_iter()
            .zip(named(&small.intervals))
        {
            assert!(
                narrow.width() < wide.width(),
                "{name}: {narrow:?} is not narrower than {wide:?}"
            );
        }
        assert!(small.intervals.auc.width() > 0.05 && large.intervals.auc.width() < 0.05);

        // The estimate agrees with the plain functions, and the ROC band holds the curve.
        let plain = auc(&small_scores, &small_labels).unwrap();
        assert!((small.estimate.auc - plain).abs() < 1e-12);
        assert_eq!(small.roc_band.len(), ROC_BAND_POINTS);
        for point in &small.roc_band {
            assert!(point.interval.contains(point.tpr), "{point:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_intervals() {
        let (scores, labels) = synthetic(200, 4);
        let config = BootstrapConfig::default();
        let first = stratified_bootstrap(&scores, &labels, 0.5, config).unwrap();
        let again = stratified_bootstrap(&scores, &labels, 0.5, config).unwrap();
        assert_eq!(first.intervals, again.intervals);
        let other_seed = BootstrapConfig { seed: 99, ..config };
        let other = stratified_bootstrap(&scores, &labels, 0.5, other_seed).unwrap();
        assert_ne!(first.intervals, other.intervals);
    }

    #[test]
    fn nonsensical_settings_are_refused() {
        let scores = [0.1, 0.9];
        let labels = [false, true];
        for config in [
            BootstrapConfig {
                resamples: 1,
                ..BootstrapConfig::default()
            },
            BootstrapConfig {
                confidence: 1.0,
                ..BootstrapConfig::default()
            },
        ] {
            assert!(stratified_bootstrap(&scores, &labels, 0.5, config).is_err());
        }
    }

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 0.5), 3.0);
        assert_eq!(percentile(&sorted, 0.125), 1.5);
        assert_eq!(percentile(&sorted, 1.0), 5.0);
    }
}
