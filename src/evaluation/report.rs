//! The evaluation report: one self-contained HTML page, the figures as JSON, every plot as SVG
//! and PNG.
//!
//! `report.html` needs nothing outside itself: the plots are inline SVG, the font is a `data:`
//! URI, and there is no script, stylesheet, image or link to fetch, so it opens the same way
//! offline, from a mail attachment or an archive years later.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::plots::{self, FONT_BOLD, FONT_REGULAR, Plot};
use super::{EXTRA_SENSITIVITY_TARGETS, Evaluation, Summary};
use crate::bundle::Card;
use crate::data::write_atomic;
use crate::error::{Error, Result};
use crate::metrics::{Interval, ThresholdRule};

/// File name of the HTML report inside the report folder.
pub const REPORT_FILE: &str = "report.html";

/// File name of the figures as JSON inside the report folder.
pub const METRICS_FILE: &str = "metrics.json";

/// Writes the report of `evaluation` (of the model described by `card`) into `dir`: every
/// plot as `NAME.svg` and `NAME.png`, `metrics.json`, then `report.html`. Returns the paths
/// written, the report last.
pub fn write_report(dir: &Path, evaluation: &Evaluation, card: &Card) -> Result<Vec<PathBuf>> {
    let plots = plots::evaluation_plots(evaluation)?;
    let mut written = Vec::new();
    for plot in &plots {
        written.extend(plot.write(dir)?);
    }

    let json = serde_json::to_vec_pretty(&evaluation.summary).map_err(|e| {
        Error::Metrics(format!(
            "cannot serialise the figures for {METRICS_FILE}: {e}"
        ))
    })?;
    let metrics_path = dir.join(METRICS_FILE);
    write_atomic(&metrics_path, &json)?;
    written.push(metrics_path);

    let report_path = dir.join(REPORT_FILE);
    write_atomic(
        &report_path,
        render_html(evaluation, card, &plots).as_bytes(),
    )?;
    written.push(report_path);
    Ok(written)
}

/// The HTML page for `evaluation`, with `plots` inlined.
pub fn render_html(evaluation: &Evaluation, card: &Card, plots: &[Plot]) -> String {
    let summary = &evaluation.summary;
    let m = &summary.metrics;
    let mut page = String::with_capacity(200_000);

    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>pneumo evaluation: {} on {}</title>\n<style>\n{}</style>\n</head>\n<body>\n",
        escape(&summary.model),
        escape(&summary.split),
        style_sheet()
    );

    let _ = write!(
        page,
        "<h1>Evaluation of {}</h1>\n<p class=\"lead\">{} images from the <b>{}</b> split \
         ({} normal, {} pneumonia), run once through the frozen model and called pneumonia at \
         its stored threshold <b>{:.4}</b>. Report written by pneumo {}.</p>\n\
         <div class=\"caveat\"><p>{}</p><p>{}</p></div>\n",
        escape(&summary.model),
        m.n,
        escape(&summary.split),
        summary.n_normal,
        summary.n_pneumonia,
        m.threshold,
        env!("CARGO_PKG_VERSION"),
        split_caveat(&summary.split),
        GENERAL_CAVEAT
    );

    summary_section(&mut page, summary);
    band_section(&mut page, summary, card);

    page.push_str("<h2>Plots</h2>\n");
    for plot in plots {
        let _ = write!(
            page,
            "<figure id=\"{name}\">\n<h3>{title}</h3>\n{svg}<figcaption>{caption} \
             <span class=\"note\">Files: <code>{name}.svg</code>, <code>{name}.png</code>.\
             </span></figcaption>\n</figure>\n",
            name = plot.name,
            title = escape(&plot.title),
            svg = inline_svg(&plot.svg, &plot.title),
            caption = caption(plot.name, summary),
        );
    }

    operating_points_section(&mut page, summary);
    card_section(&mut page, card);
    definitions_section(&mut page, summary);
    page.push_str("</body>\n</html>\n");
    page
}

