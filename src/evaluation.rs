//! Evaluating a frozen bundle over a split of a dataset, once, at its stored threshold.
//!
//! [`score`] runs the model over the images; [`evaluate`] turns the scores into every figure
//! `pneumo evaluate` reports ([`Summary`], with bootstrap intervals) and the curves behind
//! them; [`plots`] draws them and [`report`] writes them up as one self-contained HTML page.

pub mod plots;
pub mod report;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bundle::Card;
use crate::data::{self, Label};
use crate::error::{Error, Result};
use crate::inference::{Classifier, INFERENCE_BATCH};
use crate::metrics::{
    self, BootstrapConfig, Confusion, ECE_BINS, Interval, Metrics, PrPoint, ReliabilityBin,
    RocBandPoint, RocPoint, ThresholdRule, UncertainBand, sigmoid,
};

/// Which images to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitChoice {
    /// `DIR/test/`: the official test split.
    Test,
    /// `DIR/val/`: the official (tiny) validation folder.
    Val,
    /// `DIR/train/`: the whole official training folder (mostly seen in training).
    Train,
    /// The child-grouped validation split recorded in the model's card.
    Validation,
}

impl SplitChoice {
    /// The name given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SplitChoice::Test => "test",
            SplitChoice::Val => "val",
            SplitChoice::Train => "train",
            SplitChoice::Validation => "validation",
        }
    }
}

/// One evaluated image: its truth and the model's answer.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The image.
    pub path: PathBuf,
    /// Its true class.
    pub label: Label,
    /// The network's raw output (log-odds of pneumonia before temperature scaling).
    pub logit: f32,
    /// Calibrated probability of pneumonia: `sigmoid(logit / temperature)`, exactly what
    /// `predict` reports.
    pub probability: f32,
}

/// Lists the labelled images of `split` under `root`.
pub fn images_of(
    root: &Path,
    split: SplitChoice,
    classifier: &Classifier,
) -> Result<Vec<(PathBuf, Label)>> {
    data::check_root(root)?;
    let folder = match split {
        SplitChoice::Test => "test",
        SplitChoice::Val => "val",
        SplitChoice::Train => "train",
        SplitChoice::Validation => return validation_images(root, classifier),
    };
    let samples = data::discover_split(root, folder)?;
    if samples.is_empty() {
        return Err(Error::Dataset {
            path: root.join(folder),
            reason: "holds no NORMAL/ or PNEUMONIA/ images".into(),
        });
    }
    Ok(samples.into_iter().map(|s| (s.path, s.label)).collect())
}

/// The card's validation list, resolved under `root`; every listed image must exist.
fn validation_images(root: &Path, classifier: &Classifier) -> Result<Vec<(PathBuf, Label)>> {
    let files = &classifier.card.data.validation_files;
    let mut images = Vec::with_capacity(files.len());
    for name in files {
        let label = match name.split('/').nth(1) {
            Some("NORMAL") => Label::Normal,
            Some("PNEUMONIA") => Label::Pneumonia,
            _ => {
                return Err(Error::Bundle {
                    path: classifier.card.model_id.clone(),
                    reason: format!("validation entry `{name}` names no class folder"),
                });
            }
        };
        let path = root.join(name);
        if !path.is_file() {
            return Err(Error::Dataset {
                path: root.to_path_buf(),
                reason: format!("validation image `{name}` recorded in the card is missing"),
            });
        }
        images.push((path, label));
    }
    Ok(images)
}

