//! The training loop: augmentation, class balancing, optimisation, validation by child-grouped
//! split, early stopping on validation AUC, checkpoints that survive a kill, and the final
//! bundle with its calibrated threshold.
//!
//! A run folder holds `config.json` (the configuration as run), `train.log`, `metrics.jsonl`
//! (one line per epoch), `split.tsv` (which image went where), `checkpoint/` (the last finished
//! epoch, for `--resume`), `best.bpk` (weights of the best epoch so far) and, at the end,
//! `model/` (the bundle).

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

mod learner;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::activation::log_sigmoid;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::augment::AugmentConfig;
use crate::bundle::{Bundle, CARD_FORMAT, Card, DataRecord, bundle_dir};
use crate::data::{self, Label, Sample, write_atomic};
use crate::error::{Error, Result};
use crate::metrics::{self, Metrics, ThresholdRule, fit_temperature, sigmoid};
use crate::model::{NetConfig, PneumoNet};
use crate::native::NativeNetwork;
use crate::preprocess::{Preprocessing, normalize};
pub use learner::{Engine, Learner};

/// How training counters the class imbalance (about one normal image to three pneumonia).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Neither: the loss sees the classes as they come.
    None,
    /// Weight each image's loss by the inverse of its class frequency.
    ClassWeights,
    /// Draw each epoch's images so that both classes are equally frequent.
    Sampling,
}

/// Every setting of a training run; saved with the run and in the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Seed for the split, initialisation, shuffling, sampling and augmentation.
    pub seed: u64,
    /// Share of each class's training images (grouped by child) held out for validation.
    pub validation_fraction: f64,
    /// Side of the square network input, in pixels.
    pub input_size: u32,
    /// The network.
    pub network: NetConfig,
    /// Augmentation of training images.
    pub augment: AugmentConfig,
    /// Class-imbalance strategy.
    pub balance: Balance,
    /// Most epochs to run.
    pub epochs: usize,
    /// Stop when validation AUC has not improved for this many epochs.
    pub patience: usize,
    /// Images per optimisation step.
    pub batch_size: usize,
    /// Peak learning rate of AdamW (reached after warm-up, then cosine decay to zero).
    pub learning_rate: f64,
    /// Decoupled weight decay of AdamW.
    pub weight_decay: f32,
    /// Warm-up length, in epochs, of the linear learning-rate ramp.
    pub warmup_epochs: f64,
    /// Label smoothing: targets become `s/2` and `1 - s/2`.
    pub label_smoothing: f32,
    /// Rule for the decision threshold, applied on validation.
    pub threshold_rule: ThresholdRule,
    /// Validation accuracy that predictions outside the "uncertain — refer" band must reach.
    pub refer_target_accuracy: f64,
    /// Which code computes the training steps.
    pub engine: Engine,
    /// Perturbed copies of every validation image (training's augmentation, with seeds of
    /// their own) scored beside the clean images when the threshold is chosen, clean and
    /// perturbed images weighing half each. The threshold then sits where the classes stay
    /// apart when exposure, contrast, sharpness, position and the squash of the image change,
    /// not only where the clean validation images happen to leave a gap. 0 chooses on the clean
    /// images alone.
    pub threshold_stress_copies: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 2018,
            validation_fraction: 0.2,
            input_size: 128,
            network: NetConfig::default(),
            augment: AugmentConfig::default(),
            balance: Balance::Sampling,
            epochs: 20,
            patience: 6,
            batch_size: 32,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            warmup_epochs: 1.0,
            label_smoothing: 0.05,
            threshold_rule: ThresholdRule::Youden,
            refer_target_accuracy: 0.99,
            engine: Engine::Native,
            threshold_stress_copies: 4,
        }
    }
}

impl TrainConfig {
    /// Checks every value is usable before any work starts.
    pub fn check(&self) -> Result<()> {
        self.network.check()?;
        self.augment.check().map_err(Error::Config)?;
        Preprocessing::new(self.input_size).check_supported()?;
        let bad = |what: String| Err(Error::Config(what));
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs and batch_size must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return bad(format!(
                "learning_rate {} must be in (0, 1)",
                self.learning_rate
            ));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing {} must be in [0, 0.5)",
                self.label_smoothing
            ));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) || self.validation_fraction == 0.0 {
            return bad(format!(
                "validation_fraction {} must be in (0, 1)",
                self.validation_fraction
            ));
        }
        Ok(())
    }
}