/// The page's style, with the regular and bold fonts embedded as `data:` URIs.
fn style_sheet() -> String {
    let regular = base64::engine::general_purpose::STANDARD.encode(FONT_REGULAR);
    let bold = base64::engine::general_purpose::STANDARD.encode(FONT_BOLD);
    format!(
        "@font-face {{ font-family: \"Noto Sans\"; font-weight: 400; \
         src: url(data:font/ttf;base64,{regular}) format(\"truetype\"); }}\n\
         @font-face {{ font-family: \"Noto Sans\"; font-weight: 700; \
         src: url(data:font/ttf;base64,{bold}) format(\"truetype\"); }}\n\
         body {{ font-family: \"Noto Sans\", sans-serif; max-width: 960px; margin: 2em auto; \
         padding: 0 1.2em; color: #1b1b1b; line-height: 1.5; }}\n\
         h1 {{ font-size: 1.7em; margin-bottom: 0.2em; }}\n\
         h2 {{ margin-top: 2em; border-bottom: 2px solid #0072b2; padding-bottom: 0.15em; }}\n\
         h3 {{ margin: 0.3em 0; }}\n\
         table {{ border-collapse: collapse; margin: 0.8em 0; }}\n\
         th, td {{ border-bottom: 1px solid #d8d8d8; padding: 0.3em 0.6em; text-align: right; \
         vertical-align: top; }}\n\
         td {{ white-space: nowrap; }}\n\
         th:first-child, td:first-child {{ text-align: left; }}\n\
         td.text, th.text {{ text-align: left; white-space: normal; }}\n\
         tr.stored {{ background: #eef5fb; font-weight: bold; }}\n\
         figure {{ margin: 1.8em 0; }}\n\
         figure svg {{ max-width: 100%; height: auto; border: 1px solid #e4e4e4; }}\n\
         figcaption {{ max-width: 900px; }}\n\
         .caveat {{ border-left: 5px solid #d55e00; background: #fdf3ec; padding: 0.2em 1em; }}\n\
         .note {{ color: #555; font-size: 0.92em; }}\n\
         code {{ font-size: 0.92em; }}\n"
    )
}

/// An SVG document made fit to sit inside HTML: the namespace declaration (which HTML does not
/// need) is dropped so the page holds no URL at all, and the image is labelled for screen
/// readers.
fn inline_svg(svg: &str, title: &str) -> String {
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
        .replacen(
            "<svg ",
            &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(title)),
            1,
        )
}

/// What the split's figures can and cannot say.
fn split_caveat(split: &str) -> &'static str {
    match split {
        "validation" => {
            "<b>Not an independent test.</b> These are the images of the validation split \
             recorded in the model card. They chose the best epoch, fitted the temperature, set \
             the threshold and sized the refer band, so every figure here is optimistic. This \
             evaluation checks that the bundle reproduces its card; it does not estimate how \
             the model does on new children."
        }
        "val" => {
            "<b>Not an independent test.</b> These are the official <code>val/</code> images, \
             which training adds to its validation split (model selection, temperature, \
             threshold, refer band), so the figures are optimistic; with so few images the \
             intervals are also wide."
        }
        "train" => {
            "<b>Not a test at all.</b> These are the official <code>train/</code> images, most \
             of which the model learned from (the rest formed its validation split). The \
             figures describe how well it fits what it has seen, nothing about new children."
        }
        _ => {
            "These are the official <code>test/</code> images, which played no part in \
             training, model selection, calibration, the threshold or the refer band. They stay \
             an honest estimate only if they are evaluated once: changing the model after \
             looking at them turns them into validation figures."
        }
    }
}

/// What no split of this dataset can say.
const GENERAL_CAVEAT: &str = "All images come from one hospital's pediatric chest X-rays \
    (Kermany et al., 2018). Nothing here tells how the model does on other hospitals, \
    scanners, ages or populations, and the model is not a medical device: its answers support \
    a reader, they do not replace one.";

