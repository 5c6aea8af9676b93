//! GEMM micro-kernels: one generic tile loop, instantiated per instruction set and float type.
//!
//! A micro-kernel multiplies a packed `MR x k` panel of A (`a[p * MR + i]`) by a `k x NR` panel
//! of B (rows `ldb` apart: packed, or read in place when its rows are contiguous) into an
//! `MR x NR` tile of C (rows `ldc` apart: a scratch tile, or C itself), overwriting or adding.
//! Every instruction set runs the same [`tile`] loop over its own vector type; the scalar
//! instantiation (one lane, no fused multiply-add) is the reference the others are tested
//! against.

use crate::Isa;
use std::fmt::Debug;
use std::ops::{Add, Mul};

/// The float types of the kernels: `f32` and `f64`.
pub trait Float:
    Copy
    + Default
    + Debug
    + PartialEq
    + PartialOrd
    + Send
    + Sync
    + Add<Output = Self>
    + Mul<Output = Self>
    + 'static
{
    const ZERO: Self;
    /// The micro-kernels of `isa` for this type, by increasing tile height `mr` (the scalar one
    /// if `isa` is not compiled in); all share one tile width `nr`.
    fn micro_kernels(isa: Isa) -> Vec<MicroKernel<Self>>;

    /// The micro-kernel of `isa` for a product with `rows` rows of A: the lowest tile that
    /// covers them, or the tallest (short products waste no multiply-adds on padding rows).
    fn micro_kernel(isa: Isa, rows: usize) -> MicroKernel<Self> {
        let kernels = Self::micro_kernels(isa);
        let tallest = kernels[kernels.len() - 1];
        kernels
            .into_iter()
            .find(|k| k.mr >= rows)
            .unwrap_or(tallest)
    }
}

/// A tile kernel and its tile shape.
#[derive(Clone, Copy)]
pub struct MicroKernel<T> {
    pub mr: usize,
    pub nr: usize,
    pub run: Run<T>,
}

/// `c[i * ldc + j] (+)= sum_{p < k} a[p * mr + i] * b[p * ldb + j]` for `i < mr`, `j < nr`,
/// adding to c when `accumulate`. Safety: `a` holds `k * mr` elements, b and c address valid
/// elements at those offsets, and the CPU supports the kernel's instruction set.
pub type Run<T> = unsafe fn(
    k: usize,
    a: *const T,
    b: *const T,
    ldb: isize,
    c: *mut T,
    ldc: isize,
    accumulate: bool,
);

/// A SIMD register of `LANES` floats.
trait Vector<T>: Copy {
    const LANES: usize;
    unsafe fn splat(value: T) -> Self;
    unsafe fn load(from: *const T) -> Self;
    unsafe fn store(self, to: *mut T);
    /// `self + a * b` (fused where the instruction set has it).
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
}

/// The tile loop shared by every instruction set: `MR x NV` vector accumulators.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<T: Float, V: Vector<T>, const MR: usize, const NV: usize>(
    k: usize,
    a: *const T,
    b: *const T,
    ldb: isize,
    c: *mut T,
    ldc: isize,
    accumulate: bool,
) {
    // SAFETY: the caller guarantees the panel and tile extents (see `Run`).
    unsafe {
        let mut acc = [[V::splat(T::ZERO); NV]; MR];
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, sum) in row.iter_mut().enumerate() {
                    *sum = V::load(c.offset(i as isize * ldc + (v * V::LANES) as isize));
                }
            }
        }
        for p in 0..k {
            let b_row = b.offset(p as isize * ldb);
            let mut b_vectors = [V::splat(T::ZERO); NV];
            for (v, vector) in b_vectors.iter_mut().enumerate() {
                *vector = V::load(b_row.add(v * V::LANES));
            }
            let a_column = a.add(p * MR);
            for (i, row) in acc.iter_mut().enumerate() {
                let a_value = V::splat(*a_column.add(i));
                for (sum, &b_vector) in row.iter_mut().zip(&b_vectors) {
                    *sum = sum.mul_add(a_value, b_vector);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, sum) in row.iter().enumerate() {
                sum.store(c.offset(i as isize * ldc + (v * V::LANES) as isize));
            }
        }
    }
}

/// One float as a one-lane "vector": the scalar reference path.
#[derive(Clone, Copy)]
struct Lane<T>(T);