/// Runs the classifier once over `images`, with a progress bar. Any unreadable image is an
/// error naming it: figures over a silently smaller set would be wrong.
pub fn score(classifier: &Classifier, images: &[(PathBuf, Label)]) -> Result<Vec<Scored>> {
    let bar = ProgressBar::new(images.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} · {per_sec} · ETA {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message("scoring images");

    let temperature = classifier.card.temperature;
    let mut scored = Vec::with_capacity(images.len());
    for chunk in images.chunks(INFERENCE_BATCH) {
        let inputs: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|(path, _)| classifier.card.preprocessing.load_file(path))
            .collect::<Result<_>>()?;
        let logits = classifier.logits(&inputs)?;
        for ((path, label), logit) in chunk.iter().zip(logits) {
            scored.push(Scored {
                path: path.clone(),
                label: *label,
                logit,
                probability: sigmoid(logit / temperature),
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(scored)
}

/// The headline metrics of scored images at the classifier's stored threshold.
pub fn metrics_of(classifier: &Classifier, scored: &[Scored]) -> Result<Metrics> {
    let probabilities: Vec<f32> = scored.iter().map(|s| s.probability).collect();
    let truth: Vec<bool> = scored.iter().map(|s| s.label == Label::Pneumonia).collect();
    Metrics::compute(&probabilities, &truth, classifier.card.threshold)
}

/// Sensitivities that the descriptive extra operating points are chosen to reach.
pub const EXTRA_SENSITIVITY_TARGETS: [f64; 3] = [0.90, 0.95, 0.98];

/// Everything `pneumo evaluate --json` prints and `metrics.json` holds.
///
/// `<figure>_ci` is the 95% stratified percentile bootstrap interval of `<figure>` (see
/// [`metrics::stratified_bootstrap`]); the settings are in `bootstrap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// AUC and the figures at the stored threshold, with the confusion counts.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Negative predictive value at the stored threshold.
    pub npv: f64,
    /// Average precision (area under the step-wise precision–recall curve).
    pub auprc: f64,
    /// Brier score of the calibrated probabilities.
    pub brier: f64,
    /// Expected calibration error of the calibrated probabilities, over `ece_bins` bins.
    pub ece: f64,
    /// The same before temperature scaling (temperature 1).
    pub ece_uncalibrated: f64,
    /// Interval of `auc`.
    pub auc_ci: Interval,
    /// Interval of `auprc`.
    pub auprc_ci: Interval,
    /// Interval of `accuracy`.
    pub accuracy_ci: Interval,
    /// Interval of `sensitivity`.
    pub sensitivity_ci: Interval,
    /// Interval of `specificity`.
    pub specificity_ci: Interval,
    /// Interval of `precision`.
    pub precision_ci: Interval,
    /// Interval of `npv`.
    pub npv_ci: Interval,
    /// Interval of `f1`.
    pub f1_ci: Interval,
    /// Interval of `brier`.
    pub brier_ci: Interval,
    /// The card's "uncertain — refer" band, `[low, high]` (both edges exclusive).
    pub uncertain_band: [f32; 2],
    /// Images whose probability falls inside the band.
    pub uncertain_count: usize,
    /// Their share of all images.
    pub uncertain_share: f64,
    /// Accuracy over the images outside the band; `null` if every image is inside.
    pub accuracy_outside_uncertain: Option<f64>,
    /// True normal images.
    pub n_normal: usize,
    /// True pneumonia images.
    pub n_pneumonia: usize,
    /// The evaluated model's identifier.
    pub model: String,
    /// Which images were evaluated (`test`, `val`, `train` or `validation`).
    pub split: String,
    /// The card's temperature, applied to every probability above.
    pub temperature: f32,
    /// How the intervals were computed.
    pub bootstrap: BootstrapConfig,
    /// Bins of the ECE and the reliability diagram.
    pub ece_bins: usize,
    /// The stored threshold, then thresholds reaching [`EXTRA_SENSITIVITY_TARGETS`] on these
    /// very images (descriptive only).
    pub operating_points: Vec<OperatingPoint>,
    /// Reliability diagram of the calibrated probabilities.
    pub reliability: Vec<ReliabilityBin>,
    /// Reliability diagram before temperature scaling.
    pub reliability_uncalibrated: Vec<ReliabilityBin>,
}

/// The figures at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// How the threshold was chosen, in words.
    pub rule: String,
    /// True only for the stored threshold, fixed before these images were seen.
    pub pre_registered: bool,
    /// For the extra rows: the sensitivity the threshold was chosen to reach.
    pub target_sensitivity: Option<f64>,
    /// Probabilities at or above it are called pneumonia.
    pub threshold: f32,
    /// True positive rate.
    pub sensitivity: f64,
    /// True negative rate.
    pub specificity: f64,
    /// Positive predictive value.
    pub ppv: f64,
    /// Negative predictive value.
    pub npv: f64,
    /// The counts behind them.
    pub confusion: Confusion,
}

impl OperatingPoint {
    /// The figures of `probabilities` against `truth` at `threshold`.
    fn at(probabilities: &[f32], truth: &[bool], threshold: f32, rule: String) -> Self {
        let confusion = Confusion::at(probabilities, truth, threshold);
        OperatingPoint {
            rule,
            pre_registered: false,
            target_sensitivity: None,
            threshold,
            sensitivity: confusion.sensitivity(),
            specificity: confusion.specificity(),
            ppv: confusion.precision(),
            npv: confusion.npv(),
            confusion,
        }
    }
}

/// An evaluation: the [`Summary`] and the curves and scores its plots are drawn from.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The figures.
    pub summary: Summary,
    /// The ROC curve of the calibrated probabilities.
    pub roc: Vec<RocPoint>,
    /// Its pointwise bootstrap band on a grid of false positive rates.
    pub roc_band: Vec<RocBandPoint>,
    /// The precision–recall curve.
    pub pr: Vec<PrPoint>,
    /// Calibrated probability of each image.
    pub probabilities: Vec<f32>,
    /// Whether each image is pneumonia.
    pub truth: Vec<bool>,
    /// The card's "uncertain — refer" band.
    pub band: UncertainBand,
}

/// Computes every figure of `scored` images for the model described by `card`, at its stored
/// threshold, with `bootstrap` intervals. Fails unless both classes are present.
pub fn evaluate(
    card: &Card,
    scored: &[Scored],
    split: SplitChoice,
    bootstrap: BootstrapConfig,
) -> Result<Evaluation> {
    let probabilities: Vec<f32> = scored.iter().map(|s| s.probability).collect();
    let uncalibrated: Vec<f32> = scored.iter().map(|s| sigmoid(s.logit)).collect();
    let truth: Vec<bool> = scored.iter().map(|s| s.label == Label::Pneumonia).collect();
    let threshold = card.threshold;

    let metrics = Metrics::compute(&probabilities, &truth, threshold)?;
    let resampled = metrics::stratified_bootstrap(&probabilities, &truth, threshold, bootstrap)?;
    let reliability = metrics::reliability_bins(&probabilities, &truth, ECE_BINS)?;
    let reliability_uncalibrated = metrics::reliability_bins(&uncalibrated, &truth, ECE_BINS)?;

    let band = card.uncertain_band;
    let inside = probabilities.iter().filter(|&&p| band.contains(p)).count();
    let outside_right = probabilities
        .iter()
        .zip(&truth)
        .filter(|&(&p, &t)| !band.contains(p) && (p >= threshold) == t)
        .count();
    let outside = probabilities.len() - inside;

    let intervals = resampled.intervals;
    let summary = Summary {
        npv: resampled.estimate.npv,
        auprc: resampled.estimate.auprc,
        brier: resampled.estimate.brier,
        ece: metrics::ece_of(&reliability),
        ece_uncalibrated: metrics::ece_of(&reliability_uncalibrated),
        auc_ci: intervals.auc,
        auprc_ci: intervals.auprc,
        accuracy_ci: intervals.accuracy,
        sensitivity_ci: intervals.sensitivity,
        specificity_ci: intervals.specificity,
        precision_ci: intervals.precision,
        npv_ci: intervals.npv,
        f1_ci: intervals.f1,
        brier_ci: intervals.brier,
        uncertain_band: [band.low, band.high],
        uncertain_count: inside,
        uncertain_share: inside as f64 / probabilities.len() as f64,
        accuracy_outside_uncertain: (outside > 0).then(|| outside_right as f64 / outside as f64),
        n_normal: truth.iter().filter(|&&t| !t).count(),
        n_pneumonia: truth.iter().filter(|&&t| t).count(),
        model: card.model_id.clone(),
        split: split.name().into(),
        temperature: card.temperature,
        bootstrap,
        ece_bins: ECE_BINS,
        operating_points: operating_points(card, &probabilities, &truth)?,
        reliability,
        reliability_uncalibrated,
        metrics,
    };

    Ok(Evaluation {
        summary,
        roc: metrics::roc_curve(&probabilities, &truth)?,
        roc_band: resampled.roc_band,
        pr: metrics::pr_curve(&probabilities, &truth)?,
        probabilities,
        truth,
        band,
    })
}

/// The stored threshold's row, then one row per [`EXTRA_SENSITIVITY_TARGETS`] chosen on the
/// evaluated images themselves.
fn operating_points(
    card: &Card,
    probabilities: &[f32],
    truth: &[bool],
) -> Result<Vec<OperatingPoint>> {
    let stored_rule = match card.threshold_rule {
        ThresholdRule::Youden => "stored: Youden's J on validation".to_string(),
        ThresholdRule::Sensitivity { target } => {
            format!("stored: sensitivity {target} on validation")
        }
    };
    let mut points = vec![OperatingPoint {
        pre_registered: true,
        ..OperatingPoint::at(probabilities, truth, card.threshold, stored_rule)
    }];
    for target in EXTRA_SENSITIVITY_TARGETS {
        let rule = ThresholdRule::Sensitivity { target };
        let threshold = metrics::choose_threshold(probabilities, truth, rule)?;
        points.push(OperatingPoint {
            target_sensitivity: Some(target),
            ..OperatingPoint::at(
                probabilities,
                truth,
                threshold,
                format!("sensitivity at least {target:.2} on these images"),
            )
        });
    }
    Ok(points)
}

impl Summary {
    /// The plain-text table `pneumo evaluate` prints.
    pub fn table(&self) -> String {
        let m = &self.metrics;
        let mut out = String::new();
        let ci = |i: &Interval| format!("  95% CI [{:.4}, {:.4}]", i.low, i.high);
        let _ = writeln!(out, "model       {}", self.model);
        let _ = writeln!(
            out,
            "images      {} ({}: {} normal, {} pneumonia)",
            m.n, self.split, self.n_normal, self.n_pneumonia
        );
        let _ = writeln!(out, "threshold   {:.4}", m.threshold);
        for (name, value, interval) in [
            ("AUC        ", m.auc, &self.auc_ci),
            ("AUPRC      ", self.auprc, &self.auprc_ci),
            ("accuracy   ", m.accuracy, &self.accuracy_ci),
            ("sensitivity", m.sensitivity, &self.sensitivity_ci),
            ("specificity", m.specificity, &self.specificity_ci),
            ("precision  ", m.precision, &self.precision_ci),
            ("NPV        ", self.npv, &self.npv_ci),
            ("F1         ", m.f1, &self.f1_ci),
            ("Brier      ", self.brier, &self.brier_ci),
        ] {
            let _ = writeln!(out, "{name} {value:.4}{}", ci(interval));
        }
        let _ = writeln!(
            out,
            "ECE         {:.4}  ({} bins; {:.4} before temperature scaling)",
            self.ece, self.ece_bins, self.ece_uncalibrated
        );
        let outside = match self.accuracy_outside_uncertain {
            Some(accuracy) => format!("accuracy outside {accuracy:.4}"),
            None => "no image outside".into(),
        };
        let _ = writeln!(
            out,
            "refer band  ({:.4}, {:.4}): {} images ({:.1}%), {outside}",
            self.uncertain_band[0],
            self.uncertain_band[1],
            self.uncertain_count,
            100.0 * self.uncertain_share
        );
        let _ = writeln!(
            out,
            "intervals   stratified percentile bootstrap, {} resamples, seed {}",
            self.bootstrap.resamples, self.bootstrap.seed
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "                 called NORMAL  called PNEUMONIA");
        let _ = writeln!(out, "true NORMAL      {:>13}  {:>16}", m.tn, m.fp);
        let _ = writeln!(out, "true PNEUMONIA   {:>13}  {:>16}", m.fn_, m.tp);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bundle::{CARD_FORMAT, DataRecord};
    use crate::model::NetConfig;
    use crate::preprocess::Preprocessing;
    use crate::training::TrainConfig;

    /// A model card for figures computed without a model.
    pub(crate) fn card() -> Card {
        Card {
            format: CARD_FORMAT,
            model_id: "pneumonet-test-card".into(),
            pneumo_version: "0.0.0".into(),
            created_unix: 1_700_000_000,
            network: NetConfig::default(),
            parameters: 1234,
            forward_flops: 5678,
            preprocessing: Preprocessing::new(64),
            classes: vec!["NORMAL".into(), "PNEUMONIA".into()],
            threshold: 0.5,
            threshold_rule: ThresholdRule::Youden,
            temperature: 1.5,
            uncertain_band: UncertainBand {
                low: 0.45,
                high: 0.55,
                target_accuracy: 0.99,
                validation_share: 0.04,
                validation_accuracy_outside: 0.985,
            },
            training: TrainConfig::default(),
            data: DataRecord {
                train_manifest_sha256: "ab".repeat(32),
                validation_manifest_sha256: "cd".repeat(32),
                train_counts: [1000, 3000],
                validation_counts: [250, 750],
                validation_files: Vec::new(),
            },
            best_epoch: 3,
            epochs_run: 5,
            validation: Metrics {
                auc: 0.97,
                accuracy: 0.93,
                sensitivity: 0.94,
                specificity: 0.9,
                precision: 0.96,
                f1: 0.95,
                n: 1000,
                tp: 705,
                tn: 225,
                fp: 25,
                fn_: 45,
                threshold: 0.5,
            },
            stressed_validation: None,
        }
    }

    /// Scored images with the given logits and labels (no files behind them).
    pub(crate) fn scored(logits: &[f32], labels: &[bool], temperature: f32) -> Vec<Scored> {
        logits
            .iter()
            .zip(labels)
            .map(|(&logit, &pneumonia)| Scored {
                path: PathBuf::from("generated.png"),
                label: if pneumonia {
                    Label::Pneumonia
                } else {
                    Label::Normal
                },
                logit,
                probability: sigmoid(logit / temperature),
            })
            .collect()
    }

    #[test]
    fn the_summary_counts_the_refer_band_and_keeps_the_stored_threshold_first() {
        let mut card = card();
        card.threshold = 0.5;
        card.temperature = 2.0;
        card.uncertain_band.low = 0.4;
        card.uncertain_band.high = 0.6;
        // Calibrated probabilities sigmoid(z / 2): z = ±0.4 fall inside (0.4, 0.6); the
        // others outside, where one (z = 3, a normal image) is wrong.
        let logits = [-6.0, -4.0, -0.4, 0.4, 3.0, 4.0, 6.0, 8.0];
        let labels = [false, false, true, false, false, true, true, true];
        let evaluation = evaluate(
            &card,
            &scored(&logits, &labels, 2.0),
            SplitChoice::Test,
            BootstrapConfig::default(),
        )
        .unwrap();
        let summary = &evaluation.summary;
        assert_eq!(summary.uncertain_count, 2);
        assert_eq!(summary.uncertain_share, 0.25);
        assert_eq!(summary.accuracy_outside_uncertain, Some(5.0 / 6.0));
        assert_eq!((summary.n_normal, summary.n_pneumonia), (4, 4));

        let stored = &summary.operating_points[0];
        assert!(stored.pre_registered && stored.threshold == 0.5);
        assert_eq!(
            summary.operating_points.len(),
            1 + EXTRA_SENSITIVITY_TARGETS.len()
        );
        for point in &summary.operating_points[1..] {
            assert!(!point.pre_registered);
            assert!(point.sensitivity >= point.target_sensitivity.unwrap());
        }

        // The uncalibrated diagram uses temperature 1: sharper, so a different ECE.
        assert_ne!(summary.ece, summary.ece_uncalibrated);
        for (value, interval) in [
            (summary.metrics.auc, summary.auc_ci),
            (summary.auprc, summary.auprc_ci),
            (summary.metrics.sensitivity, summary.sensitivity_ci),
        ] {
            assert!(interval.contains(value), "{value} outside {interval:?}");
        }
    }

    #[test]
    fn the_json_has_every_figure_and_interval() {
        let card = card();
        let logits = [-3.0, -2.0, -1.0, 0.5, 1.0, 2.0, 3.0, -0.5];
        let labels = [false, false, true, false, true, true, true, true];
        let evaluation = evaluate(
            &card,
            &scored(&logits, &labels, 1.0),
            SplitChoice::Validation,
            BootstrapConfig::default(),
        )
        .unwrap();
        let json = serde_json::to_value(&evaluation.summary).unwrap();
        for key in [
            "auc",
            "accuracy",
            "sensitivity",
            "specificity",
            "precision",
            "f1",
            "n",
            "tp",
            "tn",
            "fp",
            "fn",
            "threshold",
            "auprc",
            "ece",
            "brier",
            "npv",
            "uncertain_count",
            "accuracy_outside_uncertain",
        ] {
            assert!(
                json[key].is_number(),
                "`{key}` missing or not a number: {json}"
            );
        }
        for key in [
            "auc_ci",
            "auprc_ci",
            "accuracy_ci",
            "sensitivity_ci",
            "specificity_ci",
            "precision_ci",
            "f1_ci",
        ] {
            let pair = json[key].as_array().expect(key);
            assert_eq!(pair.len(), 2);
            assert!(pair[0].as_f64().unwrap() <= pair[1].as_f64().unwrap());
        }
        assert_eq!(json["split"], "validation");
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(
            back.operating_points.len(),
            1 + EXTRA_SENSITIVITY_TARGETS.len()
        );
        assert_eq!(back.metrics.n, 8);
        assert!((back.metrics.auc - evaluation.summary.metrics.auc).abs() < 1e-12);
    }

    #[test]
    fn one_class_is_a_clear_error() {
        let card = card();
        let err = evaluate(
            &card,
            &scored(&[1.0, 2.0], &[true, true], 1.0),
            SplitChoice::Test,
            BootstrapConfig::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("both classes"), "{err}");
    }
}