/// One line of `metrics.jsonl`: what an epoch did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch.
    pub train_loss: f64,
    /// Unweighted log loss on validation.
    pub validation_loss: f64,
    /// AUC on validation.
    pub validation_auc: f64,
    /// Learning rate at the end of the epoch.
    pub learning_rate: f64,
    /// Training images per second over the epoch (augmentation included).
    pub images_per_second: f64,
    /// Wall time of the epoch, validation included, in seconds.
    pub seconds: f64,
}

/// The state of a run after its last finished epoch; what `--resume` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    /// Epochs finished.
    epoch: usize,
    /// Best validation AUC so far and its epoch.
    best_auc: f64,
    best_loss: f64,
    best_epoch: usize,
    /// Weights and optimiser files of this checkpoint, inside `checkpoint/`.
    model_file: String,
    optimizer_file: String,
    /// The configuration the run was started with; a resume must use the same.
    config: TrainConfig,
}

/// What a finished run produced.
pub struct TrainOutcome {
    /// The trained bundle (also saved under `run_dir/model`).
    pub bundle: Bundle,
    /// Where the bundle was written.
    pub bundle_dir: PathBuf,
}

/// Images of one side of the split, decoded and resized once.
struct ImageSet {
    pixels: Vec<Vec<f32>>,
    labels: Vec<Label>,
}

