//! Plots of an evaluation and of a training run, each as SVG and PNG.
//!
//! A figure is drawn by one function for both of plotters' backends: the SVG backend for the
//! `.svg` file and the HTML report, the bitmap backend for the `.png`. Text is set in Noto Sans
//! ([`FONT_REGULAR`], compiled into the binary and registered with plotters), so the PNGs have
//! legible text on a machine with no fonts installed; the SVGs name the same family with a
//! generic `sans-serif` fallback. Colours are the Okabe–Ito palette, which stays distinct under
//! the common colour-vision deficiencies.

use std::fmt::Write as _;
use std::io::Cursor;
use std::iter::once;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Evaluation;
use crate::data::write_atomic;
use crate::error::{Error, Result};
use crate::metrics::ReliabilityBin;
use crate::training::{EpochRecord, read_metrics};

/// The font family every plot's text is set in; the SVG files name it as is.
pub const FONT_FAMILY: &str = "Noto Sans, sans-serif";

/// Noto Sans Regular, cut down to Latin-1 and a few symbols (see `assets/fonts/README.md`).
pub static FONT_REGULAR: &[u8] = include_bytes!("../../assets/fonts/NotoSans-Regular-subset.ttf");

/// Noto Sans Bold, the same subset, for titles.
pub static FONT_BOLD: &[u8] = include_bytes!("../../assets/fonts/NotoSans-Bold-subset.ttf");

/// Okabe–Ito colours.
mod colour {
    use plotters::style::RGBColor;

    /// Blue: the model's curve, calibrated probabilities, the normal class.
    pub const BLUE: RGBColor = RGBColor(0, 114, 178);
    /// Orange: the pneumonia class, the uncalibrated probabilities.
    pub const ORANGE: RGBColor = RGBColor(230, 159, 0);
    /// Vermillion: the threshold and the operating point.
    pub const VERMILLION: RGBColor = RGBColor(213, 94, 0);
    /// Bluish green: a third series.
    pub const GREEN: RGBColor = RGBColor(0, 158, 115);
    /// Grey: references (chance, perfect calibration, the refer band).
    pub const GREY: RGBColor = RGBColor(110, 110, 110);
}

/// One rendered plot.
#[derive(Debug, Clone)]
pub struct Plot {
    /// File stem (`roc` gives `roc.svg` and `roc.png`) and HTML anchor.
    pub name: &'static str,
    /// Heading for the report.
    pub title: String,
    /// The SVG document.
    pub svg: String,
    /// The PNG file's bytes.
    pub png: Vec<u8>,
}

impl Plot {
    /// Writes `NAME.svg` and `NAME.png` into `dir`, atomically, and returns their paths.
    pub fn write(&self, dir: &Path) -> Result<[PathBuf; 2]> {
        let svg = dir.join(format!("{}.svg", self.name));
        let png = dir.join(format!("{}.png", self.name));
        write_atomic(&svg, self.svg.as_bytes())?;
        write_atomic(&png, &self.png)?;
        Ok([svg, png])
    }
}

/// The plots of an evaluation: ROC, precision–recall, confusion matrix, reliability diagram
/// and the histogram of probabilities, in report order.
pub fn evaluation_plots(evaluation: &Evaluation) -> Result<Vec<Plot>> {
    Ok(vec![
        render("roc", "ROC curve".into(), &RocFigure(evaluation))?,
        render(
            "precision-recall",
            "Precision–recall curve".into(),
            &PrFigure(evaluation),
        )?,
        render(
            "confusion",
            "Confusion matrix at the stored threshold".into(),
            &ConfusionFigure(evaluation),
        )?,
        render(
            "reliability",
            "Reliability diagram".into(),
            &ReliabilityFigure(evaluation),
        )?,
        render(
            "histogram",
            "Predicted probabilities by true class".into(),
            &HistogramFigure(evaluation),
        )?,
    ])
}

