/*
 * Copyright (c) 2023.
 *
 * This software is free software;
 *
 * You can redistribute it or modify it under terms of the MIT, Apache License or Zlib license
 */

#![cfg(any(target_arch = "x86", target_arch = "x86_64"))]
//! AVX2 inverse DCT.
//!
//! pathfed: libjpeg's accurate integer method (`jidctint.c`), the same arithmetic as
//! `scalar::idct_int`, so both give the samples libjpeg-turbo gives. A register holds one row of
//! eight 32-bit values; the column pass works on all eight columns at once, the block is
//! transposed in registers, the row pass works on all eight rows at once, and a second transpose
//! brings the rows back for the stores.

#![cfg(feature = "x86")]

#[cfg(target_arch = "x86")]
use core::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

use super::scalar::{
    idct_int, CONST_BITS, FIX_0_298631336, FIX_0_390180644, FIX_0_541196100, FIX_0_765366865,
    FIX_0_899976223, FIX_1_175875602, FIX_1_501321110, FIX_1_847759065, FIX_1_961570560,
    FIX_2_053119869, FIX_2_562915447, FIX_3_072711026, PASS1_BITS
};

/// One 8-point inverse DCT on eight lanes at once, descaled by `SHIFT` with rounding.
#[inline]
#[target_feature(enable = "avx2")]
#[allow(clippy::similar_names)]
fn islow_1d<const SHIFT: i32>(x: [__m256i; 8]) -> [__m256i; 8] {
    // Macros rather than closures keep every step inside this AVX2 function.
    macro_rules! mul {
        ($a:expr, $c:expr) => {
            _mm256_mullo_epi32($a, _mm256_set1_epi32($c))
        };
    }
    macro_rules! add {
        ($a:expr, $b:expr) => {
            _mm256_add_epi32($a, $b)
        };
    }
    macro_rules! sub {
        ($a:expr, $b:expr) => {
            _mm256_sub_epi32($a, $b)
        };
    }

    // Even part.
    let z1 = mul!(add!(x[2], x[6]), FIX_0_541196100);
    let tmp2 = add!(z1, mul!(x[6], -FIX_1_847759065));
    let tmp3 = add!(z1, mul!(x[2], FIX_0_765366865));
    let tmp0 = _mm256_slli_epi32::<CONST_BITS>(add!(x[0], x[4]));
    let tmp1 = _mm256_slli_epi32::<CONST_BITS>(sub!(x[0], x[4]));
    let tmp10 = add!(tmp0, tmp3);
    let tmp13 = sub!(tmp0, tmp3);
    let tmp11 = add!(tmp1, tmp2);
    let tmp12 = sub!(tmp1, tmp2);

    // Odd part.
    let (t0, t1, t2, t3) = (x[7], x[5], x[3], x[1]);
    let z1 = add!(t0, t3);
    let z2 = add!(t1, t2);
    let z3 = add!(t0, t2);
    let z4 = add!(t1, t3);
    let z5 = mul!(add!(z3, z4), FIX_1_175875602);
    let t0 = mul!(t0, FIX_0_298631336);
    let t1 = mul!(t1, FIX_2_053119869);
    let t2 = mul!(t2, FIX_3_072711026);
    let t3 = mul!(t3, FIX_1_501321110);
    let z1 = mul!(z1, -FIX_0_899976223);
    let z2 = mul!(z2, -FIX_2_562915447);
    let z3 = add!(mul!(z3, -FIX_1_961570560), z5);
    let z4 = add!(mul!(z4, -FIX_0_390180644), z5);
    let t0 = add!(t0, add!(z1, z3));
    let t1 = add!(t1, add!(z2, z4));
    let t2 = add!(t2, add!(z2, z3));
    let t3 = add!(t3, add!(z1, z4));

    let round = _mm256_set1_epi32(1 << (SHIFT - 1));
    macro_rules! descale {
        ($v:expr) => {
            _mm256_srai_epi32::<SHIFT>(add!($v, round))
        };
    }
    [
        descale!(add!(tmp10, t3)),
        descale!(add!(tmp11, t2)),
        descale!(add!(tmp12, t1)),
        descale!(add!(tmp13, t0)),
        descale!(sub!(tmp13, t0)),
        descale!(sub!(tmp12, t1)),
        descale!(sub!(tmp11, t2)),
        descale!(sub!(tmp10, t3)),
    ]
}

/// Transposes an 8×8 block of 32-bit values held one row per register.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8x8(r: [__m256i; 8]) -> [__m256i; 8] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    [
        _mm256_permute2x128_si256::<0x20>(u0, u4),
        _mm256_permute2x128_si256::<0x20>(u1, u5),
        _mm256_permute2x128_si256::<0x20>(u2, u6),
        _mm256_permute2x128_si256::<0x20>(u3, u7),
        _mm256_permute2x128_si256::<0x31>(u0, u4),
        _mm256_permute2x128_si256::<0x31>(u1, u5),
        _mm256_permute2x128_si256::<0x31>(u2, u6),
        _mm256_permute2x128_si256::<0x31>(u3, u7),
    ]
}

/// The accurate integer inverse DCT (see `scalar::idct_int`, whose output this equals).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn idct_avx2(in_vector: &mut [i32; 64], out_vector: &mut [i16], stride: usize) {
    // A truncated output (a corrupt image's last blocks) takes the scalar path, which skips
    // rows that do not fit.
    if stride < 8 || out_vector.len() < 7 * stride + 8 {
        return idct_int(in_vector, out_vector, stride);
    }
    let mut rows = [_mm256_setzero_si256(); 8];
    for (row, register) in rows.iter_mut().enumerate() {
        // SAFETY: `in_vector` holds 64 values, so row `row` has 8 in bounds.
        *register = unsafe { _mm256_loadu_si256(in_vector.as_ptr().add(row * 8).cast()) };
    }
    let columns_done = islow_1d::<{ CONST_BITS - PASS1_BITS }>(rows);
    let rows_done = islow_1d::<{ CONST_BITS + PASS1_BITS + 3 }>(transpose8x8(columns_done));
    let out = transpose8x8(rows_done);

    let center = _mm256_set1_epi32(128);
    let (lo, hi) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
    macro_rules! clamp {
        ($v:expr) => {
            _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32($v, center), lo), hi)
        };
    }
    for pair in 0..4 {
        // Two rows of 32-bit samples become one register of 16-bit ones, in order.
        let packed = _mm256_packs_epi32(clamp!(out[2 * pair]), clamp!(out[2 * pair + 1]));
        let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
        let first = 2 * pair * stride;
        // SAFETY: the length check above keeps `first + stride + 8` within `out_vector`.
        unsafe {
            _mm_storeu_si128(
                out_vector.as_mut_ptr().add(first).cast(),
                _mm256_castsi256_si128(ordered)
            );
            _mm_storeu_si128(
                out_vector.as_mut_ptr().add(first + stride).cast(),
                _mm256_extracti128_si256::<1>(ordered)
            );
        }
    }
}

/// The same transform for blocks whose coefficients lie in the top-left 4×4; `in_vector` is
/// left unchanged, so its other coefficients stay zero.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn idct_avx2_4x4(in_vector: &mut [i32; 64], out_vector: &mut [i16], stride: usize) {
    // SAFETY: the caller upholds this function's own contract.
    unsafe { idct_avx2(in_vector, out_vector, stride) }
}