/// Trains a model on `data_dir` into `run_dir`, resuming from its checkpoint if `resume`.
pub fn train(
    data_dir: &Path,
    run_dir: &Path,
    config: &TrainConfig,
    resume: bool,
) -> Result<TrainOutcome> {
    config.check()?;
    data::check_root(data_dir)?;
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;

    let checkpoint = if resume {
        read_checkpoint(run_dir)?
    } else {
        None
    };
    if let Some(previous) = &checkpoint
        && previous.config != *config
    {
        return Err(Error::Config(format!(
            "cannot resume `{}`: its configuration differs from this one (see its config.json)",
            run_dir.display()
        )));
    }
    let config_json =
        serde_json::to_vec_pretty(config).map_err(|e| Error::Config(e.to_string()))?;
    write_atomic(&run_dir.join("config.json"), &config_json)?;

    // The split.
    let official_train = data::discover_split(data_dir, "train")?;
    let official_val = data::discover_split(data_dir, "val")?;
    if official_train.is_empty() {
        return Err(Error::Dataset {
            path: data_dir.to_path_buf(),
            reason: "train/ holds no images".into(),
        });
    }
    let split = data::split_by_child(
        &official_train,
        &official_val,
        config.validation_fraction,
        config.seed,
    )?;
    for (side, samples) in [("train", &split.train), ("validation", &split.validation)] {
        let (normal, pneumonia) = data::class_counts(samples);
        if normal == 0 || pneumonia == 0 {
            return Err(Error::Dataset {
                path: data_dir.to_path_buf(),
                reason: format!(
                    "the {side} side has {normal} normal and {pneumonia} pneumonia images; both classes are needed"
                ),
            });
        }
        info!(side, normal, pneumonia, "split");
    }
    write_split_list(
        &run_dir.join("split.tsv"),
        data_dir,
        &split.train,
        &split.validation,
    )?;

    // Decode everything once.
    let preprocessing = Preprocessing::new(config.input_size);
    let started = Instant::now();
    let train_set = load_images(&split.train, &preprocessing, "decoding training images")?;
    let mut validation_set = load_images(
        &split.validation,
        &preprocessing,
        "decoding validation images",
    )?;
    let validation_raw =
        (config.threshold_stress_copies > 0).then(|| validation_set.pixels.clone());
    for image in &mut validation_set.pixels {
        normalize(image);
    }
    info!(seconds = started.elapsed().as_secs_f64(), "images decoded");

    // Model, optimiser and, when resuming, their saved state.
    let device = Device::flex().autodiff();
    device.seed(config.seed);
    let mut start_epoch = 0;
    let mut best = (f64::MIN, f64::MAX, 0usize);
    let mut learner = match &checkpoint {
        Some(previous) => {
            let dir = run_dir.join("checkpoint");
            start_epoch = previous.epoch;
            best = (previous.best_auc, previous.best_loss, previous.best_epoch);
            info!(epoch = start_epoch, "resumed");
            Learner::load(
                config,
                &device,
                &dir.join(&previous.model_file),
                &dir.join(&previous.optimizer_file),
            )?
        }
        None => Learner::new(config.network.init(&device), config, &device)?,
    };

    let steps_per_epoch = train_set.pixels.len().div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let warmup_steps = (config.warmup_epochs * steps_per_epoch as f64).round() as usize;
    let class_weights = class_weights(&train_set.labels, config.balance);
    let size = config.input_size as usize;

    let bar = ProgressBar::new(total_steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} steps · ETA {eta} · {msg}",
        )
        .map_err(|e| Error::Training(e.to_string()))?,
    );
    bar.set_position((start_epoch * steps_per_epoch) as u64);
    bar.reset_eta();

    let mut epochs_run = start_epoch;
    for epoch in start_epoch..config.epochs {
        let epoch_started = Instant::now();
        let order = epoch_order(&train_set.labels, config.balance, config.seed, epoch);
        let mut loss_sum = 0.0;
        let mut lr = 0.0;

        for (step_in_epoch, batch) in order.chunks(config.batch_size).enumerate() {
            let step = epoch * steps_per_epoch + step_in_epoch;
            lr = learning_rate(config, step, warmup_steps, total_steps);

            let training_batch = make_batch(
                &train_set.pixels,
                &train_set.labels,
                batch,
                config,
                &class_weights,
                epoch,
                step_in_epoch,
            );
            let n = batch.len();
            let loss_value = learner.step(training_batch, size, lr)?;
            if !loss_value.is_finite() {
                return Err(Error::Training(format!(
                    "loss became {loss_value} at epoch {}, step {step_in_epoch}; lower the learning rate",
                    epoch + 1
                )));
            }
            loss_sum += loss_value * n as f64;

            let rate = ((step_in_epoch + 1) * config.batch_size) as f64
                / epoch_started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "epoch {}/{} · loss {:.4} · {rate:.1} img/s",
                epoch + 1,
                config.epochs,
                loss_sum / ((step_in_epoch * config.batch_size + n) as f64)
            ));
            bar.inc(1);
        }
        let train_seconds = epoch_started.elapsed().as_secs_f64();

        // Validation with the weights as they are now.
        let logits = learner.logits(&validation_set.pixels, size)?;
        let probabilities: Vec<f32> = logits.iter().map(|&z| sigmoid(z)).collect();
        let truth: Vec<bool> = validation_set
            .labels
            .iter()
            .map(|&l| l == Label::Pneumonia)
            .collect();
        let validation_auc = metrics::auc(&probabilities, &truth)?;
        let validation_loss = metrics::log_loss(&probabilities, &truth);

        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / order.len() as f64,
            validation_loss,
            validation_auc,
            learning_rate: lr,
            images_per_second: order.len() as f64 / train_seconds,
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        append_metrics(run_dir, &record)?;
        bar.suspend(|| {
            info!(
                epoch = record.epoch,
                train_loss = format!("{:.4}", record.train_loss),
                validation_loss = format!("{:.4}", record.validation_loss),
                validation_auc = format!("{:.4}", record.validation_auc),
                images_per_second = format!("{:.1}", record.images_per_second),
                seconds = format!("{:.0}", record.seconds),
                "epoch done"
            )
        });

        // Keep the best epoch: higher AUC, or equal AUC with lower validation loss.
        let improved = validation_auc > best.0 + 1e-4
            || ((validation_auc - best.0).abs() <= 1e-4 && validation_loss < best.1);
        if improved {
            best = (validation_auc, validation_loss, epoch + 1);
            let inference = learner.inference_model(config, &device.clone().inner());
            save_weights(&inference, &run_dir.join("best.bpk"))?;
        }
        epochs_run = epoch + 1;
        save_checkpoint(run_dir, &learner, epochs_run, best, config)?;

        if epochs_run - best.2 >= config.patience {
            bar.suspend(|| {
                info!(
                    epoch = epochs_run,
                    best_epoch = best.2,
                    "early stop: validation AUC no longer improves"
                )
            });
            break;
        }
    }
    bar.finish_and_clear();

    // The final bundle: best weights, temperature and threshold fitted on validation.
    let best_model = load_weights(
        config.network.init(&device.clone().inner()),
        &run_dir.join("best.bpk"),
    )?;
    let finished = finish_bundle(
        best_model,
        config,
        &split,
        &validation_set,
        validation_raw.as_deref(),
        best.2,
        epochs_run,
    )?;
    let out = bundle_dir(run_dir);
    finished.save(&out)?;
    info!(dir = %out.display(), threshold = finished.card.threshold, "bundle written");

    // Plots of the per-epoch figures: a plot that fails costs a picture, never the model.
    match crate::evaluation::plots::write_training_plots(run_dir, Some(best.2)) {
        Ok(_) => info!("training curves drawn: training.svg, training.png"),
        Err(e) => tracing::warn!(error = %e, "could not draw the training curves"),
    }
    Ok(TrainOutcome {
        bundle: finished,
        bundle_dir: out,
    })
}