/// Draws the per-epoch figures of the run in `run_dir` (its `metrics.jsonl`) into
/// `run_dir/training.svg` and `run_dir/training.png`, marking `best_epoch` if given.
pub fn write_training_plots(run_dir: &Path, best_epoch: Option<usize>) -> Result<[PathBuf; 2]> {
    let epochs = read_metrics(run_dir)?;
    if epochs.is_empty() {
        return Err(Error::Plot {
            name: "training".into(),
            reason: format!("{} holds no epoch", run_dir.join("metrics.jsonl").display()),
        });
    }
    let figure = TrainingFigure {
        epochs: &epochs,
        best_epoch,
    };
    render("training", "Training curves".into(), &figure)?.write(run_dir)
}

/// Result of drawing on a backend.
type Drawn<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something that can be drawn on any plotters backend.
trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32) {
        (900, 680)
    }

    /// Draws the figure on `root`, already filled white.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB>;
}

/// Registers the compiled-in fonts with plotters, once per process.
fn register_fonts() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    // Plotters falls back to "sans-serif" wherever a style names no family, so that name gets
    // the same font.
    let registered = *REGISTERED.get_or_init(|| {
        [FONT_FAMILY, "sans-serif"].iter().all(|family| {
            register_font(family, FontStyle::Normal, FONT_REGULAR).is_ok()
                && register_font(family, FontStyle::Bold, FONT_BOLD).is_ok()
        })
    });
    if registered {
        Ok(())
    } else {
        Err(Error::Plot {
            name: "fonts".into(),
            reason: "the compiled-in Noto Sans could not be read".into(),
        })
    }
}

/// Draws `figure` as SVG and as PNG.
fn render(name: &'static str, title: String, figure: &impl Figure) -> Result<Plot> {
    register_fonts()?;
    let fail = |reason: String| Error::Plot {
        name: name.into(),
        reason,
    };
    let (width, height) = figure.size();

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        figure.draw(&root).map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }

    let svg = fit_svg_font_sizes(&svg);

    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        figure.draw(&root).map_err(|e| fail(e.to_string()))?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let bitmap = image::RgbImage::from_raw(width, height, pixels)
        .ok_or_else(|| fail("the pixel buffer does not match the plot's size".into()))?;
    let mut png = Vec::new();
    bitmap
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| fail(format!("cannot encode PNG: {e}")))?;

    Ok(Plot {
        name,
        title,
        svg,
        png,
    })
}

/// Height of Noto Sans from ascender to descender, in ems (hhea: 1069 and −293 per 1000 units).
const FONT_HEIGHT_EM: f64 = 1.362;

/// Plotters sizes text by the font's ascender-to-descender height, and writes SVG font sizes as
/// `size / 1.24`, as if every font were 1.24 em high. Noto Sans is [`FONT_HEIGHT_EM`] high, so a
/// browser would set SVG text about 10% wider than plotters laid it out (legends would
/// overflow their boxes). This rescales every `font-size` so the SVG matches the PNG.
fn fit_svg_font_sizes(svg: &str) -> String {
    const ATTRIBUTE: &str = "font-size=\"";
    let mut out = String::with_capacity(svg.len());
    let mut rest = svg;
    while let Some(at) = rest.find(ATTRIBUTE) {
        let (before, after) = rest.split_at(at + ATTRIBUTE.len());
        out.push_str(before);
        let end = after.find('"').unwrap_or(after.len());
        match after[..end].parse::<f64>() {
            Ok(size) => {
                let _ = write!(out, "{:.2}", size * 1.24 / FONT_HEIGHT_EM);
            }
            Err(_) => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The plot font at `size` pixels.
fn font(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT_FAMILY), size, FontStyle::Normal)
}

/// The plot font in bold, for titles.
fn bold(size: f64) -> FontDesc<'static> {
    FontDesc::new(FontFamily::Name(FONT_FAMILY), size, FontStyle::Bold)
}

/// A chart with a title and two real axes.
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Starts a chart on `area` with `title` over `x` × `y`.
fn chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> std::result::Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    ChartBuilder::on(area)
        .caption(title, bold(24.0))
        .margin(18)
        .x_label_area_size(62)
        .y_label_area_size(78)
        .build_cartesian_2d(x, y)
}

