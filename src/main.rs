//! The `pneumo` command line: a thin layer over the library that parses arguments, sets up
//! logging and turns results into output and exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod data_command;

/// mimalloc keeps freed memory for reuse: training allocates and frees large activation buffers
/// every step, and the system allocator hands them back to the kernel each time, which costs a
/// page fault per 4 KiB on the next step (a third of the step time, measured).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use pneumo::bundle::Bundle;
use pneumo::evaluation::{self, SplitChoice};
use pneumo::inference::{Classifier, collect_inputs};
use pneumo::metrics::{BootstrapConfig, Metrics, ThresholdRule};
use pneumo::training::{self, Balance, Engine, TrainConfig};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Tell pneumonia from normal in pediatric chest X-rays: train, evaluate, predict.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (files or folders of JPEG/PNG) as NORMAL or PNEUMONIA.
    Predict {
        /// Image files, or folders searched for images.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Model bundle folder; the built-in model if absent.
        #[arg(long)]
        model: Option<PathBuf>,
        /// One JSON object per image instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a model once over a split of a dataset, at its stored threshold.
    Evaluate {
        /// Dataset root holding train/, val/ and/or test/.
        data_dir: PathBuf,
        /// Model bundle folder; the built-in model if absent.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Which images: an official split folder, or the card's child-grouped validation split.
        #[arg(long, value_enum, default_value = "test")]
        split: SplitChoice,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write a report into this folder: report.html (self-contained, with plots),
        /// metrics.json, and every plot as SVG and PNG.
        #[arg(long, value_name = "OUT")]
        report: Option<PathBuf>,
    },
    /// Train a model from scratch on DATA_DIR/train (validation carved out by child).
    Train {
        /// Dataset root holding train/ (and optionally val/).
        data_dir: PathBuf,
        /// Run folder for checkpoints, logs and the final bundle (`OUT/model`).
        #[arg(long, default_value = "runs/latest")]
        out: PathBuf,
        /// JSON file of training settings; fields left out keep their defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Continue the run in OUT from its last finished epoch.
        #[arg(long)]
        resume: bool,
        /// Override: most epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Override: random seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override: side of the square input in pixels.
        #[arg(long)]
        input_size: Option<u32>,
        /// Override: class-imbalance strategy.
        #[arg(long, value_enum)]
        balance: Option<BalanceArg>,
        /// Choose the threshold for this validation sensitivity instead of Youden's J.
        #[arg(long)]
        target_sensitivity: Option<f64>,
        /// Override: training engine (native: pneumo's own CPU kernels; burn: burn's CPU
        /// backend).
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
    },
    /// Print the model card of a bundle (the built-in one if no --model).
    Card {
        /// Model bundle folder; the built-in model if absent.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Fetch, audit or split a dataset.
    Data(data_command::DataArgs),
}

/// Command-line names of [`Balance`].
#[derive(Clone, Copy, clap::ValueEnum)]
enum BalanceArg {
    None,
    ClassWeights,
    Sampling,
}

impl From<BalanceArg> for Balance {
    fn from(arg: BalanceArg) -> Self {
        match arg {
            BalanceArg::None => Balance::None,
            BalanceArg::ClassWeights => Balance::ClassWeights,
            BalanceArg::Sampling => Balance::Sampling,
        }
    }
}

/// Command-line names of [`Engine`].
#[derive(Clone, Copy, clap::ValueEnum)]
enum EngineArg {
    Native,
    Burn,
}

impl From<EngineArg> for Engine {
    fn from(arg: EngineArg) -> Self {
        match arg {
            EngineArg::Native => Engine::Native,
            EngineArg::Burn => Engine::Burn,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_file = match &cli.command {
        Command::Train { out, .. } => Some(out.join("train.log")),
        _ => None,
    };
    if let Err(e) = init_logging(cli.verbose, log_file.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }

    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr and, for training, to the run's log file as well.
fn init_logging(verbose: u8, file: Option<&Path>) -> anyhow::Result<()> {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("pneumo={level},warn")))
    };

    let file_layer = match file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening log file {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter()),
        )
        .with(file_layer)
        .try_init()
        .context("setting up logging")
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Predict { paths, model, json } => predict(&paths, model.as_deref(), json),
        Command::Evaluate {
            data_dir,
            model,
            split,
            json,
            report,
        } => evaluate(&data_dir, model.as_deref(), split, json, report.as_deref()),
        Command::Train {
            data_dir,
            out,
            config,
            resume,
            epochs,
            seed,
            input_size,
            balance,
            target_sensitivity,
            engine,
        } => {
            let mut settings = match config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a training config", path.display()))?
                }
                None if resume && out.join("config.json").is_file() => {
                    let path = out.join("config.json");
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a training config", path.display()))?
                }
                None => TrainConfig::default(),
            };
            if let Some(epochs) = epochs {
                settings.epochs = epochs;
            }
            if let Some(seed) = seed {
                settings.seed = seed;
            }
            if let Some(size) = input_size {
                settings.input_size = size;
            }
            if let Some(balance) = balance {
                settings.balance = balance.into();
            }
            if let Some(target) = target_sensitivity {
                settings.threshold_rule = ThresholdRule::Sensitivity { target };
            }
            if let Some(engine) = engine {
                settings.engine = engine.into();
            }
            train(&data_dir, &out, &settings, resume)
        }
        Command::Data(args) => data_command::run(args),
        Command::Card { model } => {
            let bundle = Bundle::load_or_builtin(model.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&bundle.card)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `pneumo predict`: every readable image gets an answer; unreadable ones are reported and make
/// the exit code non-zero.
fn predict(paths: &[PathBuf], model: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let bundle = Bundle::load_or_builtin(model)?;
    let classifier = Classifier::new(&bundle)?;
    let files = collect_inputs(paths)?;
    if files.is_empty() {
        bail!("no image files found in the given paths");
    }

    // The image column is as wide as the longest path, so the table stays aligned.
    let width = files
        .iter()
        .map(|f| f.display().to_string().len())
        .max()
        .unwrap_or(5);
    if !json {
        println!(
            "{:<width$}  {:<10} {:>11} {:>9}  note",
            "image", "label", "probability", "threshold"
        );
    }
    let mut failures = 0;
    for result in classifier.predict_files(&files) {
        match result {
            Ok(p) if json => println!("{}", serde_json::to_string(&p)?),
            Ok(p) => {
                let note = if p.uncertain { "uncertain: refer" } else { "" };
                let line = format!(
                    "{:<width$}  {:<10} {:>11.4} {:>9.4}  {note}",
                    p.path, p.label, p.probability, p.threshold
                );
                println!("{}", line.trim_end());
            }
            Err(e) => {
                failures += 1;
                eprintln!("error: {e}");
            }
        }
    }

    if failures > 0 {
        eprintln!(
            "{failures} of {} images could not be classified",
            files.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pneumo evaluate`: the frozen bundle, once over the chosen images, at its stored threshold,
/// with bootstrap intervals; optionally written up as a report with plots.
fn evaluate(
    data_dir: &Path,
    model: Option<&Path>,
    split: SplitChoice,
    json: bool,
    report: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let bundle = Bundle::load_or_builtin(model)?;
    let classifier = Classifier::new(&bundle)?;
    let images = evaluation::images_of(data_dir, split, &classifier)?;
    let scored = evaluation::score(&classifier, &images)?;
    let evaluated = evaluation::evaluate(&bundle.card, &scored, split, BootstrapConfig::default())?;

    if let Some(dir) = report {
        let written = evaluation::report::write_report(dir, &evaluated, &bundle.card)
            .with_context(|| format!("writing the report into {}", dir.display()))?;
        tracing::info!(
            report = %dir.join(evaluation::report::REPORT_FILE).display(),
            files = written.len(),
            "report written"
        );
    }

    if json {
        println!("{}", serde_json::to_string(&evaluated.summary)?);
    } else {
        print!("{}", evaluated.summary.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints metrics as a small table with the confusion matrix.
fn print_metrics(m: &Metrics, model_id: &str) {
    println!("model       {model_id}");
    println!("images      {}", m.n);
    println!("threshold   {:.4}", m.threshold);
    println!("AUC         {:.4}", m.auc);
    println!("accuracy    {:.4}", m.accuracy);
    println!("sensitivity {:.4}", m.sensitivity);
    println!("specificity {:.4}", m.specificity);
    println!("precision   {:.4}", m.precision);
    println!("F1          {:.4}", m.f1);
    println!();
    println!("                 called NORMAL  called PNEUMONIA");
    println!("true NORMAL      {:>13}  {:>16}", m.tn, m.fp);
    println!("true PNEUMONIA   {:>13}  {:>16}", m.fn_, m.tp);
}

/// `pneumo train`.
fn train(
    data_dir: &Path,
    out: &Path,
    config: &TrainConfig,
    resume: bool,
) -> anyhow::Result<ExitCode> {
    let outcome = training::train(data_dir, out, config, resume)?;
    let card = &outcome.bundle.card;
    println!("bundle      {}", outcome.bundle_dir.display());
    println!("best epoch  {} of {}", card.best_epoch, card.epochs_run);
    println!("temperature {:.3}", card.temperature);
    let band = &card.uncertain_band;
    println!(
        "refer band  ({:.4}, {:.4}): {:.1}% of validation, accuracy outside {:.4}",
        band.low,
        band.high,
        100.0 * band.validation_share,
        band.validation_accuracy_outside
    );
    if let Some(stressed) = &card.stressed_validation {
        println!(
            "perturbed   {} copies of validation: AUC {:.4}, sensitivity {:.4}, specificity {:.4}",
            card.training.threshold_stress_copies,
            stressed.auc,
            stressed.sensitivity,
            stressed.specificity
        );
    }
    print_metrics(&card.validation, &card.model_id);
    Ok(ExitCode::SUCCESS)
}