/// The headline table.
fn summary_section(page: &mut String, s: &Summary) {
    let m = &s.metrics;
    page.push_str(
        "<h2>Summary</h2>\n<table>\n<tr><th>Figure</th><th>Estimate</th><th>95% CI</th>\
         <th class=\"text\">What it says</th></tr>\n",
    );
    let rows: [(&str, f64, Option<Interval>, &str); 11] = [
        (
            "AUC",
            m.auc,
            Some(s.auc_ci),
            "chance that a pneumonia image scores above a normal one",
        ),
        (
            "AUPRC (average precision)",
            s.auprc,
            Some(s.auprc_ci),
            "precision averaged over recall; a random ranking scores the prevalence",
        ),
        (
            "Accuracy",
            m.accuracy,
            Some(s.accuracy_ci),
            "share of images called right",
        ),
        (
            "Sensitivity",
            m.sensitivity,
            Some(s.sensitivity_ci),
            "share of pneumonia called pneumonia",
        ),
        (
            "Specificity",
            m.specificity,
            Some(s.specificity_ci),
            "share of normal called normal",
        ),
        (
            "Precision (PPV)",
            m.precision,
            Some(s.precision_ci),
            "share of pneumonia calls that are right (depends on prevalence)",
        ),
        (
            "NPV",
            s.npv,
            Some(s.npv_ci),
            "share of normal calls that are right (depends on prevalence)",
        ),
        (
            "F1",
            m.f1,
            Some(s.f1_ci),
            "harmonic mean of precision and sensitivity",
        ),
        (
            "Brier score",
            s.brier,
            Some(s.brier_ci),
            "mean squared error of the probabilities; 0 is perfect",
        ),
        (
            "ECE, after temperature scaling",
            s.ece,
            None,
            "mean gap between predicted and observed frequency; the probabilities served",
        ),
        (
            "ECE, before (temperature 1)",
            s.ece_uncalibrated,
            None,
            "the same for the raw sigmoid of the network's output",
        ),
    ];
    for (name, value, interval, meaning) in rows {
        let interval = match interval {
            Some(i) => format!("{:.3} – {:.3}", i.low, i.high),
            None => "—".into(),
        };
        let _ = writeln!(
            page,
            "<tr><td>{name}</td><td>{value:.3}</td><td>{interval}</td>\
             <td class=\"text\">{meaning}</td></tr>"
        );
    }
    let _ = write!(
        page,
        "</table>\n<p class=\"note\">Confusion counts at threshold {:.4}: {} true positives, {} \
         false negatives, {} true negatives, {} false positives. Intervals: stratified \
         percentile bootstrap, {} resamples, seed {} (see Definitions). The ECE has no interval: \
         it is biased upwards in resamples as in the sample, so a percentile interval would \
         mislead.</p>\n",
        m.threshold, m.tp, m.fn_, m.tn, m.fp, s.bootstrap.resamples, s.bootstrap.seed
    );
}

/// The "uncertain — refer" band on these images against its validation figures.
fn band_section(page: &mut String, s: &Summary, card: &Card) {
    let band = &card.uncertain_band;
    let outside = match s.accuracy_outside_uncertain {
        Some(accuracy) => format!(
            "The model's accuracy on the {} images outside it is <b>{:.3}</b>.",
            s.metrics.n - s.uncertain_count,
            accuracy
        ),
        None => "No image lies outside it.".into(),
    };
    let _ = write!(
        page,
        "<h2>Refer band</h2>\n<p>Probabilities strictly between <b>{:.4}</b> and <b>{:.4}</b> \
         are flagged \"uncertain — refer\": a person should read those images. Here \
         <b>{}</b> images ({:.1}%) fall in the band. {} On validation, when the band was \
         chosen to reach an accuracy of {:.3} outside it, it held {:.1}% of the images and the \
         accuracy outside was {:.3}.</p>\n",
        s.uncertain_band[0],
        s.uncertain_band[1],
        s.uncertain_count,
        100.0 * s.uncertain_share,
        outside,
        band.target_accuracy,
        100.0 * band.validation_share,
        band.validation_accuracy_outside
    );
}