/// Draws the grid, tick labels and axis titles.
fn axes<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, x_title: &str, y_title: &str) -> Drawn<DB> {
    axes_with(chart, x_title, y_title, &|v| format!("{v:.1}"))
}

/// [`axes`] with the y tick labels written by `y_format`.
fn axes_with<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    x_title: &str,
    y_title: &str,
    y_format: &dyn Fn(&f64) -> String,
) -> Drawn<DB> {
    chart
        .configure_mesh()
        .x_desc(x_title)
        .y_desc(y_title)
        .axis_desc_style(font(19.0))
        .label_style(font(16.0))
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(y_format)
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
}

/// Draws the legend of `chart` at `position`.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> Drawn<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .margin(14)
        .legend_area_size(34)
        .background_style(WHITE.mix(0.92))
        .border_style(BLACK.mix(0.4))
        .label_font(font(16.0))
        .draw()
}

/// A legend swatch: a short line.
fn line_swatch(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 26, y)], style)
}

/// A legend swatch: a filled box.
fn box_swatch(style: ShapeStyle) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 7), (x + 26, y + 7)], style)
}

/// A legend swatch: a dot.
fn dot_swatch(style: ShapeStyle) -> impl Fn((i32, i32)) -> Circle<(i32, i32), i32> {
    move |(x, y)| Circle::new((x + 13, y), 6, style)
}

/// The ROC curve with its bootstrap band, the chance line and the stored operating point.
struct RocFigure<'a>(&'a Evaluation);

impl Figure for RocFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let summary = &self.0.summary;
        let m = &summary.metrics;
        let title = format!("ROC curve, {} images ({})", m.n, summary.split);
        let mut chart = chart(root, &title, 0.0..1.0, 0.0..1.0)?;
        axes(
            &mut chart,
            "False positive rate (1 - specificity)",
            "True positive rate (sensitivity)",
        )?;

        let band = &self.0.roc_band;
        let mut outline: Vec<(f64, f64)> = band.iter().map(|p| (p.fpr, p.interval.high)).collect();
        outline.extend(band.iter().rev().map(|p| (p.fpr, p.interval.low)));
        let band_style = colour::BLUE.mix(0.18).filled();
        chart
            .draw_series(once(Polygon::new(outline, band_style)))?
            .label("95% bootstrap band (TPR at each FPR)")
            .legend(box_swatch(band_style));

        let chance = colour::GREY.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                9,
                7,
                chance,
            ))?
            .label("chance (AUC 0.5)")
            .legend(line_swatch(chance));

        let curve = colour::BLUE.stroke_width(3);
        let ci = summary.auc_ci;
        chart
            .draw_series(LineSeries::new(
                self.0.roc.iter().map(|p| (p.fpr, p.tpr)),
                curve,
            ))?
            .label(format!(
                "ROC: AUC {:.3} (95% CI {:.3}–{:.3})",
                m.auc, ci.low, ci.high
            ))
            .legend(line_swatch(curve));

        let point = colour::VERMILLION.filled();
        chart
            .draw_series(once(Circle::new(
                (1.0 - m.specificity, m.sensitivity),
                7,
                point,
            )))?
            .label(format!(
                "stored threshold {:.3}: sensitivity {:.3}, specificity {:.3}",
                m.threshold, m.sensitivity, m.specificity
            ))
            .legend(dot_swatch(point));

        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

/// The step-wise precision–recall curve, the prevalence line and the stored operating point.
struct PrFigure<'a>(&'a Evaluation);

