//! `pneumo data fetch | audit | split`: getting a dataset, checking it, and writing down the
//! train/validation assignment a training run would use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use pneumo::audit::{self, AuditConfig};
use pneumo::data;
use pneumo::fetch::{self, Remote};
use pneumo::training::{self, TrainConfig};

/// Arguments of `pneumo data`.
#[derive(Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

/// The `pneumo data` subcommands.
#[derive(Subcommand)]
enum DataCommand {
    /// Download a dataset from its official home, verify its checksum and unpack it into
    /// DEST/{train,val,test}/{NORMAL,PNEUMONIA}. An interrupted download resumes.
    Fetch {
        /// Which dataset: the original radiographs of Kermany et al. (Mendeley Data), or
        /// PneumoniaMNIST (MedMNIST, Zenodo).
        #[arg(long, value_enum, default_value = "kermany")]
        source: SourceArg,
        /// PneumoniaMNIST only: image side in pixels (28, 64, 128 or 224).
        #[arg(long)]
        size: Option<u32>,
        /// Dataset folder to create [default: data/chest_xray or data/pneumoniamnist-SIZE].
        #[arg(long)]
        dest: Option<PathBuf>,
        /// Folder for the downloaded archive, kept after unpacking [default: DEST's parent].
        #[arg(long)]
        archive_dir: Option<PathBuf>,
        /// Base address replacing the official one (a mirror, or a local test server).
        /// Also read from PNEUMO_FETCH_BASE_URL.
        #[arg(long)]
        base_url: Option<String>,
    },
    /// Count images, classes and children per split; flag identifiers shared between splits,
    /// exact and near-duplicate images, odd sizes and modes, and unreadable files.
    Audit {
        /// Dataset root holding train/, val/ and/or test/.
        data_dir: PathBuf,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Largest Hamming distance (of 64 bits) between perceptual hashes counted as a
        /// near-duplicate.
        #[arg(long, default_value_t = AuditConfig::default().max_distance)]
        max_distance: u32,
    },
    /// Write the child-grouped train/validation assignment that `pneumo train` would use, as a
    /// TSV list (side, child, image as split/CLASS/file).
    Split {
        /// Dataset root holding train/ (and optionally val/, which joins validation).
        data_dir: PathBuf,
        /// The TSV file to write.
        #[arg(long)]
        out: PathBuf,
        /// A training config JSON (e.g. a run's config.json): its seed and validation fraction
        /// are used, so the split of that run is reproduced.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override: the seed of the split.
        #[arg(long)]
        seed: Option<u64>,
        /// Override: share of each class's training images held out for validation.
        #[arg(long)]
        validation_fraction: Option<f64>,
    },
}

/// Command-line names of the fetchable sources.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceArg {
    /// Kermany et al. 2018, ChestXRay2017.zip from Mendeley Data (about 1.2 GB).
    Kermany,
    /// PneumoniaMNIST from MedMNIST v2 / MedMNIST+ on Zenodo.
    Pneumoniamnist,
}

/// Runs a `pneumo data` subcommand.
pub fn run(args: DataArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DataCommand::Fetch {
            source,
            size,
            dest,
            archive_dir,
            base_url,
        } => {
            let base_url = base_url.or_else(|| std::env::var(fetch::BASE_URL_ENV).ok());
            let remote = remote_for(source, size, base_url.as_deref())?;
            fetch_dataset(&remote, dest, archive_dir)
        }
        DataCommand::Audit {
            data_dir,
            json,
            max_distance,
        } => audit_dataset(&data_dir, json, max_distance),
        DataCommand::Split {
            data_dir,
            out,
            config,
            seed,
            validation_fraction,
        } => {
            let mut settings = match config {
                Some(path) => read_config(&path)?,
                None => TrainConfig::default(),
            };
            if let Some(seed) = seed {
                settings.seed = seed;
            }
            if let Some(fraction) = validation_fraction {
                settings.validation_fraction = fraction;
            }
            write_split(&data_dir, &out, &settings)
        }
    }
}

/// The file to download for a source and size.
fn remote_for(
    source: SourceArg,
    size: Option<u32>,
    base_url: Option<&str>,
) -> anyhow::Result<Remote> {
    match source {
        SourceArg::Kermany => {
            if size.is_some() {
                bail!("--size applies to --source pneumoniamnist only");
            }
            Ok(Remote::kermany(base_url))
        }
        SourceArg::Pneumoniamnist => Ok(Remote::pneumoniamnist(size.unwrap_or(28), base_url)?),
    }
}