/// How to read each plot.
fn caption(name: &str, s: &Summary) -> String {
    match name {
        "roc" => format!(
            "Each point of the curve is one threshold: how many pneumonia images it catches \
             against how many normal ones it flags. The shaded band is a pointwise 95% \
             bootstrap interval of the true positive rate at false positive rates 0, 0.01, …, \
             1 (not a simultaneous band). The dot is the stored threshold {:.4}.",
            s.metrics.threshold
        ),
        "precision-recall" => format!(
            "Precision depends on prevalence (here {:.3}); the dashed line is what a random \
             ranking would reach. The curve is drawn as the steps whose area is the average \
             precision, with no interpolation between thresholds.",
            s.n_pneumonia as f64 / s.metrics.n as f64
        ),
        "confusion" => "Rows are the truth, columns the model's call at the stored threshold; \
             shading is the share of the true class (the row)."
            .into(),
        "reliability" => format!(
            "Images are binned by predicted probability ({} equal-width bins); each dot is a \
             bin's mean prediction against the share of pneumonia in it. On the diagonal, a \
             probability means what it says. Orange: the raw sigmoid of the network's output; \
             blue: after dividing the logit by the temperature {:.3} fitted on validation. \
             Bins holding few images are noisy; their counts are in <code>metrics.json</code>.",
            s.ece_bins, s.temperature
        ),
        "histogram" => "How well the two classes' probabilities separate. The grey band is \
             the refer band, the red line the stored threshold: normal images right of the \
             line are false positives, pneumonia images left of it false negatives."
            .into(),
        _ => String::new(),
    }
}

/// The figures at the stored threshold and at thresholds reaching fixed sensitivities.
fn operating_points_section(page: &mut String, s: &Summary) {
    page.push_str(
        "<h2>Operating points</h2>\n<table>\n<tr><th>Threshold chosen by</th><th>Threshold</th>\
         <th>Sensitivity</th><th>Specificity</th><th>PPV</th><th>NPV</th>\
         <th>Called pneumonia</th></tr>\n",
    );
    for point in &s.operating_points {
        let c = &point.confusion;
        let _ = writeln!(
            page,
            "<tr{}><td>{}</td><td>{:.4}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td>\
             <td>{:.3}</td><td>{}</td></tr>",
            if point.pre_registered {
                " class=\"stored\""
            } else {
                ""
            },
            escape(&point.rule),
            point.threshold,
            point.sensitivity,
            point.specificity,
            point.ppv,
            point.npv,
            c.tp + c.fp
        );
        if point.pre_registered {
            let ci = |i: Interval| format!("{:.3}–{:.3}", i.low, i.high);
            let _ = writeln!(
                page,
                "<tr><td class=\"note\">its 95% CI</td><td></td><td class=\"note\">{}</td>\
                 <td class=\"note\">{}</td><td class=\"note\">{}</td><td class=\"note\">{}</td>\
                 <td></td></tr>",
                ci(s.sensitivity_ci),
                ci(s.specificity_ci),
                ci(s.precision_ci),
                ci(s.npv_ci)
            );
        }
    }
    let targets: Vec<String> = EXTRA_SENSITIVITY_TARGETS
        .iter()
        .map(|t| format!("{t:.2}"))
        .collect();
    let _ = write!(
        page,
        "</table>\n<p class=\"note\">Only the stored threshold (first row) is pre-registered: \
         it was fixed on validation before these images were seen. The rows for sensitivity \
         {} are chosen on these very images (the highest threshold reaching each target), so \
         they are <b>descriptive only</b>: their sensitivity is met by construction and would \
         be lower on new images. To use one of them, choose it on validation and evaluate it \
         on new images.</p>\n",
        targets.join(", ")
    );
}