impl Figure for PrFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let summary = &self.0.summary;
        let m = &summary.metrics;
        let title = format!("Precision–recall curve, {} images ({})", m.n, summary.split);
        let mut chart = chart(root, &title, 0.0..1.0, 0.0..1.02)?;
        axes(
            &mut chart,
            "Recall (sensitivity)",
            "Precision (positive predictive value)",
        )?;

        let prevalence = summary.n_pneumonia as f64 / m.n as f64;
        let reference = colour::GREY.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, prevalence), (1.0, prevalence)],
                9,
                7,
                reference,
            ))?
            .label(format!("no skill: prevalence {prevalence:.3}"))
            .legend(line_swatch(reference));

        // Each threshold holds its precision over the recall it adds: the steps whose area is
        // the average precision.
        let mut steps = Vec::with_capacity(2 * self.0.pr.len());
        let mut recall_before = 0.0;
        for point in &self.0.pr {
            steps.push((recall_before, point.precision));
            steps.push((point.recall, point.precision));
            recall_before = point.recall;
        }
        let curve = colour::BLUE.stroke_width(3);
        let ci = summary.auprc_ci;
        chart
            .draw_series(LineSeries::new(steps, curve))?
            .label(format!(
                "AUPRC (average precision) {:.3} (95% CI {:.3}–{:.3})",
                summary.auprc, ci.low, ci.high
            ))
            .legend(line_swatch(curve));

        let point = colour::VERMILLION.filled();
        chart
            .draw_series(once(Circle::new((m.sensitivity, m.precision), 7, point)))?
            .label(format!(
                "stored threshold {:.3}: recall {:.3}, precision {:.3}",
                m.threshold, m.sensitivity, m.precision
            ))
            .legend(dot_swatch(point));

        legend(&mut chart, SeriesLabelPosition::LowerLeft)
    }
}

/// The 2 × 2 table of outcomes, shaded by the share of each true class.
struct ConfusionFigure<'a>(&'a Evaluation);

impl Figure for ConfusionFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (760, 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let m = &self.0.summary.metrics;
        let title = format!(
            "Confusion matrix at threshold {:.3}, {} images",
            m.threshold, m.n
        );
        let mut chart = ChartBuilder::on(root)
            .caption(title, bold(24.0))
            .margin(24)
            .x_label_area_size(70)
            .y_label_area_size(130)
            .build_cartesian_2d(0.0..2.0, 0.0..2.0)?;

        // Columns: called NORMAL (0..1), called PNEUMONIA (1..2). Rows: true NORMAL on top
        // (1..2), true PNEUMONIA below (0..1).
        let class_at = |v: &f64| match (*v * 2.0).round() as i64 {
            1 => "NORMAL".to_string(),
            3 => "PNEUMONIA".to_string(),
            _ => String::new(),
        };
        let row_at = |v: &f64| match (*v * 2.0).round() as i64 {
            3 => "NORMAL".to_string(),
            1 => "PNEUMONIA".to_string(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(5)
            .y_labels(5)
            .x_label_formatter(&class_at)
            .y_label_formatter(&row_at)
            .x_desc("Predicted class")
            .y_desc("True class")
            .axis_desc_style(font(19.0))
            .label_style(font(17.0))
            .draw()?;

        let normal = (m.tn + m.fp).max(1) as f64;
        let pneumonia = (m.tp + m.fn_).max(1) as f64;
        let cells = [
            (0.0, 1.0, m.tn, normal, "true negatives", "NORMAL"),
            (1.0, 1.0, m.fp, normal, "false positives", "NORMAL"),
            (0.0, 0.0, m.fn_, pneumonia, "false negatives", "PNEUMONIA"),
            (1.0, 0.0, m.tp, pneumonia, "true positives", "PNEUMONIA"),
        ];
        for (x, y, count, row_total, name, class) in cells {
            let share = count as f64 / row_total;
            let shade = |full: u8| (255.0 - share * (255.0 - full as f64)).round() as u8;
            let fill = RGBColor(shade(0), shade(114), shade(178));
            chart.draw_series(once(Rectangle::new(
                [(x, y), (x + 1.0, y + 1.0)],
                fill.filled(),
            )))?;
            chart.draw_series(once(Rectangle::new(
                [(x, y), (x + 1.0, y + 1.0)],
                WHITE.stroke_width(3),
            )))?;

            let ink = if share > 0.55 { WHITE } else { BLACK };
            let centred = |size: f64| {
                TextStyle::from(font(size))
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center))
            };
            let label = EmptyElement::at((x + 0.5, y + 0.5))
                + Text::new(count.to_string(), (0, -30), centred(40.0))
                + Text::new(name.to_string(), (0, 10), centred(18.0))
                + Text::new(
                    format!("{:.1}% of true {class}", 100.0 * share),
                    (0, 36),
                    centred(16.0),
                );
            chart.draw_series(once(label))?;
        }
        Ok(())
    }
}

