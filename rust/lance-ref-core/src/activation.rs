//! Clamping with its packed gradient mask, and the masked VJP (specs/activation.md#masks), each in
//! one pass over contiguous elements where NumPy makes three (clip, compare, pack; unpack, cast,
//! multiply).
//!
//! [`clamp`] gives relu (`low = 0`), relu6 (`0, 6`) and clamp; the mask holds `[low < x < high]`
//! in C order, 8 elements to a byte, the first in the most significant bit (NumPy's `packbits`).
//! Threads take whole bytes of the mask, so they write disjoint elements.

use crate::context::vectorised;
use crate::out::Out;
use crate::parallel::{for_ranges, threads_for};
use crate::{Context, Float, LanceError};
use std::mem::MaybeUninit;
use std::ops::Range;

/// `ceil(len / 8)`: the bytes of the packed mask of `len` elements.
pub fn mask_len(len: usize) -> usize {
    len.div_ceil(8)
}

fn check_mask_len(got: usize, elements: usize) -> Result<(), LanceError> {
    if got != mask_len(elements) {
        return Err(LanceError::Invalid(format!(
            "mask must have ceil({elements} / 8) = {} bytes, got {got}",
            mask_len(elements)
        )));
    }
    Ok(())
}

/// Runs `work(bytes, elements)` over ranges of whole mask bytes, `bytes = b0..b1` covering the
/// elements `8 b0..min(8 b1, len)`, split over the context's threads.
fn for_mask_bytes(ctx: &Context, len: usize, work: impl Fn(Range<usize>, Range<usize>) + Sync) {
    let threads = threads_for(len, ctx.threads);
    for_ranges(mask_len(len), threads, 1, |start, end| {
        work(start..end, 8 * start..(8 * end).min(len))
    });
}

/// `y = min(max(x, low), high)` with NaN passed through and a missing bound imposing nothing,
/// and, if `mask` is given, the packed mask `[low < x < high]`: `low` where `x < low`, then
/// `high` where that exceeds `high` (so a `-0.0` input stays `-0.0`, and `low > high` gives
/// `high`, as NumPy's `clip` with both bounds).
pub fn clamp<T: Float>(
    ctx: &Context,
    x: &[T],
    low: Option<T>,
    high: Option<T>,
    y: Out<'_, T>,
    mask: Option<Out<'_, u8>>,
) -> Result<(), LanceError> {
    y.check_len(x.len())?;
    if let Some(mask) = &mask {
        check_mask_len(mask.len(), x.len())?;
    }
    // Missing bounds become infinite stand-ins that clamp nothing, and const flags that keep them
    // out of the mask (an infinite x is inside a missing bound, not strictly inside an infinite
    // one); the flags also let the compiler drop the missing comparisons from the loop.
    let bound = |b: Option<T>, missing: f64| b.unwrap_or(T::from_f64(missing));
    let (lo, hi) = (bound(low, f64::NEG_INFINITY), bound(high, f64::INFINITY));
    for_mask_bytes(ctx, x.len(), |bytes, elements| {
        vectorised!(ctx, {
            // SAFETY: this thread's elements and bytes, in bounds (checked above).
            let y = unsafe { y.range(elements.start, elements.end) };
            let mask = mask.map(|m| unsafe { m.range(bytes.start, bytes.end) });
            let x = &x[elements];
            match (low.is_some(), high.is_some()) {
                (true, true) => clamp_range::<T, true, true>(x, y, mask, lo, hi),
                (true, false) => clamp_range::<T, true, false>(x, y, mask, lo, hi),
                (false, true) => clamp_range::<T, false, true>(x, y, mask, lo, hi),
                (false, false) => clamp_range::<T, false, false>(x, y, mask, lo, hi),
            }
        })
    });
    Ok(())
}