/// The model card's key facts.
fn card_section(page: &mut String, card: &Card) {
    let threshold_rule = match card.threshold_rule {
        ThresholdRule::Youden => "maximum of Youden's J (sensitivity + specificity – 1) on \
             validation, centre of the optimal run in logit space"
            .to_string(),
        ThresholdRule::Sensitivity { target } => {
            format!("highest threshold reaching sensitivity {target} on validation")
        }
    };
    let v = &card.validation;
    let band = &card.uncertain_band;
    let [train_normal, train_pneumonia] = card.data.train_counts;
    let [val_normal, val_pneumonia] = card.data.validation_counts;
    let rows = [
        ("Model", format!("<code>{}</code>", escape(&card.model_id))),
        (
            "Trained",
            format!(
                "{} UTC with pneumo {}",
                utc_date(card.created_unix),
                escape(&card.pneumo_version)
            ),
        ),
        (
            "Network",
            format!(
                "{}, widths {:?}, {} parameters, {:.1} MFLOPs per image",
                escape(&card.network.architecture),
                card.network.widths,
                card.parameters,
                card.forward_flops as f64 / 1e6
            ),
        ),
        (
            "Input",
            format!("{0} × {0} pixels, grayscale", card.preprocessing.input_size),
        ),
        (
            "Threshold",
            format!("{:.4}: {threshold_rule}", card.threshold),
        ),
        (
            "Temperature",
            format!(
                "{:.4}, fitted on validation logits by minimising the log loss",
                card.temperature
            ),
        ),
        (
            "Refer band",
            format!(
                "({:.4}, {:.4}), sized for accuracy {:.3} outside it: {:.1}% of validation \
                 inside, accuracy outside {:.3}",
                band.low,
                band.high,
                band.target_accuracy,
                100.0 * band.validation_share,
                band.validation_accuracy_outside
            ),
        ),
        (
            "Validation figures",
            format!(
                "{} images ({val_normal} normal, {val_pneumonia} pneumonia): AUC {:.4}, \
                 accuracy {:.4}, sensitivity {:.4}, specificity {:.4}, precision {:.4}",
                v.n, v.auc, v.accuracy, v.sensitivity, v.specificity, v.precision
            ),
        ),
        (
            "Training data",
            format!(
                "{train_normal} normal, {train_pneumonia} pneumonia images; seed {}; best \
                 epoch {} of {}",
                card.training.seed, card.best_epoch, card.epochs_run
            ),
        ),
        (
            "Training data hash",
            format!(
                "SHA-256 <code>{}</code>",
                escape(&card.data.train_manifest_sha256)
            ),
        ),
        (
            "Validation data hash",
            format!(
                "SHA-256 <code>{}</code>",
                escape(&card.data.validation_manifest_sha256)
            ),
        ),
    ];
    page.push_str("<h2>Model card</h2>\n<table>\n");
    for (name, value) in rows {
        let _ = writeln!(
            page,
            "<tr><td>{name}</td><td class=\"text\">{value}</td></tr>"
        );
    }
    page.push_str("</table>\n");
}

/// How every figure is defined and computed.
fn definitions_section(page: &mut String, s: &Summary) {
    let _ = write!(
        page,
        "<h2>Definitions</h2>\n<ul>\n\
         <li><b>Calls.</b> An image is called pneumonia when its probability (after temperature \
         scaling) is at or above the threshold.</li>\n\
         <li><b>AUC</b>: the Mann–Whitney statistic, ties counted as half.</li>\n\
         <li><b>AUPRC</b> (average precision): Σ<sub>k</sub> (R<sub>k</sub> – \
         R<sub>k–1</sub>) · P<sub>k</sub> over the distinct scores from the highest down, \
         P<sub>k</sub> and R<sub>k</sub> being the precision and recall of calling every score \
         at or above the k-th one pneumonia; tied scores enter together.</li>\n\
         <li><b>Brier score</b>: the mean of (p – y)², y = 1 for pneumonia.</li>\n\
         <li><b>ECE</b>: [0, 1] is cut into {bins} equal-width bins [i/{bins}, (i+1)/{bins}) \
         (the last one includes 1); ECE = Σ<sub>b</sub> (n<sub>b</sub>/N) · |observed \
         share<sub>b</sub> – mean probability<sub>b</sub>|. It depends on the binning and is \
         biased upwards in small samples.</li>\n\
         <li><b>Intervals</b>: stratified percentile bootstrap. Each of {resamples} resamples \
         draws, with replacement, as many pneumonia images from the pneumonia images and as \
         many normal images from the normal images as there are (seeded ChaCha8, seed {seed}), \
         so each resample keeps the prevalence and both classes; every figure is recomputed at \
         the fixed stored threshold; the 95% interval runs from the 2.5th to the 97.5th \
         percentile of the resampled values. Images are resampled as if independent; several \
         images of one child make the intervals somewhat too narrow.</li>\n\
         <li><b>Files</b> beside this page: <code>metrics.json</code> (every figure, the \
         operating points and the reliability bins; the same object as \
         <code>pneumo evaluate --json</code>) and each plot as SVG and PNG.</li>\n</ul>\n",
        bins = s.ece_bins,
        resamples = s.bootstrap.resamples,
        seed = s.bootstrap.seed,
    );
}