/// Observed against predicted frequency per bin, before and after temperature scaling.
struct ReliabilityFigure<'a>(&'a Evaluation);

impl Figure for ReliabilityFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let summary = &self.0.summary;
        let title = format!("Reliability diagram, {} equal-width bins", summary.ece_bins);
        let mut chart = chart(root, &title, 0.0..1.0, 0.0..1.0)?;
        axes(
            &mut chart,
            "Mean predicted probability of pneumonia in the bin",
            "Observed share of pneumonia in the bin",
        )?;

        let diagonal = colour::GREY.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                9,
                7,
                diagonal,
            ))?
            .label("perfect calibration")
            .legend(line_swatch(diagonal));

        let series = [
            (
                &summary.reliability_uncalibrated,
                colour::ORANGE,
                format!(
                    "before scaling (temperature 1): ECE {:.3}",
                    summary.ece_uncalibrated
                ),
            ),
            (
                &summary.reliability,
                colour::BLUE,
                format!(
                    "after scaling (temperature {:.2}): ECE {:.3}",
                    summary.temperature, summary.ece
                ),
            ),
        ];
        for (bins, ink, label) in series {
            let points = bin_points(bins);
            let style = ink.stroke_width(3);
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(label)
                .legend(line_swatch(style));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 5, ink.filled())))?;
        }

        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}

/// `(mean probability, observed share)` of every non-empty bin.
fn bin_points(bins: &[ReliabilityBin]) -> Vec<(f64, f64)> {
    bins.iter()
        .filter_map(|b| Some((b.mean_probability?, b.observed_rate?)))
        .collect()
}

/// Bins of the probability histogram.
const HISTOGRAM_BINS: usize = 50;

/// How the calibrated probabilities of each true class spread, with the threshold and the
/// refer band.
struct HistogramFigure<'a>(&'a Evaluation);

impl Figure for HistogramFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let evaluation = self.0;
        let summary = &evaluation.summary;
        let mut counts = [[0usize; HISTOGRAM_BINS]; 2];
        for (&p, &pneumonia) in evaluation.probabilities.iter().zip(&evaluation.truth) {
            let bin = ((p as f64 * HISTOGRAM_BINS as f64) as usize).min(HISTOGRAM_BINS - 1);
            counts[usize::from(pneumonia)][bin] += 1;
        }
        let highest = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;

        let title = format!(
            "Predicted probabilities by true class, {} images",
            summary.metrics.n
        );
        let mut chart = chart(root, &title, 0.0..1.0, 0.0..highest * 1.08)?;
        axes_with(
            &mut chart,
            "Probability of pneumonia (after temperature scaling), bins of 0.02",
            "Images",
            &|v| {
                if (v - v.round()).abs() < 1e-9 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            },
        )?;

        let [low, high] = summary.uncertain_band;
        let band_style = colour::GREY.mix(0.25).filled();
        chart
            .draw_series(once(Rectangle::new(
                [(low as f64, 0.0), (high as f64, highest * 1.08)],
                band_style,
            )))?
            .label(format!(
                "refer band ({low:.3}, {high:.3}): {} images",
                summary.uncertain_count
            ))
            .legend(box_swatch(band_style));

        let width = 1.0 / HISTOGRAM_BINS as f64;
        for (class, ink, name, n) in [
            (0, colour::BLUE, "NORMAL", summary.n_normal),
            (1, colour::ORANGE, "PNEUMONIA", summary.n_pneumonia),
        ] {
            let style = ink.mix(0.55).filled();
            chart
                .draw_series(
                    counts[class]
                        .iter()
                        .enumerate()
                        .filter(|&(_, &c)| c > 0)
                        .map(|(bin, &count)| {
                            let left = bin as f64 * width;
                            Rectangle::new([(left, 0.0), (left + width, count as f64)], style)
                        }),
                )?
                .label(format!("true {name} (n = {n})"))
                .legend(box_swatch(style));
        }

        let threshold = summary.metrics.threshold as f64;
        let line = colour::VERMILLION.stroke_width(3);
        chart
            .draw_series(LineSeries::new(
                vec![(threshold, 0.0), (threshold, highest * 1.08)],
                line,
            ))?
            .label(format!("stored threshold {threshold:.3}"))
            .legend(line_swatch(line));

        legend(&mut chart, SeriesLabelPosition::UpperMiddle)
    }
}