impl<T: Float> Vector<T> for Lane<T> {
    const LANES: usize = 1;
    #[inline(always)]
    unsafe fn splat(value: T) -> Self {
        Lane(value)
    }
    #[inline(always)]
    unsafe fn load(from: *const T) -> Self {
        Lane(unsafe { *from })
    }
    #[inline(always)]
    unsafe fn store(self, to: *mut T) {
        unsafe { *to = self.0 }
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        Lane(self.0 + a.0 * b.0)
    }
}

/// Defines a `Vector` impl over a register type from its intrinsics.
macro_rules! vector {
    ($name:ident, $t:ty, $reg:ty, $lanes:expr, $splat:ident, $load:ident, $store:ident, |$acc:ident, $a:ident, $b:ident| $fma:expr) => {
        #[derive(Clone, Copy)]
        pub(super) struct $name($reg);
        impl super::Vector<$t> for $name {
            const LANES: usize = $lanes;
            #[inline(always)]
            unsafe fn splat(value: $t) -> Self {
                $name(unsafe { $splat(value) })
            }
            #[inline(always)]
            unsafe fn load(from: *const $t) -> Self {
                $name(unsafe { $load(from) })
            }
            #[inline(always)]
            unsafe fn store(self, to: *mut $t) {
                unsafe { $store(to, self.0) }
            }
            #[inline(always)]
            unsafe fn mul_add(self, a: Self, b: Self) -> Self {
                let ($acc, $a, $b) = (self.0, a.0, b.0);
                $name(unsafe { $fma })
            }
        }
    };
}

/// Defines a micro-kernel entry point compiled for `$features`.
macro_rules! kernel {
    ($name:ident, $features:literal, $t:ty, $vector:ty, $mr:literal, $nv:literal) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name(
            k: usize,
            a: *const $t,
            b: *const $t,
            ldb: isize,
            c: *mut $t,
            ldc: isize,
            accumulate: bool,
        ) {
            unsafe { super::tile::<$t, $vector, $mr, $nv>(k, a, b, ldb, c, ldc, accumulate) }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    vector!(
        F32x8,
        f32,
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        |c, a, b| _mm256_fmadd_ps(a, b, c)
    );
    vector!(
        F64x4,
        f64,
        __m256d,
        4,
        _mm256_set1_pd,
        _mm256_loadu_pd,
        _mm256_storeu_pd,
        |c, a, b| _mm256_fmadd_pd(a, b, c)
    );
    vector!(
        F32x16,
        f32,
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        |c, a, b| _mm512_fmadd_ps(a, b, c)
    );
    vector!(
        F64x8,
        f64,
        __m512d,
        8,
        _mm512_set1_pd,
        _mm512_loadu_pd,
        _mm512_storeu_pd,
        |c, a, b| _mm512_fmadd_pd(a, b, c)
    );
    kernel!(avx2_f32_2, "avx2,fma", f32, F32x8, 2, 2);
    kernel!(avx2_f32_4, "avx2,fma", f32, F32x8, 4, 2);
    kernel!(avx2_f32, "avx2,fma", f32, F32x8, 6, 2);
    kernel!(avx2_f64_2, "avx2,fma", f64, F64x4, 2, 2);
    kernel!(avx2_f64_4, "avx2,fma", f64, F64x4, 4, 2);
    kernel!(avx2_f64, "avx2,fma", f64, F64x4, 6, 2);
    kernel!(avx512_f32_2, "avx512f", f32, F32x16, 2, 2);
    kernel!(avx512_f32_4, "avx512f", f32, F32x16, 4, 2);
    kernel!(avx512_f32, "avx512f", f32, F32x16, 8, 2);
    kernel!(avx512_f64_2, "avx512f", f64, F64x8, 2, 2);
    kernel!(avx512_f64_4, "avx512f", f64, F64x8, 4, 2);
    kernel!(avx512_f64, "avx512f", f64, F64x8, 8, 2);
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;
    vector!(
        F32x4,
        f32,
        float32x4_t,
        4,
        vdupq_n_f32,
        vld1q_f32,
        vst1q_f32,
        |c, a, b| vfmaq_f32(c, a, b)
    );
    vector!(
        F64x2,
        f64,
        float64x2_t,
        2,
        vdupq_n_f64,
        vld1q_f64,
        vst1q_f64,
        |c, a, b| vfmaq_f64(c, a, b)
    );
    kernel!(neon_f32_2, "neon", f32, F32x4, 2, 2);
    kernel!(neon_f32_4, "neon", f32, F32x4, 4, 2);
    kernel!(neon_f32, "neon", f32, F32x4, 8, 2);
    kernel!(neon_f64_2, "neon", f64, F64x2, 2, 2);
    kernel!(neon_f64_4, "neon", f64, F64x2, 4, 2);
    kernel!(neon_f64, "neon", f64, F64x2, 8, 2);
}

fn scalar<T: Float>() -> MicroKernel<T> {
    unsafe fn run<T: Float>(
        k: usize,
        a: *const T,
        b: *const T,
        ldb: isize,
        c: *mut T,
        ldc: isize,
        accumulate: bool,
    ) {
        unsafe { tile::<T, Lane<T>, 4, 4>(k, a, b, ldb, c, ldc, accumulate) }
    }
    MicroKernel {
        mr: 4,
        nr: 4,
        run: run::<T>,
    }
}

/// `Float::micro_kernels` for one type: `$isa => $nr, [($mr, $kernel), ...]` arms, scalar
/// otherwise.
macro_rules! float {
    ($t:ty, $($arch:literal, $isa:path => $nr:literal, [$(($mr:literal, $kernel:path)),*]),*) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            fn micro_kernels(isa: Isa) -> Vec<MicroKernel<Self>> {
                match isa {
                    $(
                        #[cfg(target_arch = $arch)]
                        $isa => vec![$(MicroKernel { mr: $mr, nr: $nr, run: $kernel }),*],
                    )*
                    _ => vec![scalar()],
                }
            }
        }
    };
}

