/*
 * Copyright (c) 2023.
 *
 * This software is free software;
 *
 * You can redistribute it or modify it under terms of the MIT, Apache License or Zlib license
 */

//! Platform independent IDCT algorithm
//!
//! Not as fast as AVX one.

#[inline(always)]
fn wa(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

#[inline(always)]
fn ws(a: i32, b: i32) -> i32 {
    a.wrapping_sub(b)
}

#[inline(always)]
fn wm(a: i32, b: i32) -> i32 {
    a.wrapping_mul(b)
}

#[inline]
pub fn idct_int_1x1(in_vector: &mut [i32; 64], mut out_vector: &mut [i16], stride: usize) {
    let coeff = ((wa(wa(in_vector[0], 4), 1024) >> 3).clamp(0, 255)) as i16;

    out_vector[..8].fill(coeff);
    for _ in 0..7 {
        out_vector = &mut out_vector[stride..];
        out_vector[..8].fill(coeff);

    }
}

// pathfed: the inverse DCT is libjpeg's accurate integer method (`jidctint.c`, JDCT_ISLOW, the
// default of libjpeg-turbo and so of OpenSlide and Pillow) instead of stb_image's, whose
// different constants and rounding put samples a level or two from libjpeg-turbo's.

/// `FIX(x)` of `jidctint.c`: x in 13-bit fixed point.
pub(crate) const FIX_0_298631336: i32 = 2446;
pub(crate) const FIX_0_390180644: i32 = 3196;
pub(crate) const FIX_0_541196100: i32 = 4433;
pub(crate) const FIX_0_765366865: i32 = 6270;
pub(crate) const FIX_0_899976223: i32 = 7373;
pub(crate) const FIX_1_175875602: i32 = 9633;
pub(crate) const FIX_1_501321110: i32 = 12299;
pub(crate) const FIX_1_847759065: i32 = 15137;
pub(crate) const FIX_1_961570560: i32 = 16069;
pub(crate) const FIX_2_053119869: i32 = 16819;
pub(crate) const FIX_2_562915447: i32 = 20995;
pub(crate) const FIX_3_072711026: i32 = 25172;
/// `CONST_BITS` and `PASS1_BITS` of `jidctint.c`.
pub(crate) const CONST_BITS: i32 = 13;
pub(crate) const PASS1_BITS: i32 = 2;

/// One 8-point inverse DCT of `jidctint.c` (either pass), descaled by `shift` with rounding.
#[inline(always)]
fn islow_1d(x: [i32; 8], shift: i32) -> [i32; 8] {
    let round = 1 << (shift - 1);
    // Even part.
    let z1 = wm(wa(x[2], x[6]), FIX_0_541196100);
    let tmp2 = wa(z1, wm(x[6], -FIX_1_847759065));
    let tmp3 = wa(z1, wm(x[2], FIX_0_765366865));
    let tmp0 = wa(x[0], x[4]) << CONST_BITS;
    let tmp1 = ws(x[0], x[4]) << CONST_BITS;
    let tmp10 = wa(tmp0, tmp3);
    let tmp13 = ws(tmp0, tmp3);
    let tmp11 = wa(tmp1, tmp2);
    let tmp12 = ws(tmp1, tmp2);
    // Odd part.
    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let z1 = wa(t0, t3);
    let z2 = wa(t1, t2);
    let z3 = wa(t0, t2);
    let z4 = wa(t1, t3);
    let z5 = wm(wa(z3, z4), FIX_1_175875602);
    let t0 = wm(t0, FIX_0_298631336);
    let t1 = wm(t1, FIX_2_053119869);
    let t2 = wm(t2, FIX_3_072711026);
    let t3 = wm(t3, FIX_1_501321110);
    let z1 = wm(z1, -FIX_0_899976223);
    let z2 = wm(z2, -FIX_2_562915447);
    let z3 = wa(wm(z3, -FIX_1_961570560), z5);
    let z4 = wa(wm(z4, -FIX_0_390180644), z5);
    let t0 = wa(t0, wa(z1, z3));
    let t1 = wa(t1, wa(z2, z4));
    let t2 = wa(t2, wa(z2, z3));
    let t3 = wa(t3, wa(z1, z4));
    let d = |v: i32| wa(v, round) >> shift;
    [
        d(wa(tmp10, t3)),
        d(wa(tmp11, t2)),
        d(wa(tmp12, t1)),
        d(wa(tmp13, t0)),
        d(ws(tmp13, t0)),
        d(ws(tmp12, t1)),
        d(ws(tmp11, t2)),
        d(ws(tmp10, t3)),
    ]
}

/// The accurate integer inverse DCT of libjpeg (`jpeg_idct_islow`) on dequantised coefficients
/// in natural order; writes 8 rows of level-shifted, clamped samples `stride` apart. Leaves
/// `in_vector` as it was.
#[allow(clippy::cast_possible_truncation)]
pub fn idct_int(in_vector: &mut [i32; 64], out_vector: &mut [i16], stride: usize) {
    let mut workspace = [0i32; 64];
    // Pass 1: columns, kept at PASS1_BITS of extra precision.
    for col in 0..8 {
        let column = core::array::from_fn(|row| in_vector[row * 8 + col]);
        for (row, v) in islow_1d(column, CONST_BITS - PASS1_BITS).into_iter().enumerate() {
            workspace[row * 8 + col] = v;
        }
    }
    // Pass 2: rows, descaled by the pass-1 precision and the 8 of the 2-D transform.
    for (row, ws_row) in workspace.chunks_exact(8).enumerate() {
        let values = islow_1d(ws_row.try_into().unwrap(), CONST_BITS + PASS1_BITS + 3);
        // to prevent some bad images from crashing
        let mut tmp = [0; 8];
        let out: &mut [i16] = out_vector
            .get_mut(row * stride..row * stride + 8)
            .unwrap_or(&mut tmp);
        for (o, v) in out.iter_mut().zip(values) {
            *o = clamp(wa(v, 128));
        }
    }
}

/// Clamp values between 0 and 255
#[inline]
#[allow(clippy::cast_possible_truncation)]
fn clamp(a: i32) -> i16 {
    a.clamp(0, 255) as i16
}

/// IDCT assuming only the upper 4x4 is filled.
///
/// pathfed: the same accurate transform as [`idct_int`], so a block's samples do not depend on
/// how many of its coefficients were coded. `in_vector` is left unchanged (its zeros included).
pub fn idct4x4(in_vector: &mut [i32; 64], out_vector: &mut [i16], stride: usize) {
    idct_int(in_vector, out_vector, stride);
}