/// Loss, validation AUC and learning rate per epoch, side by side.
struct TrainingFigure<'a> {
    epochs: &'a [EpochRecord],
    best_epoch: Option<usize>,
}

impl Figure for TrainingFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (1500, 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn<DB> {
        let count = match self.epochs.len() {
            1 => "1 epoch".to_string(),
            n => format!("{n} epochs"),
        };
        let title = match self.best_epoch {
            Some(best) => format!("Training run: {count}, best epoch {best}"),
            None => format!("Training run: {count}"),
        };
        let body = root.titled(&title, bold(26.0))?;
        let panels = body.split_evenly((1, 3));

        let loss = [
            (
                "training loss (class-weighted, smoothed labels)",
                colour::BLUE,
                self.epochs.iter().map(|e| e.train_loss).collect::<Vec<_>>(),
            ),
            (
                "validation log loss",
                colour::ORANGE,
                self.epochs.iter().map(|e| e.validation_loss).collect(),
            ),
        ];
        self.panel(&panels[0], "Loss", "Loss", &loss, None, |v| {
            format!("{v:.3}")
        })?;

        let auc = [(
            "validation AUC",
            colour::GREEN,
            self.epochs.iter().map(|e| e.validation_auc).collect(),
        )];
        self.panel(&panels[1], "Validation AUC", "AUC", &auc, Some(1.0), |v| {
            format!("{v:.3}")
        })?;

        let rate = [(
            "learning rate at epoch end",
            colour::VERMILLION,
            self.epochs.iter().map(|e| e.learning_rate).collect(),
        )];
        self.panel(
            &panels[2],
            "Learning rate",
            "Learning rate",
            &rate,
            None,
            |v| format!("{v:.2e}"),
        )
    }
}