float!(f32,
    "x86_64", Isa::Avx2 => 16, [(2, x86::avx2_f32_2), (4, x86::avx2_f32_4), (6, x86::avx2_f32)],
    "x86_64", Isa::Avx512 => 32, [(2, x86::avx512_f32_2), (4, x86::avx512_f32_4), (8, x86::avx512_f32)],
    "aarch64", Isa::Neon => 8, [(2, arm::neon_f32_2), (4, arm::neon_f32_4), (8, arm::neon_f32)]);
float!(f64,
    "x86_64", Isa::Avx2 => 8, [(2, x86::avx2_f64_2), (4, x86::avx2_f64_4), (6, x86::avx2_f64)],
    "x86_64", Isa::Avx512 => 16, [(2, x86::avx512_f64_2), (4, x86::avx512_f64_4), (8, x86::avx512_f64)],
    "aarch64", Isa::Neon => 4, [(2, arm::neon_f64_2), (4, arm::neon_f64_4), (8, arm::neon_f64)]);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every supported micro-kernel equals the scalar reference (and the definition) on random
    /// panels, for several depths including 0 and 1.
    fn check<T: Float>(from: fn(f64) -> T, close: fn(T, T) -> bool) {
        for kernel in Isa::available().into_iter().flat_map(T::micro_kernels) {
            let (mr, nr) = (kernel.mr, kernel.nr);
            for k in [0, 1, 2, 7, 33] {
                let a: Vec<T> = (0..k * mr)
                    .map(|v| from(((v * 7 % 11) as f64) - 5.0))
                    .collect();
                let b: Vec<T> = (0..k * nr)
                    .map(|v| from(((v * 5 % 13) as f64) / 4.0))
                    .collect();
                // C rows 2 * nr apart; the second pass adds the product again.
                let mut got = vec![T::ZERO; 2 * mr * nr];
                for (pass, accumulate) in [false, true].into_iter().enumerate() {
                    let ldc = 2 * nr as isize;
                    unsafe {
                        (kernel.run)(
                            k,
                            a.as_ptr(),
                            b.as_ptr(),
                            nr as isize,
                            got.as_mut_ptr(),
                            ldc,
                            accumulate,
                        )
                    };
                    for i in 0..mr {
                        for j in 0..nr {
                            let want =
                                (0..k).fold(T::ZERO, |s, p| s + a[p * mr + i] * b[p * nr + j]);
                            let want = if pass == 1 { want + want } else { want };
                            assert!(
                                close(got[i * 2 * nr + j], want),
                                "{mr}x{nr} k={k} ({i},{j})"
                            );
                            assert!(
                                got[i * 2 * nr + nr + j] == T::ZERO,
                                "wrote outside the tile"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_micro_kernel_matches_the_definition() {
        // Small integers and quarters: every product and sum is exact, so paths agree exactly.
        check::<f32>(|v| v as f32, |a, b| a == b);
        check::<f64>(|v| v, |a, b| a == b);
    }

    #[test]
    fn unknown_instruction_sets_fall_back_to_scalar() {
        let foreign = if cfg!(target_arch = "aarch64") {
            Isa::Avx2
        } else {
            Isa::Neon
        };
        assert_eq!(f32::micro_kernel(foreign, 8).mr, 4);
    }
}
