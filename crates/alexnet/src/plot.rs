//! PNGs of training curves: one run's loss and top-1/top-5 error ([`plot_curves`]), and
//! runs that differ in one factor side by side ([`plot_comparison`]).
//!
//! plotters draws text with `ab_glyph` from an embedded DejaVu Sans Mono (Bitstream Vera
//! licence, `assets/DejaVu-LICENSE.txt`), so no system fonts or freetype are needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::metrics::EpochRecord;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
static REGISTER: Once = Once::new();

/// A coloured line of `(x, y)` points, with its legend entry if it has one.
type Line = (Option<String>, RGBColor, Vec<(f64, f64)>);

fn register_font() {
    REGISTER.call_once(|| {
        // The embedded font is a valid TrueType file; a failure here is a build defect.
        let ok = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok();
        assert!(ok, "embedded font failed to parse");
    });
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::config(format!("plot: {e}"))
}

/// Draws `records` into a 1200x500 PNG at `path`.
pub fn plot_curves(records: &[EpochRecord], path: &Path) -> Result<()> {
    register_font();
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(600);
    let epochs = records.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    let series = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        records.iter().filter_map(|r| f(r).map(|y| (r.epoch as f64, y))).collect()
    };

    let losses: Vec<f64> = records
        .iter()
        .flat_map(|r| std::iter::once(r.train.loss).chain(r.val.map(|v| v.loss)).chain(r.test.map(|t| t.loss)))
        .collect();
    let loss_max = losses.iter().copied().filter(|l| l.is_finite()).fold(0.1f64, f64::max) * 1.05;
    let test_green = RGBColor(0, 140, 0);
    let named = |label: &str, color: RGBColor, points: Vec<(f64, f64)>| (Some(label.to_string()), color, points);
    let loss_lines = [
        named("train", BLUE, series(&|r| Some(r.train.loss))),
        named("validation", RED, series(&|r| r.val.map(|v| v.loss))),
        named("test", test_green, series(&|r| r.test.map(|t| t.loss))),
    ];
    draw_panel(&left, ("loss", "cross-entropy"), ("epoch", epochs), loss_max, loss_lines)?;

    let error_lines = [
        named("train top-1 error", BLUE, series(&|r| Some(100.0 * r.train.top1_error))),
        named("train top-5 error", CYAN, series(&|r| Some(100.0 * r.train.top5_error))),
        named("val top-1 error", RED, series(&|r| r.val.map(|v| 100.0 * v.top1_error))),
        named("val top-5 error", MAGENTA, series(&|r| r.val.map(|v| 100.0 * v.top5_error))),
        named("test top-1 error", test_green, series(&|r| r.test.map(|t| 100.0 * t.top1_error))),
        named("test top-5 error", RGBColor(120, 200, 60), series(&|r| r.test.map(|t| 100.0 * t.top5_error))),
    ];
    draw_panel(&right, ("error (%)", "error %"), ("epoch", epochs), 100.0, error_lines)?;
    root.present().map_err(plot_err)
}

/// One point of a run's curve: after `epoch` epochs and `seconds` of training, its
/// training and held-out top-1 errors (fractions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Epochs trained.
    pub epoch: f64,
    /// Seconds spent training (evaluation excluded).
    pub seconds: f64,
    /// Training top-1 error.
    pub train_error: f64,
    /// Held-out top-1 error, if it was evaluated.
    pub held_out_error: Option<f64>,
}

/// One arm of a comparison: its name and one curve per run (seed).
#[derive(Debug, Clone, PartialEq)]
pub struct ArmCurves {
    /// The legend's name of the arm.
    pub label: String,
    /// The curve of each run.
    pub runs: Vec<Vec<CurvePoint>>,
}