impl TrainingFigure<'_> {
    /// One panel: `series` of per-epoch values against the epoch number, the y axis ending at
    /// `ceiling` at most (AUC cannot pass 1).
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        title: &str,
        y_title: &str,
        series: &[(&str, RGBColor, Vec<f64>)],
        ceiling: Option<f64>,
        y_format: impl Fn(&f64) -> String,
    ) -> Drawn<DB> {
        let epochs: Vec<f64> = self.epochs.iter().map(|e| e.epoch as f64).collect();
        let first = epochs.first().copied().unwrap_or(1.0);
        let last = epochs.last().copied().unwrap_or(1.0);
        let values = series.iter().flat_map(|(_, _, v)| v.iter().copied());
        let (low, high) = values
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (low, high) = if low > high { (0.0, 1.0) } else { (low, high) };
        // A flat series (one epoch, a constant rate) gets room of 5% of its value.
        let pad = if high > low {
            (high - low) * 0.1
        } else {
            high.abs() * 0.05
        }
        .max(1e-9);
        let top = match ceiling {
            Some(ceiling) if high <= ceiling => (high + pad).min(ceiling + pad / 4.0),
            _ => high + pad,
        };

        let mut chart = ChartBuilder::on(area)
            .caption(title, bold(20.0))
            .margin(14)
            .x_label_area_size(52)
            .y_label_area_size(82)
            .build_cartesian_2d(first - 0.5..last + 0.5, low - pad..top)?;
        chart
            .configure_mesh()
            .x_desc("Epoch")
            .y_desc(y_title)
            .axis_desc_style(font(17.0))
            .label_style(font(14.0))
            .x_labels(epochs.len().clamp(2, 10))
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{}", v.round())
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&y_format)
            .light_line_style(BLACK.mix(0.04))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;

        if let Some(best) = self.best_epoch {
            let marker = colour::GREY.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(best as f64, low - pad), (best as f64, top)],
                    7,
                    6,
                    marker,
                ))?
                .label(format!("best epoch {best}"))
                .legend(line_swatch(marker));
        }
        for (name, ink, values) in series {
            let points: Vec<(f64, f64)> =
                epochs.iter().copied().zip(values.iter().copied()).collect();
            let style = ink.stroke_width(3);
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(*name)
                .legend(line_swatch(style));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, ink.filled())))?;
        }

        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(10)
            .legend_area_size(28)
            .background_style(WHITE.mix(0.92))
            .border_style(BLACK.mix(0.4))
            .label_font(font(14.0))
            .draw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A big-endian integer of `N` bytes at `at` in `bytes`.
    fn read(bytes: &[u8], at: usize, n: usize) -> i64 {
        bytes[at..at + n]
            .iter()
            .fold(0i64, |value, &b| (value << 8) | i64::from(b))
    }

    /// The offset of table `tag` in a TrueType file.
    fn table(font: &[u8], tag: &[u8; 4]) -> usize {
        let tables = read(font, 4, 2) as usize;
        (0..tables)
            .map(|k| 12 + 16 * k)
            .find(|&record| &font[record..record + 4] == tag)
            .map(|record| read(font, record + 8, 4) as usize)
            .expect("table present")
    }

    #[test]
    fn the_font_height_constant_matches_the_compiled_in_font() {
        for font in [FONT_REGULAR, FONT_BOLD] {
            let units_per_em = read(font, table(font, b"head") + 18, 2) as f64;
            let hhea = table(font, b"hhea");
            let ascender = read(font, hhea + 4, 2) as i16 as f64;
            let descender = read(font, hhea + 6, 2) as i16 as f64;
            let height = (ascender - descender) / units_per_em;
            assert!((height - FONT_HEIGHT_EM).abs() < 1e-3, "{height}");
        }
    }

    #[test]
    fn svg_font_sizes_are_rescaled_and_nothing_else_changes() {
        let svg = r#"<text font-size="12.4" x="3">a</text><text font-size="big">b</text>"#;
        let fitted = fit_svg_font_sizes(svg);
        let expected = format!("{:.2}", 12.4 * 1.24 / FONT_HEIGHT_EM);
        assert_eq!(
            fitted,
            format!(r#"<text font-size="{expected}" x="3">a</text><text font-size="big">b</text>"#)
        );
    }

    #[test]
    fn training_curves_are_drawn_from_metrics_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (1..=4)
            .map(|epoch| {
                serde_json::to_string(&EpochRecord {
                    epoch,
                    train_loss: 0.7 / epoch as f64,
                    validation_loss: 0.6 / epoch as f64 + 0.05,
                    validation_auc: 0.8 + 0.04 * epoch as f64,
                    learning_rate: 2e-3 / epoch as f64,
                    images_per_second: 100.0,
                    seconds: 30.0,
                })
                .unwrap()
            })
            .collect();
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();

        let [svg, png] = write_training_plots(dir.path(), Some(4)).unwrap();
        let svg = std::fs::read_to_string(svg).unwrap();
        for text in ["Validation AUC", "Learning rate", "best epoch 4", "Epoch"] {
            assert!(svg.contains(text), "training.svg lacks `{text}`");
        }
        let png = image::open(png).unwrap();
        assert_eq!((png.width(), png.height()), (1500, 560));

        // A run folder without epochs is an error, not a blank picture.
        let empty = tempfile::tempdir().unwrap();
        assert!(write_training_plots(empty.path(), None).is_err());
        std::fs::write(empty.path().join("metrics.jsonl"), "").unwrap();
        assert!(write_training_plots(empty.path(), None).is_err());
    }
}