/// `text` with the characters HTML gives a meaning to escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time.
fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let minutes = (unix % 86_400) / 60;

    // Civil date from days since 1970-01-01, counting in 400-year eras from 0000-03-01 so
    // that leap days fall at the end of each year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        minutes / 60,
        minutes % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluation::tests::{card, scored};
    use crate::evaluation::{SplitChoice, evaluate};
    use crate::metrics::BootstrapConfig;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// An evaluation of 300 generated logits of a decent, overconfident model.
    fn evaluation() -> Evaluation {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let labels: Vec<bool> = (0..300).map(|i| i % 4 != 0).collect();
        let logits: Vec<f32> = labels
            .iter()
            .map(|&pneumonia| {
                let centre = if pneumonia { 3.0 } else { -3.0 };
                centre + rng.random_range(-5.0..5.0f32)
            })
            .collect();
        evaluate(
            &card(),
            &scored(&logits, &labels, 1.5),
            SplitChoice::Test,
            BootstrapConfig::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_report_is_self_contained_and_embeds_every_plot() {
        let dir = tempfile::tempdir().unwrap();
        let evaluation = evaluation();
        let written = write_report(dir.path(), &evaluation, &card()).unwrap();

        let names = [
            "roc",
            "precision-recall",
            "confusion",
            "reliability",
            "histogram",
        ];
        for name in names {
            let svg = std::fs::read_to_string(dir.path().join(format!("{name}.svg"))).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("<text"),
                "{name}.svg"
            );
            let png = std::fs::read(dir.path().join(format!("{name}.png"))).unwrap();
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}.png");
            let decoded = image::load_from_memory(&png).unwrap();
            assert!(decoded.width() >= 700 && decoded.height() >= 600);
        }
        assert_eq!(written.len(), 2 * names.len() + 2);

        let html = std::fs::read_to_string(dir.path().join(REPORT_FILE)).unwrap();
        for forbidden in [
            "http://",
            "https://",
            "src=\"//",
            "src='//",
            "href=\"//",
            "<link",
            "@import",
            "<script",
            "<img",
            "<iframe",
        ] {
            assert!(!html.contains(forbidden), "the report holds `{forbidden}`");
        }
        for (at, _) in html.match_indices("url(") {
            assert!(
                html[at + 4..].starts_with("data:"),
                "external url( at byte {at}"
            );
        }
        assert_eq!(html.matches("<svg ").count(), names.len());
        for name in names {
            let figure = format!("<figure id=\"{name}\">\n<h3>");
            let at = html
                .find(&figure)
                .unwrap_or_else(|| panic!("no figure {name}"));
            assert!(
                html[at..].contains("<svg role=\"img\""),
                "{name} has no inline SVG"
            );
        }
        assert!(html.contains("font-family: \"Noto Sans\""));
        assert!(html.contains("descriptive only"));
        assert!(html.contains(&card().data.train_manifest_sha256));

        // metrics.json holds the same object as `evaluate --json` prints.
        let file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(METRICS_FILE)).unwrap()).unwrap();
        let printed: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&evaluation.summary).unwrap()).unwrap();
        assert_eq!(file, printed);
    }

    #[test]
    fn the_caveat_follows_the_split() {
        assert!(split_caveat("validation").contains("Not an independent test"));
        assert!(split_caveat("train").contains("Not a test"));
        assert!(split_caveat("test").contains("evaluated once"));
    }

    #[test]
    fn text_is_escaped_and_dates_are_civil() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(utc_date(0), "1970-01-01 00:00");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13");
    }
}