/// [`clamp`] of the elements `x` into `y`, with their mask bytes if asked for.
#[inline(always)]
fn clamp_range<T: Float, const LOW: bool, const HIGH: bool>(
    x: &[T],
    y: &mut [MaybeUninit<T>],
    mut mask: Option<&mut [MaybeUninit<u8>]>,
    low: T,
    high: T,
) {
    let (x_bytes, x_tail) = x.as_chunks::<8>();
    let (y_bytes, y_tail) = y.as_chunks_mut::<8>();
    let bytes = x_bytes.iter().zip(y_bytes);
    match &mut mask {
        Some(mask) => {
            for ((xs, ys), bits) in bytes.zip(mask.iter_mut()) {
                bits.write(clamp_byte::<T, LOW, HIGH>(xs, ys, low, high));
            }
        }
        None => bytes.for_each(|(xs, ys)| _ = clamp_byte::<T, LOW, HIGH>(xs, ys, low, high)),
    }
    if !x_tail.is_empty() {
        // the last byte's elements, padded with zeros whose bits are then cleared
        let (mut xs, mut ys) = ([T::ZERO; 8], [MaybeUninit::uninit(); 8]);
        xs[..x_tail.len()].copy_from_slice(x_tail);
        let bits = clamp_byte::<T, LOW, HIGH>(&xs, &mut ys, low, high);
        y_tail.copy_from_slice(&ys[..x_tail.len()]);
        if let Some(mask) = &mut mask {
            mask[x_bytes.len()].write(bits & !(0xff >> x_tail.len()));
        }
    }
}

/// Clamps 8 elements and returns their mask byte; fixed-length, so the compiler vectorises it
/// (8 wide with AVX2, [`vectorised!`]).
#[inline(always)]
fn clamp_byte<T: Float, const LOW: bool, const HIGH: bool>(
    xs: &[T; 8],
    ys: &mut [MaybeUninit<T>; 8],
    low: T,
    high: T,
) -> u8 {
    let mut bits = 0u8;
    for j in 0..8 {
        let v = xs[j];
        let above = if LOW && v < low { low } else { v };
        ys[j].write(if HIGH && above > high { high } else { above });
        bits |= u8::from((!LOW || v > low) & (!HIGH || v < high)) << (7 - j);
    }
    bits
}

/// The bits of `byte` as eight 0/1 bytes, the most significant first: the product with `SPREAD`
/// has bit 7 - j of `byte` at bit 8 j + 7 (its term with k = 7 - j), and its 64 terms all lie
/// at distinct bits, so nothing carries.
#[inline(always)]
fn unpack_byte(byte: u8) -> [u8; 8] {
    ((u64::from(byte).wrapping_mul(SPREAD) >> 7) & 0x0101_0101_0101_0101).to_le_bytes()
}

/// Bits 63 - 9 k for k < 8.
const SPREAD: u64 = 0x8040_2010_0804_0201;

/// `dx = g [mask]`, the VJP of an op that saved its packed mask: `g` times 1 or 0, so an
/// infinite or NaN `g` under a zero bit gives NaN, as NumPy's `g * mask`.
pub fn masked<T: Float>(
    ctx: &Context,
    grad: &[T],
    mask: &[u8],
    dx: Out<'_, T>,
) -> Result<(), LanceError> {
    dx.check_len(grad.len())?;
    check_mask_len(mask.len(), grad.len())?;
    for_mask_bytes(ctx, grad.len(), |bytes, elements| {
        // SAFETY: this thread's elements, in bounds (checked above).
        let dx = unsafe { dx.range(elements.start, elements.end) };
        let (g_bytes, g_tail) = grad[elements].as_chunks::<8>();
        let (dx_bytes, dx_tail) = dx.as_chunks_mut::<8>();
        let mask = &mask[bytes];
        for ((gs, outs), &byte) in g_bytes.iter().zip(dx_bytes).zip(mask) {
            masked_byte(gs, outs, byte);
        }
        if !g_tail.is_empty() {
            let (mut gs, mut outs) = ([T::ZERO; 8], [MaybeUninit::uninit(); 8]);
            gs[..g_tail.len()].copy_from_slice(g_tail);
            masked_byte(&gs, &mut outs, mask[g_bytes.len()]);
            dx_tail.copy_from_slice(&outs[..g_tail.len()]);
        }
    });
    Ok(())
}