/// `pneumo data fetch`.
fn fetch_dataset(
    remote: &Remote,
    dest: Option<PathBuf>,
    archive_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let dest = dest.unwrap_or_else(|| {
        let name = match remote.source.as_str() {
            "kermany" => "chest_xray".to_string(),
            other => other.to_string(),
        };
        Path::new("data").join(name)
    });
    let archive_dir = archive_dir.unwrap_or_else(|| {
        dest.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    });

    let report = fetch::fetch(remote, &dest, &archive_dir)?;

    println!("source    {}", report.source);
    println!("from      {}", report.url);
    println!(
        "archive   {} ({} bytes; kept, delete it to save the space)",
        report.archive.display(),
        report.archive_bytes
    );
    println!("sha256    {}", report.sha256);
    println!(
        "verified  {} {}{}",
        report.verified_against.algorithm(),
        report.verified_against.hex(),
        if report.downloaded {
            ""
        } else {
            " (archive was already here)"
        }
    );
    println!("dataset   {}", report.dest.display());
    for (split, normal, pneumonia) in &report.images {
        println!("  {split:<6} NORMAL {normal:>5}  PNEUMONIA {pneumonia:>5}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `pneumo data audit`.
fn audit_dataset(data_dir: &Path, json: bool, max_distance: u32) -> anyhow::Result<ExitCode> {
    let report = audit::audit(data_dir, &AuditConfig { max_distance })?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render_table());
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a training config JSON; fields left out keep their defaults.
fn read_config(path: &Path) -> anyhow::Result<TrainConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a training config", path.display()))
}

/// `pneumo data split`: the same grouping, fraction and seed as `pneumo train`, written with the
/// same writer as a run's `split.tsv`.
fn write_split(data_dir: &Path, out: &Path, settings: &TrainConfig) -> anyhow::Result<ExitCode> {
    settings.check()?;
    data::check_root(data_dir)?;
    let official_train = data::discover_split(data_dir, "train")?;
    let official_val = data::discover_split(data_dir, "val")?;
    if official_train.is_empty() {
        bail!("{}: train/ holds no images", data_dir.display());
    }

    let split = data::split_by_child(
        &official_train,
        &official_val,
        settings.validation_fraction,
        settings.seed,
    )?;
    training::write_split_list(out, data_dir, &split.train, &split.validation)?;

    println!(
        "wrote {} (seed {}, validation fraction {})",
        out.display(),
        settings.seed,
        settings.validation_fraction
    );
    for (side, samples) in [("train", &split.train), ("validation", &split.validation)] {
        let (normal, pneumonia) = data::class_counts(samples);
        let children: std::collections::BTreeSet<&str> =
            samples.iter().map(|s| s.child.as_str()).collect();
        println!(
            "  {side:<10} {:>5} images (NORMAL {normal}, PNEUMONIA {pneumonia}), {} children",
            samples.len(),
            children.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dataset of empty files whose names carry children: only names matter to a split.
    fn dataset() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (folder, names) in [
            (
                "train/NORMAL",
                (0..30)
                    .map(|c| format!("IM-{c:04}-0001.jpeg"))
                    .collect::<Vec<_>>(),
            ),
            (
                "train/PNEUMONIA",
                (0..60)
                    .flat_map(|c| {
                        [
                            format!("person{c}_virus_1.jpeg"),
                            format!("person{c}_virus_2.jpeg"),
                        ]
                    })
                    .collect(),
            ),
            ("val/NORMAL", vec!["IM-0500-0001.jpeg".to_string()]),
        ] {
            let path = dir.path().join(folder);
            std::fs::create_dir_all(&path).unwrap();
            for name in names {
                std::fs::write(path.join(name), b"").unwrap();
            }
        }
        dir
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn split_list_is_the_training_split_for_the_same_seed_and_fraction() {
        let data = dataset();
        let out = data.path().join("split.tsv");
        let settings = TrainConfig::default();

        write_split(data.path(), &out, &settings).unwrap();

        let expected = data::split_by_child(
            &data::discover_split(data.path(), "train").unwrap(),
            &data::discover_split(data.path(), "val").unwrap(),
            settings.validation_fraction,
            settings.seed,
        )
        .unwrap();
        let reference = data.path().join("reference.tsv");
        training::write_split_list(
            &reference,
            data.path(),
            &expected.train,
            &expected.validation,
        )
        .unwrap();
        let written = lines(&out);
        assert_eq!(written, lines(&reference));
        assert_eq!(written[0], "side\tchild\timage");
        assert_eq!(written.len(), 1 + 30 + 120 + 1);
        assert!(
            written.contains(&"validation\tval/IM-500\tval/NORMAL/IM-0500-0001.jpeg".to_string())
        );

        // No child on both sides.
        let side_of = |child: &str| -> std::collections::BTreeSet<String> {
            written[1..]
                .iter()
                .filter(|l| l.split('\t').nth(1) == Some(child))
                .map(|l| l.split('\t').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(side_of("train/person3").len(), 1);
    }

    #[test]
    fn split_follows_a_config_file_and_flags_override_it() {
        let data = dataset();
        let config = data.path().join("config.json");
        std::fs::write(&config, r#"{"seed": 99, "validation_fraction": 0.3}"#).unwrap();
        let settings = read_config(&config).unwrap();
        assert_eq!((settings.seed, settings.validation_fraction), (99, 0.3));

        let a = data.path().join("a.tsv");
        let b = data.path().join("b.tsv");
        write_split(data.path(), &a, &settings).unwrap();
        write_split(
            data.path(),
            &b,
            &TrainConfig {
                seed: 100,
                ..settings.clone()
            },
        )
        .unwrap();
        assert_ne!(lines(&a), lines(&b));

        let bad = TrainConfig {
            validation_fraction: 1.5,
            ..settings
        };
        let err = write_split(data.path(), &data.path().join("c.tsv"), &bad).unwrap_err();
        assert!(
            format!("{err:#}").contains("validation_fraction"),
            "{err:#}"
        );
    }

    #[test]
    fn size_is_for_pneumoniamnist_only() {
        assert!(remote_for(SourceArg::Kermany, Some(64), None).is_err());
        let remote = remote_for(SourceArg::Pneumoniamnist, Some(224), None).unwrap();
        assert_eq!(remote.file_name, "pneumoniamnist_224.npz");
        assert!(remote_for(SourceArg::Pneumoniamnist, Some(100), None).is_err());
    }
}
