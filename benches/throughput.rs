//! Throughput benchmark of pneumo's default network on the CPU backend, printing one JSON object.
//!
//! `scripts/bench.sh` runs it next to the PyTorch reference (`bench/pytorch_reference.py`) and
//! prints the comparison; docs/benchmark.md describes what is measured. Each mode runs in its own
//! process so that its peak memory is its own:
//!
//! ```text
//! cargo bench --bench throughput -- train [--engine burn|native] [--steps 12] [--warmup 3]
//! cargo bench --bench throughput -- infer [--iterations 12]
//! cargo bench --bench throughput -- gemm [--size 4096] [--repeats 5]
//! cargo bench --bench throughput -- fixtures DIR
//! cargo bench --bench throughput -- preprocess FILE
//! ```
//!
//! The thread count is rayon's: set `RAYON_NUM_THREADS`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::prelude::*;
use clap::{Parser, Subcommand, ValueEnum};
use image::{GrayImage, Luma};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use pneumo::bundle::{Bundle, CARD_FORMAT, Card, DataRecord};
use pneumo::data::{Label, write_atomic};
use pneumo::metrics::{Metrics, ThresholdRule, UncertainBand};
use pneumo::model::NetConfig;
use pneumo::preprocess::{MAX_SIDE, Preprocessing, normalize};
use pneumo::training::{TrainConfig, TrainingBatch, make_batch, optimization_step};

/// The same allocator as the `pneumo` binary, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest side accepted for the GEMM matrices (three `size`² matrices of `f32`: 768 MiB).
const MAX_GEMM_SIZE: usize = 8192;

/// Command line of the benchmark.
#[derive(Parser)]
struct Cli {
    /// What to measure.
    #[command(subcommand)]
    mode: Mode,
    /// Accepted and ignored: `cargo bench` appends it to the arguments of every bench target.
    #[arg(long, hide = true, global = true)]
    bench: bool,
}

/// What to measure.
#[derive(Subcommand)]
enum Mode {
    /// Full optimisation steps (forward, loss, backward, AdamW) at the default configuration,
    /// and the peak memory of the process that ran them.
    Train {
        /// The training engine to time.
        #[arg(long, value_enum, default_value_t = Engine::Native)]
        engine: Engine,
        /// Timed steps after the warm-up.
        #[arg(long, default_value_t = 12)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
    },
    /// Batched forward passes in inference mode.
    Infer {
        /// The engine to time.
        #[arg(long, value_enum, default_value_t = Engine::Native)]
        engine: Engine,
        /// Timed batches after two untimed ones.
        #[arg(long, default_value_t = 12)]
        iterations: usize,
    },
    /// A large single-precision matrix product with the `gemm` crate that burn's CPU backend
    /// uses: the practical peak of this machine for the thread count.
    Gemm {
        /// Side of the square matrices.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Timed products after one untimed one.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Writes a random-weight bundle (`DIR/bundle`) and a radiograph-sized JPEG
    /// (`DIR/xray.jpeg`) for timing `pneumo predict`.
    Fixtures {
        /// Folder to write into.
        dir: PathBuf,
        /// Width of the JPEG, in pixels.
        #[arg(long, default_value_t = 1600)]
        width: u32,
        /// Height of the JPEG, in pixels.
        #[arg(long, default_value_t = 1300)]
        height: u32,
    },
    /// Prints the model input pneumo makes of an image file (decoded, squashed, standardised),
    /// for checking that the reference preprocesses the same way.
    Preprocess {
        /// The image file.
        file: PathBuf,
    },
}

/// Training engines the `train` mode can time.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// burn's autodiff on the `flex` CPU backend (`pneumo train --engine burn`).
    Burn,
    /// pneumo's own CPU training engine (`pneumo::native`), what `pneumo train` runs by
    /// default.
    Native,
}

impl Engine {
    /// The name used on the command line and in the JSON.
    fn name(self) -> &'static str {
        match self {
            Engine::Burn => "burn",
            Engine::Native => "native",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let start_rss = memory_figure("VmRSS:");
    let cli = Cli::parse();
    let report = match cli.mode {
        Mode::Train {
            engine,
            steps,
            warmup,
        } => train(engine, steps, warmup, start_rss)?,
        Mode::Infer { engine, iterations } => infer(engine, iterations)?,
        Mode::Gemm { size, repeats } => gemm_peak(size, repeats)?,
        Mode::Fixtures { dir, width, height } => fixtures(&dir, width, height)?,
        Mode::Preprocess { file } => preprocess(&file)?,
    };
    println!("{report}");
    Ok(())
}

/// Median of a sample (the mean of the middle two for an even count); `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(0.5 * (sorted[n / 2 - 1] + sorted[n / 2])),
    }
}

