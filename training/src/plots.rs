//! The model card's figures as PNG: loss curves per epoch and the test split's ROC curve. The
//! font is bundled, so a plot looks the same on a bare GPU node as on a workstation.

use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{TrainError, TrainResult};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
const FONT: &str = "sans-serif";

/// A line to draw: its legend and points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_err()
        {
            tracing::warn!("the bundled plot font did not load; plots will lack text");
        }
    });
}

fn plot_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Invalid(format!("drawing a plot: {e}"))
}

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `series` as a line chart and returns the PNG.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    x_range: (f64, f64),
    y_range: (f64, f64),
    series: &[Series],
    diagonal: bool,
) -> TrainResult<Vec<u8>> {
    register_font();
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FONT, 13))
            .draw()
            .map_err(plot_error)?;
        if diagonal {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, 0.0), (1.0, 1.0)],
                    RGBColor(180, 180, 180).stroke_width(1),
                ))
                .map_err(plot_error)?;
        }
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(s.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .position(SeriesLabelPosition::LowerRight)
                .draw()
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, rgb)
        .ok_or_else(|| plot_error("the plot buffer has the wrong size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(plot_error)?;
    Ok(png)
}

/// Loss per epoch (train and validation, per seed).
pub fn loss_curves(series: &[Series]) -> TrainResult<Vec<u8>> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let max_epoch = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_loss = points
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.1, f64::max);
    line_chart(
        "Loss per epoch",
        "epoch",
        "cross-entropy",
        (1.0, max_epoch.max(2.0)),
        (0.0, max_loss * 1.05),
        series,
        false,
    )
}

/// ROC curves on the test split, one per seed, with the chance diagonal.
pub fn roc_curves(series: &[Series]) -> TrainResult<Vec<u8>> {
    line_chart(
        "ROC, test split (slide level)",
        "1 − specificity",
        "sensitivity",
        (0.0, 1.0),
        (0.0, 1.0),
        series,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_pngs_with_lines_where_the_data_is() {
        let roc = roc_curves(&[Series {
            label: "seed 1 (AUC 1.00)".into(),
            points: vec![(0.0, 0.0), (0.0, 1.0), (1.0, 1.0)],
        }])
        .expect("roc");
        let image = image::load_from_memory(&roc).expect("png").to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        // The curve climbs the left edge of the plot area: a column of blue pixels there.
        let blue = image.pixels().filter(|p| p.0 == [31, 119, 180]).count();
        assert!(blue > 500, "{blue} curve pixels");
        let loss = loss_curves(&[Series {
            label: "train".into(),
            points: vec![(1.0, 0.7), (2.0, 0.4), (3.0, 0.2)],
        }])
        .expect("loss");
        assert!(image::load_from_memory(&loss).is_ok());
    }
}
