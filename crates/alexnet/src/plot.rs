//! A PNG of the training curves: loss on the left, top-1/top-5 error on the right.
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

/// A labelled, coloured line of `(epoch, value)` points.
type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

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
    let loss_lines = [
        ("train", BLUE, series(&|r| Some(r.train.loss))),
        ("validation", RED, series(&|r| r.val.map(|v| v.loss))),
        ("test", test_green, series(&|r| r.test.map(|t| t.loss))),
    ];
    draw_panel(&left, ("loss", "cross-entropy"), epochs, loss_max, loss_lines)?;

    let error_lines = [
        ("train top-1 error", BLUE, series(&|r| Some(100.0 * r.train.top1_error))),
        ("train top-5 error", CYAN, series(&|r| Some(100.0 * r.train.top5_error))),
        ("val top-1 error", RED, series(&|r| r.val.map(|v| 100.0 * v.top1_error))),
        ("val top-5 error", MAGENTA, series(&|r| r.val.map(|v| 100.0 * v.top5_error))),
        ("test top-1 error", test_green, series(&|r| r.test.map(|t| 100.0 * t.top1_error))),
        ("test top-5 error", RGBColor(120, 200, 60), series(&|r| r.test.map(|t| 100.0 * t.top5_error))),
    ];
    draw_panel(&right, ("error (%)", "error %"), epochs, 100.0, error_lines)?;
    root.present().map_err(plot_err)
}

/// One chart, `(caption, y axis)`, over epochs `0..epochs` and values `0..y_max`, with a legend
/// for its non-empty lines.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    (caption, y_desc): (&str, &str),
    epochs: f64,
    y_max: f64,
    lines: impl IntoIterator<Item = Line>,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..epochs, 0f64..y_max)
        .map_err(plot_err)?;
    chart.configure_mesh().x_desc("epoch").y_desc(y_desc).draw().map_err(plot_err)?;
    for (label, color, points) in lines {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(plot_err)?;
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
}