/// `g [bit]` for the 8 elements of one mask byte; fixed-length, so the compiler vectorises it.
#[inline(always)]
fn masked_byte<T: Float>(gs: &[T; 8], outs: &mut [MaybeUninit<T>; 8], byte: u8) {
    let bits = unpack_byte(byte);
    for j in 0..8 {
        outs[j].write(gs[j] * if bits[j] == 1 { T::ONE } else { T::ZERO });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    /// Every instruction set of this CPU (the plain loop and its AVX2 build on x86-64)
    /// with 1 and 3 threads.
    fn contexts() -> Vec<Context> {
        Isa::available()
            .iter()
            .flat_map(|&isa| [1, 3].map(|threads| Context::new(isa, threads).unwrap()))
            .collect()
    }

    /// Values around the bounds 0 and 6, with both zeros, infinities and NaN.
    fn values(len: usize) -> Vec<f32> {
        let special = [-0.0, 0.0, 6.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        (0..len)
            .map(|i| {
                if i % 5 == 0 {
                    special[i / 5 % special.len()]
                } else {
                    (i * 7 % 17) as f32 - 5.0
                }
            })
            .collect()
    }

    #[test]
    fn clamp_and_its_mask_match_the_definition() {
        for ctx in contexts() {
            for len in [0, 1, 7, 8, 9, 300_001] {
                let x = values(len);
                for (low, high) in [
                    (Some(0.0), None),
                    (Some(0.0), Some(6.0)),
                    (None, Some(1.5)),
                    (Some(3.0), Some(1.0)),
                ] {
                    let (mut y, mut mask) = (vec![0.0f32; len], vec![0u8; mask_len(len)]);
                    clamp(
                        &ctx,
                        &x,
                        low,
                        high,
                        Out::new(&mut y),
                        Some(Out::new(&mut mask)),
                    )
                    .unwrap();
                    for (i, &v) in x.iter().enumerate() {
                        let mut want = v;
                        if low.is_some_and(|l| v < l) {
                            want = low.unwrap();
                        }
                        if high.is_some_and(|h| want > h) {
                            want = high.unwrap();
                        }
                        assert_eq!(y[i].to_bits(), want.to_bits(), "x = {v}");
                        let inside = low.is_none_or(|l| v > l) && high.is_none_or(|h| v < h);
                        assert_eq!(mask[i / 8] >> (7 - i % 8) & 1 == 1, inside, "x = {v}");
                    }
                    if len % 8 != 0 {
                        assert_eq!(
                            mask[len / 8] & (0xff >> (len % 8)),
                            0,
                            "padding bits are zero"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn masked_multiplies_by_each_bit() {
        for ctx in contexts() {
            for len in [0, 5, 16, 300_001] {
                let g = values(len);
                let mask: Vec<u8> = (0..mask_len(len)).map(|b| (b * 37 % 256) as u8).collect();
                let mut dx = vec![0.0f32; len];
                masked(&ctx, &g, &mask, Out::new(&mut dx)).unwrap();
                for i in 0..len {
                    let bit = (mask[i / 8] >> (7 - i % 8) & 1) as f32;
                    assert_eq!(dx[i].to_bits(), (g[i] * bit).to_bits());
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let ctx = contexts()[0];
        let x = [1.0f32; 9];
        let (mut y, mut mask) = ([0.0f32; 9], [0u8; 1]);
        let err = clamp(
            &ctx,
            &x,
            Some(0.0),
            None,
            Out::new(&mut y),
            Some(Out::new(&mut mask)),
        );
        assert!(err.unwrap_err().to_string().contains("2 bytes"));
        let mut short = [0.0f32; 8];
        assert!(masked(&ctx, &x, &[0, 0], Out::new(&mut short)).is_err());
    }
}
