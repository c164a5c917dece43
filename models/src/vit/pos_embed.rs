//! Position embeddings for another input size. timm resamples the stored grid with PyTorch's
//! antialiased bicubic interpolation (`F.interpolate(mode="bicubic", antialias=True)`, the same
//! filter as PIL: Keys' cubic with a = −0.5, widened by the scale when shrinking). Burn's bicubic
//! is the non-antialiased a = −0.75 kind, which would give a model different inputs than its
//! authors', so the weights are computed here and applied on the device as one matrix product.

/// Keys' cubic convolution kernel with a = −0.5.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The `[to, from]` weights that resample one axis of `from` samples to `to`, each row summing
/// to one, as PyTorch's antialiased interpolation computes them (half-pixel centres).
pub fn axis_weights(from: usize, to: usize) -> Vec<Vec<f64>> {
    let scale = from as f64 / to as f64;
    let (support, stretch) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    (0..to)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            // Truncation, as the C++ casts these non-negative values.
            let first = ((center - support + 0.5).max(0.0)) as usize;
            let last = ((center + support + 0.5) as usize).min(from);
            let mut row = vec![0.0; from];
            for (j, w) in row.iter_mut().enumerate().take(last).skip(first) {
                *w = cubic((j as f64 - center + 0.5) * stretch);
            }
            let total: f64 = row.iter().sum();
            if total != 0.0 {
                row.iter_mut().for_each(|w| *w /= total);
            }
            row
        })
        .collect()
}

/// The `[rows·cols, grid·grid]` matrix (row-major, f32) that takes a square `grid × grid` of
/// embeddings to `rows × cols`: the outer product of the two axes' weights.
pub fn resample_matrix(grid: usize, rows: usize, cols: usize) -> Vec<f32> {
    let wy = axis_weights(grid, rows);
    let wx = axis_weights(grid, cols);
    let mut out = Vec::with_capacity(rows * cols * grid * grid);
    for ry in &wy {
        for rx in &wx {
            for y in ry {
                out.extend(rx.iter().map(|x| (y * x) as f32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_to_the_same_size_is_the_identity_and_rows_sum_to_one() {
        let same = axis_weights(5, 5);
        for (i, row) in same.iter().enumerate() {
            for (j, w) in row.iter().enumerate() {
                assert!((w - f64::from(u8::from(i == j))).abs() < 1e-12, "{same:?}");
            }
        }
        for (from, to) in [(4, 6), (6, 3), (16, 14), (14, 37)] {
            for row in axis_weights(from, to) {
                assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            }
        }
        // Halving averages neighbours over a widened kernel: the centre weights are equal.
        let half = axis_weights(4, 2);
        assert!((half[0][0] - half[0][1]).abs() < 1e-12, "{half:?}");
        assert!(
            half[0][3] < 0.0,
            "the widened cubic's negative lobe: {half:?}"
        );
    }
}