/// Draws the arms of one comparison into a 1200x900 PNG at `path` under `title`: training
/// and held-out top-1 error against epochs (top) and against seconds of training (bottom),
/// one colour per arm and one line per run.
pub fn plot_comparison(title: &str, arms: &[ArmCurves], path: &Path) -> Result<()> {
    const COLOURS: [RGBColor; 6] =
        [BLUE, RED, RGBColor(0, 140, 0), MAGENTA, RGBColor(230, 130, 0), RGBColor(90, 90, 90)];
    register_font();
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(plot_err)?;
    let points = || arms.iter().flat_map(|a| a.runs.iter().flatten());
    let max_of = |f: &dyn Fn(&CurvePoint) -> f64| points().map(f).filter(|v| v.is_finite()).fold(0.0f64, f64::max);
    let epochs = max_of(&|p| p.epoch).max(1.0);
    let seconds = max_of(&|p| p.seconds).max(1.0);
    let error_max = (100.0 * max_of(&|p| p.train_error.max(p.held_out_error.unwrap_or(0.0))) * 1.05).clamp(1.0, 100.0);
    let lines = |x: &dyn Fn(&CurvePoint) -> f64, y: &dyn Fn(&CurvePoint) -> Option<f64>| -> Vec<Line> {
        arms.iter()
            .zip(COLOURS.iter().cycle())
            .flat_map(|(arm, &colour)| {
                arm.runs.iter().enumerate().map(move |(i, run)| {
                    let label = (i == 0).then(|| arm.label.clone());
                    (label, colour, run.iter().filter_map(|p| y(p).map(|v| (x(p), 100.0 * v))).collect())
                })
            })
            .collect()
    };
    let panels = root.split_evenly((2, 2));
    let epoch = |p: &CurvePoint| p.epoch;
    let second = |p: &CurvePoint| p.seconds;
    let train = |p: &CurvePoint| Some(p.train_error);
    let held_out = |p: &CurvePoint| p.held_out_error;
    let charts: [(&str, (&str, f64), Vec<Line>); 4] = [
        ("training top-1 error", ("epoch", epochs), lines(&epoch, &train)),
        ("held-out top-1 error", ("epoch", epochs), lines(&epoch, &held_out)),
        ("training top-1 error", ("seconds of training", seconds), lines(&second, &train)),
        ("held-out top-1 error", ("seconds of training", seconds), lines(&second, &held_out)),
    ];
    for (area, (caption, x_axis, chart_lines)) in panels.iter().zip(charts) {
        draw_panel(area, (caption, "error %"), x_axis, error_max, chart_lines)?;
    }
    root.present().map_err(plot_err)
}

/// One chart, `(caption, y axis)`, over `x_axis` (its name and `0..max`) and values
/// `0..y_max`, with a legend for its named, non-empty lines.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    (caption, y_desc): (&str, &str),
    (x_desc, x_max): (&str, f64),
    y_max: f64,
    lines: impl IntoIterator<Item = Line>,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc(x_desc).y_desc(y_desc).draw().map_err(plot_err)?;
    let mut legend = false;
    for (label, color, points) in lines {
        if points.is_empty() {
            continue;
        }
        let series = chart.draw_series(LineSeries::new(points, color.stroke_width(2))).map_err(plot_err)?;
        if let Some(label) = label {
            legend = true;
            series
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if legend {
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(plot_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::SplitMetrics;

    #[test]
    fn writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let split = |x: f64| SplitMetrics { loss: 2.0 * x, top1_error: x, top5_error: x / 3.0, images: 10 };
        let records: Vec<EpochRecord> = (1..=4)
            .map(|epoch| EpochRecord {
                epoch,
                step: epoch as u64,
                lr: 0.1,
                train: split(1.0 / epoch as f64),
                val: Some(split(1.2 / epoch as f64)),
                test: Some(split(1.3 / epoch as f64)),
                images_per_sec: 1.0,
                seconds: 1.0,
            })
            .collect();
        plot_curves(&records, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn writes_a_comparison_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claim.png");
        let run = |scale: f64| -> Vec<CurvePoint> {
            (1..=3)
                .map(|e| CurvePoint {
                    epoch: e as f64,
                    seconds: 2.0 * e as f64,
                    train_error: scale / e as f64,
                    held_out_error: (e > 1).then_some(scale * 1.1 / e as f64),
                })
                .collect()
        };
        let arms = [
            ArmCurves { label: "relu".into(), runs: vec![run(0.5), run(0.6)] },
            ArmCurves { label: "tanh".into(), runs: vec![run(0.8)] },
        ];
        plot_comparison("relu vs tanh", &arms, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let err = plot_comparison("x", &arms, &dir.path().join("no/such/dir/claim.png")).unwrap_err();
        assert!(err.to_string().contains("plot"), "{err}");
    }
}
