/*
 * Copyright (c) 2023.
 *
 * This software is free software;
 *
 * You can redistribute it or modify it under terms of the MIT, Apache License or Zlib license
 */

use core::convert::TryInto;

// pathfed: YCbCr → RGB is libjpeg's (`jdcolor.c`, `ycc_rgb_convert`): 16-bit fixed point, R and B
// rounded on their own, G's two products summed before one rounding. zune-jpeg's 14-bit
// coefficients rounded once per channel and put samples a level from libjpeg-turbo's.

/// `FIX(1.40200)` of `jdcolor.c`: Cr's part of R, at 16 bits.
pub(crate) const CR_R: i32 = 91881;
/// `FIX(1.77200)`: Cb's part of B.
pub(crate) const CB_B: i32 = 116130;
/// `-FIX(0.71414)`: Cr's part of G.
pub(crate) const CR_G: i32 = -46802;
/// `-FIX(0.34414)`: Cb's part of G.
pub(crate) const CB_G: i32 = -22554;
/// `SCALEBITS` of `jdcolor.c`.
pub(crate) const SCALE_BITS: i32 = 16;
/// `ONE_HALF`: rounds the fixed-point products.
pub(crate) const ONE_HALF: i32 = 1 << (SCALE_BITS - 1);

/// One pixel as libjpeg converts it, before clamping.
#[inline(always)]
fn ycc_to_rgb(y: i16, cb: i16, cr: i16) -> (i32, i32, i32) {
    let (y, cb, cr) = (i32::from(y), i32::from(cb) - 128, i32::from(cr) - 128);
    let r = y + ((CR_R * cr + ONE_HALF) >> SCALE_BITS);
    let g = y + ((CB_G * cb + CR_G * cr + ONE_HALF) >> SCALE_BITS);
    let b = y + ((CB_B * cb + ONE_HALF) >> SCALE_BITS);
    (r, g, b)
}

/// Limit values to 0 and 255
#[inline]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, dead_code)]
fn clamp(a: i32) -> u8 {
    a.clamp(0, 255) as u8
}

/// YCbCr to RGBA color conversion

/// Convert YCbCr to RGB/BGR
///
/// Converts to RGB if const BGRA is false
///
/// Converts to BGR if const BGRA is true
pub fn ycbcr_to_rgba_inner_16_scalar<const BGRA: bool>(
    y: &[i16; 16], cb: &[i16; 16], cr: &[i16; 16], output: &mut [u8], pos: &mut usize
) {
    let (_, output_position) = output.split_at_mut(*pos);

    // Convert into a slice with 64 elements for Rust to see we won't go out of bounds.
    let opt: &mut [u8; 64] = output_position
        .get_mut(0..64)
        .expect("Slice to small cannot write")
        .try_into()
        .unwrap();
    for ((&y, (cb, cr)), out) in y
        .iter()
        .zip(cb.iter().zip(cr.iter()))
        .zip(opt.chunks_exact_mut(4))
    {
        let (r, g, b) = ycc_to_rgb(y, *cb, *cr);

        if BGRA {
            out[0] = clamp(b);
            out[1] = clamp(g);
            out[2] = clamp(r);
            out[3] = 255;
        } else {
            out[0] = clamp(r);
            out[1] = clamp(g);
            out[2] = clamp(b);
            out[3] = 255;
        }
    }
    *pos += 64;
}

/// Convert YCbCr to RGB/BGR
///
/// Converts to RGB if const BGRA is false
///
/// Converts to BGR if const BGRA is true
pub fn ycbcr_to_rgb_inner_16_scalar<const BGRA: bool>(
    y: &[i16; 16], cb: &[i16; 16], cr: &[i16; 16], output: &mut [u8], pos: &mut usize
) {
    let (_, output_position) = output.split_at_mut(*pos);

    // Convert into a slice with 48 elements
    let opt: &mut [u8; 48] = output_position
        .get_mut(0..48)
        .expect("Slice to small cannot write")
        .try_into()
        .unwrap();

    for ((&y, (cb, cr)), out) in y
        .iter()
        .zip(cb.iter().zip(cr.iter()))
        .zip(opt.chunks_exact_mut(3))
    {
        let (r, g, b) = ycc_to_rgb(y, *cb, *cr);

        if BGRA {
            out[0] = clamp(b);
            out[1] = clamp(g);
            out[2] = clamp(r);
        } else {
            out[0] = clamp(r);
            out[1] = clamp(g);
            out[2] = clamp(b);
        }
    }

    // Increment pos
    *pos += 48;
}

pub fn ycbcr_to_grayscale(y: &[i16], width: usize, padded_width: usize, output: &mut [u8]) {
    for (y_in, out) in y
        .chunks_exact(padded_width)
        .zip(output.chunks_exact_mut(width))
    {
        for (y, out) in y_in.iter().zip(out.iter_mut()) {
            *out = *y as u8;
        }
    }
}