/// Fits temperature and threshold on validation and assembles the card. `validation_raw`
/// holds the validation images before standardisation, for the perturbed copies the threshold
/// is also chosen on (`None` when [`TrainConfig::threshold_stress_copies`] is 0).
fn finish_bundle(
    model: PneumoNet,
    config: &TrainConfig,
    split: &data::TrainValidation,
    validation_set: &ImageSet,
    validation_raw: Option<&[Vec<f32>]>,
    best_epoch: usize,
    epochs_run: usize,
) -> Result<Bundle> {
    let model = model.valid();
    let size = config.input_size as usize;
    let network = NativeNetwork::from_model(&model, &config.network, size)?;
    let logits = network.logits(&validation_set.pixels)?;
    let truth: Vec<bool> = validation_set
        .labels
        .iter()
        .map(|&l| l == Label::Pneumonia)
        .collect();

    let temperature = fit_temperature(&logits, &truth);
    let probabilities: Vec<f32> = logits.iter().map(|&z| sigmoid(z / temperature)).collect();

    // Perturbed copies come copy by copy, so their labels are the clean labels repeated. The
    // clean images are repeated as often, so that each side weighs half: Youden's J over the
    // union is then the mean of the clean and the perturbed J, and a sensitivity target holds
    // on their mean sensitivity.
    let copies = config.threshold_stress_copies;
    let stressed = match validation_raw {
        Some(raw) if copies > 0 => {
            let logits = stressed_logits(&network, raw, config)?;
            Some(
                logits
                    .iter()
                    .map(|&z| sigmoid(z / temperature))
                    .collect::<Vec<f32>>(),
            )
        }
        _ => None,
    };
    let stressed_truth = truth.repeat(copies);
    let threshold = match &stressed {
        Some(stressed) => {
            let all = [probabilities.repeat(copies), stressed.clone()].concat();
            let all_truth = [stressed_truth.as_slice(), &stressed_truth].concat();
            metrics::choose_threshold(&all, &all_truth, config.threshold_rule)?
        }
        None => metrics::choose_threshold(&probabilities, &truth, config.threshold_rule)?,
    }
    .clamp(1e-4, 1.0 - 1e-4);
    let validation = Metrics::compute(&probabilities, &truth, threshold)?;
    let stressed_validation = match &stressed {
        Some(stressed) => Some(Metrics::compute(stressed, &stressed_truth, threshold)?),
        None => None,
    };
    let uncertain_band = metrics::choose_uncertain_band(
        &probabilities,
        &truth,
        threshold,
        config.refer_target_accuracy,
    )?;

    let created_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let train_hash = data::manifest_hash(&split.train);
    let (train_normal, train_pneumonia) = data::class_counts(&split.train);
    let (val_normal, val_pneumonia) = data::class_counts(&split.validation);
    let card = Card {
        format: CARD_FORMAT,
        model_id: format!("pneumonet-{}-{}", config.input_size, &train_hash[..8]),
        pneumo_version: env!("CARGO_PKG_VERSION").into(),
        created_unix,
        network: config.network.clone(),
        parameters: config.network.parameter_count(),
        forward_flops: config.network.forward_flops(size),
        preprocessing: Preprocessing::new(config.input_size),
        classes: vec!["NORMAL".into(), "PNEUMONIA".into()],
        threshold,
        threshold_rule: config.threshold_rule,
        temperature,
        uncertain_band,
        training: config.clone(),
        data: DataRecord {
            train_manifest_sha256: train_hash,
            validation_manifest_sha256: data::manifest_hash(&split.validation),
            train_counts: [train_normal, train_pneumonia],
            validation_counts: [val_normal, val_pneumonia],
            validation_files: split.validation.iter().map(relative_name).collect(),
        },
        best_epoch,
        epochs_run,
        validation,
        stressed_validation,
    };
    Bundle::from_model(model, card)
}