/// A memory figure of this process from `/proc/self/status`, in bytes: `VmHWM:` is the peak
/// resident set so far (what `getrusage` reports as `ru_maxrss`), `VmRSS:` the current one.
/// `None` where the system does not report it.
fn memory_figure(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Smooth random raw images in `[0, 1]`, standing in for decoded radiographs.
fn random_images(count: usize, size: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            let (fx, fy, phase): (f32, f32, f32) = (
                rng.random_range(0.02..0.1),
                rng.random_range(0.02..0.1),
                rng.random_range(0.0..6.0),
            );
            (0..size * size)
                .map(|i| {
                    let (x, y) = ((i % size) as f32, (i / size) as f32);
                    let wave = 0.5 + 0.4 * (fx * x + phase).sin() * (fy * y).cos();
                    (wave + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0)
                })
                .collect()
        })
        .collect()
}

/// What every training engine is timed on: the default configuration and two batches' worth
/// of synthetic images, used in turn.
struct TrainingFixture {
    /// `TrainConfig::default()`: network, batch size, input size, optimiser settings.
    config: TrainConfig,
    /// Raw images in `[0, 1]`, `input_size`² each.
    pixels: Vec<Vec<f32>>,
    /// One normal image in four, about the imbalance of the real training set.
    labels: Vec<Label>,
    /// Inverse class frequency, normalised to average 1 (what `Balance::ClassWeights` uses).
    class_weights: [f32; 2],
}

impl TrainingFixture {
    /// The fixture every engine shares.
    fn new() -> Self {
        let config = TrainConfig::default();
        let count = 2 * config.batch_size;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let pixels = random_images(count, config.input_size as usize, &mut rng);
        let labels: Vec<Label> = (0..count)
            .map(|i| {
                if i % 4 == 0 {
                    Label::Normal
                } else {
                    Label::Pneumonia
                }
            })
            .collect();
        let normal = labels.iter().filter(|&&l| l == Label::Normal).count();
        let total = count as f32;
        let class_weights = [
            total / (2.0 * normal as f32),
            total / (2.0 * (count - normal) as f32),
        ];
        Self {
            config,
            pixels,
            labels,
            class_weights,
        }
    }

    /// The batch of step `step`, assembled as `pneumo train` assembles it (augmentation,
    /// normalisation, smoothed targets, loss weights).
    fn batch(&self, step: usize) -> TrainingBatch {
        let batch_size = self.config.batch_size;
        let first = (step * batch_size) % self.pixels.len();
        let indices: Vec<usize> = (first..first + batch_size).collect();
        make_batch(
            &self.pixels,
            &self.labels,
            &indices,
            &self.config,
            &self.class_weights,
            0,
            step,
        )
    }
}

/// Wall times of the timed (post-warm-up) steps of one engine.
struct StepTimings {
    /// Seconds to assemble each batch.
    batch_seconds: Vec<f64>,
    /// Seconds of each optimisation step alone.
    step_seconds: Vec<f64>,
    /// Mean loss of the last step.
    final_loss: f64,
}

/// Runs `warmup + steps` optimisation steps with `step`, which takes the engine's state and a
/// batch and returns the batch's mean loss and the new state (or the engine's error), timing
/// batch assembly and step separately. A loss that is not finite is an error: an engine that
/// diverges on this data is broken, whatever its speed.
fn run_steps<State>(
    fixture: &TrainingFixture,
    steps: usize,
    warmup: usize,
    mut state: State,
    mut step: impl FnMut(State, TrainingBatch) -> anyhow::Result<(f64, State)>,
) -> anyhow::Result<StepTimings> {
    let mut timings = StepTimings {
        batch_seconds: Vec::with_capacity(steps),
        step_seconds: Vec::with_capacity(steps),
        final_loss: f64::NAN,
    };
    for index in 0..warmup + steps {
        let started = Instant::now();
        let batch = fixture.batch(index);
        let assembled = Instant::now();
        let loss;
        (loss, state) = step(state, batch).with_context(|| format!("training step {index}"))?;
        let finished = Instant::now();

        ensure!(loss.is_finite(), "the loss became {loss} at step {index}");
        if index >= warmup {
            timings
                .batch_seconds
                .push((assembled - started).as_secs_f64());
            timings
                .step_seconds
                .push((finished - assembled).as_secs_f64());
            timings.final_loss = loss;
        }
    }
    Ok(timings)
}

