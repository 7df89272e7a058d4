//! pneumo: train, evaluate and run a classifier that tells pneumonia from normal in pediatric
//! chest X-rays (Kermany et al., 2018).
//!
//! The layers, in the order data flows through them:
//!
//! - [`data`]: find images in the dataset layout, label them, group them by child, split.
//! - [`fetch`]: download a dataset from its official home, verify it, unpack it into the layout.
//! - [`audit`]: counts, children shared between splits, duplicates, sizes and modes of a dataset.
//! - [`preprocess`] and [`augment`]: image file → model input, and training-time perturbations.
//! - [`model`]: the network, backend-free.
//! - [`native`]: a hand-written CPU engine that trains the network several times faster.
//! - [`training`]: the loop, checkpoints, early stopping, the final bundle.
//! - [`metrics`]: AUC and the confusion-matrix figures, threshold choice, calibration.
//! - [`bundle`]: weights plus model card, on disk or compiled in.
//! - [`inference`]: the one path from image files to predictions.
//!
//! ```no_run
//! use pneumo::{bundle::Bundle, inference::Classifier};
//! # fn main() -> pneumo::Result<()> {
//! let bundle = Bundle::builtin()?;
//! let classifier = Classifier::new(&bundle)?;
//! for result in classifier.predict_files(&["xray.jpeg".into()]) {
//!     let prediction = result?;
//!     println!("{} {:.3}", prediction.label, prediction.probability);
//! }
//! # Ok(())
//! # }
//! ```

pub mod audit;
pub mod augment;
pub mod bundle;
pub mod data;
pub mod error;
pub mod evaluation;
pub mod fetch;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod native;
pub mod preprocess;
pub mod training;

pub use error::{Error, Result};