/// Logits of [`TrainConfig::threshold_stress_copies`] perturbed copies of every image in `raw`
/// (validation images in `[0, 1]`, before standardisation), copy by copy: the first copy of
/// every image, then the second, and so on. Each copy draws training's augmentation from a
/// seed of its own, disjoint from the training batches' seeds, so the result is reproducible.
fn stressed_logits(
    network: &NativeNetwork,
    raw: &[Vec<f32>],
    config: &TrainConfig,
) -> Result<Vec<f32>> {
    let mut logits = Vec::with_capacity(raw.len() * config.threshold_stress_copies);
    for copy in 0..config.threshold_stress_copies {
        let images: Vec<Vec<f32>> = raw
            .par_iter()
            .enumerate()
            .map(|(index, pixels)| {
                let mut rng = ChaCha8Rng::seed_from_u64(stress_seed(config.seed, copy, index));
                network_input(pixels, config, &mut rng)
            })
            .collect();
        logits.extend(network.logits(&images)?);
    }
    Ok(logits)
}

/// The network's input for a training image or a perturbed validation copy: `pixels` (in
/// `[0, 1]`, before standardisation) augmented with draws from `rng`, then standardised.
fn network_input(pixels: &[f32], config: &TrainConfig, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let mut image = config
        .augment
        .apply(pixels, config.input_size as usize, rng);
    normalize(&mut image);
    image
}

/// Seed of perturbed copy `copy` of validation image `index`. The top bit is never set by the
/// training batches' seeds (epoch numbers stay far below 2^23), so the two never meet.
fn stress_seed(run_seed: u64, copy: usize, index: usize) -> u64 {
    run_seed ^ (1 << 63) ^ ((copy as u64) << 32) ^ index as u64
}

/// `split/CLASS/file` of a sample, the dataset-relative name used in cards and split lists.
pub fn relative_name(sample: &Sample) -> String {
    let file = sample
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}/{}/{}", sample.split, sample.label.folder(), file)
}

/// Writes `split.tsv`: one line per image, `side<TAB>child<TAB>split/CLASS/file`.
pub fn write_split_list(
    path: &Path,
    _root: &Path,
    train: &[Sample],
    validation: &[Sample],
) -> Result<()> {
    let mut text = String::from("side\tchild\timage\n");
    for (side, samples) in [("train", train), ("validation", validation)] {
        for s in samples {
            text.push_str(&format!("{side}\t{}\t{}\n", s.child, relative_name(s)));
        }
    }
    write_atomic(path, text.as_bytes())
}

/// Decodes and resizes `samples` in parallel with a progress bar. Any unreadable training image
/// is an error naming it: a model must not silently train on less than its card says.
fn load_images(samples: &[Sample], preprocessing: &Preprocessing, what: &str) -> Result<ImageSet> {
    let bar = ProgressBar::new(samples.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} · {per_sec} · ETA {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    let pixels: Result<Vec<Vec<f32>>> = samples
        .par_iter()
        .map(|s| {
            let image = preprocessing.load_file_unnormalized(&s.path);
            bar.inc(1);
            image
        })
        .collect();
    bar.finish_and_clear();
    Ok(ImageSet {
        pixels: pixels?,
        labels: samples.iter().map(|s| s.label).collect(),
    })
}

/// Loss weight of each class: inverse frequency (normalised to average 1) under
/// [`Balance::ClassWeights`], 1 otherwise.
fn class_weights(labels: &[Label], balance: Balance) -> [f32; 2] {
    if balance != Balance::ClassWeights {
        return [1.0, 1.0];
    }
    let pneumonia = labels
        .iter()
        .filter(|&&l| l == Label::Pneumonia)
        .count()
        .max(1);
    let normal = (labels.len() - pneumonia).max(1);
    let total = labels.len() as f32;
    [
        total / (2.0 * normal as f32),
        total / (2.0 * pneumonia as f32),
    ]
}

/// The order of training images in `epoch`: a seeded shuffle, or under [`Balance::Sampling`]
/// as many images as the set holds, half from each class (the minority drawn repeatedly, in
/// fresh shuffles).
fn epoch_order(labels: &[Label], balance: Balance, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng =
        ChaCha8Rng::seed_from_u64(seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(epoch as u64 + 1)));
    let mut order: Vec<usize> = (0..labels.len()).collect();
    if balance == Balance::Sampling {
        let half = labels.len() / 2;
        order.clear();
        for class in Label::ALL {
            let members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
            let mut drawn = Vec::with_capacity(half);
            while drawn.len() < half && !members.is_empty() {
                let mut round = members.clone();
                round.shuffle(&mut rng);
                drawn.extend(round.into_iter().take(half - drawn.len()));
            }
            order.extend(drawn);
        }
    }
    order.shuffle(&mut rng);
    order
}