/// Times full training steps of `engine` at the default configuration. For burn these are
/// exactly what `pneumo train` runs ([`make_batch`] then [`optimization_step`]). The step alone
/// is comparable with the reference, which has no augmentation; the figure with batch assembly
/// is what a training run sees.
fn train(
    engine: Engine,
    steps: usize,
    warmup: usize,
    start_rss: Option<u64>,
) -> anyhow::Result<serde_json::Value> {
    ensure!(steps >= 1, "--steps must be at least 1");
    let fixture = TrainingFixture::new();
    let config = &fixture.config;
    let learning_rate = config.learning_rate;

    let size = config.input_size as usize;
    let device = Device::flex().autodiff();
    device.seed(config.seed);
    let model = config.network.init(&device);

    let timings = match engine {
        Engine::Burn => {
            let mut optimizer = AdamWConfig::new()
                .with_weight_decay(config.weight_decay)
                .init();
            run_steps(&fixture, steps, warmup, model, |model, batch| {
                let (model, loss) =
                    optimization_step(model, &mut optimizer, batch, size, learning_rate, &device);
                Ok((loss, model))
            })?
        }
        Engine::Native => {
            let trainer = pneumo::native::NativeTrainer::from_model(&model, config)?;
            run_steps(&fixture, steps, warmup, trainer, |mut trainer, batch| {
                let loss = trainer.step(&batch, learning_rate)?;
                Ok((loss, trainer))
            })?
        }
    };

    let batch_size = config.batch_size as f64;
    let step_median = median(&timings.step_seconds).context("no timed steps")?;
    let batch_median = median(&timings.batch_seconds).context("no timed steps")?;
    // Forward, plus about twice that backward (gradients of inputs and of weights).
    let flops = 3 * config.network.forward_flops(size) * config.batch_size as u64;
    Ok(json!({
        "mode": "train",
        "engine": engine.name(),
        "threads": rayon::current_num_threads(),
        "batch": config.batch_size,
        "input_size": size,
        "learning_rate": learning_rate,
        "warmup_steps": warmup,
        "steps": steps,
        "step_seconds": timings.step_seconds,
        "batch_assembly_seconds": timings.batch_seconds,
        "median_step_seconds": step_median,
        "images_per_second": batch_size / step_median,
        "images_per_second_with_augmentation": batch_size / (step_median + batch_median),
        "training_flops_per_step": flops,
        "gflops_per_second": flops as f64 / step_median / 1e9,
        "final_loss": timings.final_loss,
        "start_rss_bytes": start_rss,
        "peak_rss_bytes": memory_figure("VmHWM:"),
    }))
}

/// Times batched forward passes of the default network in inference mode, and reports the
/// network's shape (parameters, FLOPs, last feature map) for checking the reference against.
fn infer(engine: Engine, iterations: usize) -> anyhow::Result<serde_json::Value> {
    ensure!(iterations >= 1, "--iterations must be at least 1");
    let config = TrainConfig::default();
    let size = config.input_size as usize;
    let batch_size = pneumo::inference::INFERENCE_BATCH;
    let device = Device::flex();
    device.seed(config.seed);
    let model = config.network.init(&device).valid();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let inputs: Vec<Vec<f32>> = random_images(batch_size, size, &mut rng)
        .into_iter()
        .map(|mut image| {
            normalize(&mut image);
            image
        })
        .collect();

    let native = pneumo::native::NativeTrainer::from_model(&model, &config)?;
    let mut seconds = Vec::with_capacity(iterations);
    for iteration in 0..iterations + 2 {
        let started = Instant::now();
        let logits = match engine {
            Engine::Burn => pneumo::inference::logits_of(&model, &inputs, size, &device),
            Engine::Native => native.logits(&inputs)?,
        };
        let elapsed = started.elapsed().as_secs_f64();
        ensure!(
            logits.len() == batch_size,
            "{} logits for {batch_size} images",
            logits.len()
        );
        if iteration >= 2 {
            seconds.push(elapsed);
        }
    }
    let feature_shape = model
        .features(Tensor::zeros([1, 1, size, size], &device))
        .dims();

    let median_seconds = median(&seconds).context("no timed batches")?;
    Ok(json!({
        "mode": "infer",
        "threads": rayon::current_num_threads(),
        "batch": batch_size,
        "input_size": size,
        "batch_seconds": seconds,
        "median_batch_seconds": median_seconds,
        "images_per_second": batch_size as f64 / median_seconds,
        "network": {
            "parameters": config.network.parameter_count(),
            "forward_flops": config.network.forward_flops(size),
            "feature_shape": &feature_shape[1..],
        },
        "peak_rss_bytes": memory_figure("VmHWM:"),
    }))
}

