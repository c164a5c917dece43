/*
 * Copyright (c) 2023.
 *
 * This software is free software;
 *
 * You can redistribute it or modify it under terms of the MIT, Apache License or Zlib license
 */

// pathfed: libjpeg-turbo's "fancy" upsampling (`jdsample.c`), rounding where it rounds. zune-jpeg
// added 2 before every shift and upsampled 2×2 chroma as two rounded 1-D passes; libjpeg-turbo
// alternates its biases (1 and 2, or 8 and 7 for 2×2) so that rounding does not drift one way,
// and filters 2×2 chroma in one step from unrounded column sums.

/// The triangle filter along a row: `out[2i] = (3·in[i] + in[i-1] + even) >> shift` and
/// `out[2i+1] = (3·in[i] + in[i+1] + odd) >> shift`, the edge samples standing in for their
/// missing neighbours.
pub(crate) fn triangle_horizontal(input: &[i16], output: &mut [i16], even: i16, odd: i16, shift: u32) {
    assert_eq!(
        input.len() * 2,
        output.len(),
        "Input length is not half the size of the output length"
    );
    assert!(!input.is_empty(), "Too Short of a vector, cannot upsample");
    let last = input.len() - 1;
    for (i, pair) in output.chunks_exact_mut(2).enumerate() {
        let near = 3 * input[i];
        pair[0] = (near + input[i.saturating_sub(1)] + even) >> shift;
        pair[1] = (near + input[(i + 1).min(last)] + odd) >> shift;
    }
}

/// The triangle filter down a column pair: the upper output row leans on the row above
/// (`in_near`), the lower on the row below (`in_far`).
pub(crate) fn triangle_vertical(
    input: &[i16], in_near: &[i16], in_far: &[i16], output: &mut [i16], top: i16, bottom: i16,
    shift: u32
) {
    assert_eq!(input.len() * 2, output.len());
    assert_eq!(in_near.len(), input.len());
    assert_eq!(in_far.len(), input.len());
    let (out_top, out_bottom) = output.split_at_mut(input.len());
    for ((x, near), out) in input.iter().zip(in_near).zip(out_top) {
        *out = (3 * x + near + top) >> shift;
    }
    for ((x, far), out) in input.iter().zip(in_far).zip(out_bottom) {
        *out = (3 * x + far + bottom) >> shift;
    }
}

/// Horizontal 2× upsampling (`h2v1_fancy_upsample`).
pub fn upsample_horizontal(
    input: &[i16], _ref: &[i16], _in_near: &[i16], _scratch: &mut [i16], output: &mut [i16]
) {
    triangle_horizontal(input, output, 1, 2, 2);
}

/// Vertical 2× upsampling (`h1v2_fancy_upsample`).
pub fn upsample_vertical(
    input: &[i16], in_near: &[i16], in_far: &[i16], _scratch_space: &mut [i16], output: &mut [i16]
) {
    triangle_vertical(input, in_near, in_far, output, 1, 2, 2);
}

/// 2×2 upsampling (`h2v2_fancy_upsample`): column sums `3·this + other row`, unrounded, then the
/// horizontal filter with a single rounding by 16.
pub fn upsample_hv(
    input: &[i16], in_near: &[i16], in_far: &[i16], scratch_space: &mut [i16], output: &mut [i16]
) {
    assert_eq!(input.len() * 4, output.len());
    assert!(input.len() * 2 <= scratch_space.len());
    let column_sums = &mut scratch_space[..input.len() * 2];
    triangle_vertical(input, in_near, in_far, column_sums, 0, 0, 0);
    let (sums_top, sums_bottom) = column_sums.split_at(input.len());
    let (out_top, out_bottom) = output.split_at_mut(input.len() * 2);
    triangle_horizontal(sums_top, out_top, 8, 7, 4);
    triangle_horizontal(sums_bottom, out_bottom, 8, 7, 4);
}

pub fn upsample_generic(
    input: &[i16], _in_near: &[i16], _in_far: &[i16], _scratch_space: &mut [i16],
    output: &mut [i16]
) {
    // use nearest sample
    let difference = output.len() / input.len();
    if difference > 0 {
        // nearest neighbour
        for (input, chunk_output) in input.iter().zip(output.chunks_exact_mut(difference)) {
            chunk_output.iter_mut().for_each(|x| *x = *input);
        }
    }
}