// ---- Shared with the throughput benchmark (benches/throughput.rs), so that it times exactly
// ---- what the training loop runs.

/// One training batch, ready for [`optimization_step`].
pub struct TrainingBatch {
    /// Augmented, normalised pixels of every image, `[n, 1, size, size]` row-major.
    pub images: Vec<f32>,
    /// Smoothed targets, one per image.
    pub targets: Vec<f32>,
    /// Loss weight of each image.
    pub weights: Vec<f32>,
}

/// Assembles one training batch from the raw (unnormalised) `pixels` and `labels` of a set:
/// augmented and normalised pixels of the images at `indices`, smoothed targets and loss
/// weights. Each image's augmentation has its own seed, so the batch is the same whatever the
/// number of threads.
pub fn make_batch(
    pixels: &[Vec<f32>],
    labels: &[Label],
    indices: &[usize],
    config: &TrainConfig,
    class_weights: &[f32; 2],
    epoch: usize,
    step: usize,
) -> TrainingBatch {
    let images: Vec<Vec<f32>> = indices
        .par_iter()
        .enumerate()
        .map(|(slot, &index)| {
            let seed = config.seed ^ ((epoch as u64) << 40) ^ ((step as u64) << 16) ^ slot as u64;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let _warm: u32 = rng.random();
            network_input(&pixels[index], config, &mut rng)
        })
        .collect();

    let smoothing = config.label_smoothing;
    let targets = indices
        .iter()
        .map(|&i| labels[i].target() * (1.0 - smoothing) + smoothing / 2.0)
        .collect();
    let weights = indices
        .iter()
        .map(|&i| class_weights[labels[i] as usize])
        .collect();
    TrainingBatch {
        images: images.concat(),
        targets,
        weights,
    }
}

/// One optimisation step on `batch` (images of `size`×`size`): forward pass, weighted binary
/// cross-entropy, backward pass and an AdamW update at `learning_rate`. Returns the updated
/// network and the batch's mean loss (not finite if training diverged).
pub fn optimization_step(
    model: PneumoNet,
    optimizer: &mut ModuleOptimizer,
    batch: TrainingBatch,
    size: usize,
    learning_rate: f64,
    device: &Device,
) -> (PneumoNet, f64) {
    let n = batch.targets.len();
    let images = Tensor::<4>::from_data(TensorData::new(batch.images, [n, 1, size, size]), device);
    let targets = Tensor::<1>::from_data(TensorData::new(batch.targets, [n]), device);
    let weights = Tensor::<1>::from_data(TensorData::new(batch.weights, [n]), device);

    let logits = model.forward(images);
    let loss = weighted_bce(logits, targets, weights);
    let loss_value = scalar(&loss);

    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optimizer.step(learning_rate, model, grads), loss_value)
}

/// Weighted binary cross-entropy on logits, averaged over the batch.
pub fn weighted_bce(logits: Tensor<1>, targets: Tensor<1>, weights: Tensor<1>) -> Tensor<1> {
    // -[t log σ(z) + (1 - t) log(1 - σ(z))] = (1 - t) z - log σ(z)
    let per_image = (targets.neg() + 1.0) * logits.clone() - log_sigmoid(logits);
    (per_image * weights).mean()
}

// ---- End of the part shared with the throughput benchmark.