/// Times `size`² single-precision matrix products with the `gemm` crate on rayon's threads.
fn gemm_peak(size: usize, repeats: usize) -> anyhow::Result<serde_json::Value> {
    ensure!(
        (1..=MAX_GEMM_SIZE).contains(&size),
        "--size must be in 1..={MAX_GEMM_SIZE}"
    );
    ensure!(repeats >= 1, "--repeats must be at least 1");
    let threads = rayon::current_num_threads();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let lhs: Vec<f32> = (0..size * size)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let rhs: Vec<f32> = (0..size * size)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut dst = vec![0.0f32; size * size];
    let stride = size as isize;

    let mut gflops = Vec::with_capacity(repeats);
    for repeat in 0..repeats + 1 {
        let started = Instant::now();
        // SAFETY: all three buffers hold `size * size` row-major values (column stride 1, row
        // stride `size`) and outlive the call; `dst` does not alias the inputs.
        unsafe {
            gemm::gemm(
                size,
                size,
                size,
                dst.as_mut_ptr(),
                1,
                stride,
                false,
                lhs.as_ptr(),
                1,
                stride,
                rhs.as_ptr(),
                1,
                stride,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            );
        }
        let seconds = started.elapsed().as_secs_f64();
        if repeat > 0 {
            gflops.push(2.0 * (size as f64).powi(3) / seconds / 1e9);
        }
    }

    // A spot check that the product is a product: one entry against a plain dot product.
    let expected: f32 = (0..size).map(|k| lhs[k] * rhs[k * size]).sum();
    let checked = (dst[0] - expected).abs() <= 1e-3 * (1.0 + expected.abs());
    Ok(json!({
        "mode": "gemm",
        "library": "gemm 0.19 (burn-flex's matrix product)",
        "threads": threads,
        "size": size,
        "gflops_per_second": gflops,
        "median_gflops_per_second": median(&gflops),
        "best_gflops_per_second": gflops.iter().copied().fold(f64::NAN, f64::max),
        "result_checked": checked,
    }))
}

/// Writes the random-weight bundle and the JPEG used to time `pneumo predict`.
fn fixtures(dir: &Path, width: u32, height: u32) -> anyhow::Result<serde_json::Value> {
    ensure!(
        (1..=MAX_SIDE).contains(&width) && (1..=MAX_SIDE).contains(&height),
        "--width and --height must be in 1..={MAX_SIDE}"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let image = GrayImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        let lungs = ((u * 6.3).sin() * (v * 3.1).sin()).abs();
        let value = 40.0 + 170.0 * lungs + rng.random_range(-12.0..12.0);
        Luma([value.clamp(0.0, 255.0) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&image)
        .context("encoding the benchmark JPEG")?;
    let image_path = dir.join("xray.jpeg");
    write_atomic(&image_path, &jpeg)?;

    let bundle_path = dir.join("bundle");
    random_bundle()?.save(&bundle_path)?;
    Ok(json!({
        "mode": "fixtures",
        "image": image_path,
        "image_bytes": jpeg.len(),
        "image_size": [width, height],
        "bundle": bundle_path,
    }))
}

/// The model input pneumo makes of `file` at the default input size.
fn preprocess(file: &Path) -> anyhow::Result<serde_json::Value> {
    let size = TrainConfig::default().input_size;
    let pixels = Preprocessing::new(size).load_file(file)?;
    Ok(json!({
        "mode": "preprocess",
        "file": file,
        "input_size": size,
        "pixels": pixels,
    }))
}

/// A bundle of the default network with freshly initialised weights and a placeholder card:
/// right for timing, useless for diagnosis.
fn random_bundle() -> anyhow::Result<Bundle> {
    let config = TrainConfig::default();
    let network = NetConfig::default();
    let device = Device::flex();
    device.seed(1);
    let model = network.init(&device);
    let validation = Metrics::compute(&[0.2, 0.8], &[false, true], 0.5)?;
    let card = Card {
        format: CARD_FORMAT,
        model_id: "benchmark-random-weights".into(),
        pneumo_version: env!("CARGO_PKG_VERSION").into(),
        created_unix: 0,
        parameters: network.parameter_count(),
        forward_flops: network.forward_flops(config.input_size as usize),
        network,
        preprocessing: Preprocessing::new(config.input_size),
        classes: vec!["NORMAL".into(), "PNEUMONIA".into()],
        threshold: 0.5,
        threshold_rule: ThresholdRule::Youden,
        temperature: 1.0,
        uncertain_band: UncertainBand {
            low: 0.4,
            high: 0.6,
            target_accuracy: 0.99,
            validation_share: 0.0,
            validation_accuracy_outside: 1.0,
        },
        training: config,
        data: DataRecord {
            train_manifest_sha256: "0".repeat(64),
            validation_manifest_sha256: "0".repeat(64),
            train_counts: [0, 0],
            validation_counts: [0, 0],
            validation_files: Vec::new(),
        },
        best_epoch: 0,
        epochs_run: 0,
        validation,
        stressed_validation: None,
    };
    Ok(Bundle::from_model(model, card)?)
}