/// Linear warm-up to the peak learning rate, then cosine decay to zero at the last step.
fn learning_rate(config: &TrainConfig, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return config.learning_rate * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    config.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// The value of a one-element tensor.
fn scalar(tensor: &Tensor<1>) -> f64 {
    tensor
        .clone()
        .into_data()
        .iter::<f32>()
        .next()
        .map(f64::from)
        .unwrap_or(f64::NAN)
}

/// Appends one epoch's record to `metrics.jsonl`, rewriting the file atomically.
fn append_metrics(run_dir: &Path, record: &EpochRecord) -> Result<()> {
    let path = run_dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    // A resumed run replays nothing: drop lines of epochs at or after this one.
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<EpochRecord>(line)
                .map(|r| r.epoch < record.epoch)
                .unwrap_or(false)
        })
        .collect();
    let mut joined = kept.join("\n");
    if !joined.is_empty() {
        joined.push('\n');
    }
    text = joined;
    let line = serde_json::to_string(record).map_err(|e| Error::Training(e.to_string()))?;
    text.push_str(&line);
    text.push('\n');
    write_atomic(&path, text.as_bytes())
}

/// Reads the per-epoch records of a run folder.
pub fn read_metrics(run_dir: &Path) -> Result<Vec<EpochRecord>> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .map_err(|e| Error::Training(format!("{}: {e}", path.display())))
        })
        .collect()
}

/// Saves a module's weights atomically.
fn save_weights(model: &PneumoNet, path: &Path) -> Result<()> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Training(format!("cannot serialise weights: {e}")))?;
    write_atomic(path, &bytes)
}

/// Loads weights saved by [`save_weights`] into `model`.
fn load_weights(model: PneumoNet, path: &Path) -> Result<PneumoNet> {
    let record = ModuleRecord::load(path)
        .map_err(|e| Error::Training(format!("`{}`: {e}", path.display())))?;
    model
        .try_load_record(record)
        .map_err(|e| Error::Training(format!("`{}`: {e}", path.display())))
}

/// Writes the checkpoint of the epoch just finished. Its files carry the epoch in their names
/// and `state.json` is written last, so a kill at any moment leaves the previous checkpoint
/// intact and readable.
fn save_checkpoint(
    run_dir: &Path,
    learner: &Learner,
    epoch: usize,
    best: (f64, f64, usize),
    config: &TrainConfig,
) -> Result<()> {
    let dir = run_dir.join("checkpoint");
    let model_file = format!("model-{epoch:03}.bpk");
    let optimizer_file = format!("optimizer-{epoch:03}.bpk");
    learner.save(config, &dir.join(&model_file), &dir.join(&optimizer_file))?;

    let state = Checkpoint {
        epoch,
        best_auc: best.0,
        best_loss: best.1,
        best_epoch: best.2,
        model_file: model_file.clone(),
        optimizer_file: optimizer_file.clone(),
        config: config.clone(),
    };
    let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::Training(e.to_string()))?;
    write_atomic(&dir.join("state.json"), &json)?;

    // Older epochs' files are no longer referenced.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".bpk") && name != model_file && name != optimizer_file {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Reads `checkpoint/state.json` if the run has one.
fn read_checkpoint(run_dir: &Path) -> Result<Option<Checkpoint>> {
    let path = run_dir.join("checkpoint").join("state.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| Error::Training(format!("`{}` is not a checkpoint: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_equalise_the_classes() {
        let labels = [vec![Label::Normal; 25], vec![Label::Pneumonia; 75]].concat();
        let [normal, pneumonia] = class_weights(&labels, Balance::ClassWeights);
        assert!((normal * 25.0 - pneumonia * 75.0).abs() < 1e-3);
        assert_eq!(class_weights(&labels, Balance::Sampling), [1.0, 1.0]);
    }

    #[test]
    fn balanced_sampling_draws_both_classes_equally() {
        let labels = [vec![Label::Normal; 20], vec![Label::Pneumonia; 80]].concat();
        let order = epoch_order(&labels, Balance::Sampling, 1, 0);
        let normal = order
            .iter()
            .filter(|&&i| labels[i] == Label::Normal)
            .count();
        assert_eq!(order.len(), 100);
        assert_eq!(normal, 50);
        let plain = epoch_order(&labels, Balance::ClassWeights, 1, 0);
        let mut sorted = plain.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(plain, epoch_order(&labels, Balance::ClassWeights, 1, 1));
    }

    #[test]
    fn learning_rate_warms_up_then_decays_to_zero() {
        let config = TrainConfig::default();
        let peak = config.learning_rate;
        assert!(learning_rate(&config, 0, 10, 100) < peak / 5.0);
        assert!((learning_rate(&config, 9, 10, 100) - peak).abs() < 1e-12);
        assert!(learning_rate(&config, 55, 10, 100) < peak);
        assert!(learning_rate(&config, 100, 10, 100).abs() < 1e-12);
    }
}
