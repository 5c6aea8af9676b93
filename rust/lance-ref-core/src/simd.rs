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
    const ONE: Self;
    /// This value in f64 (exact), and an f64 rounded to this type.
    fn to_f64(self) -> f64;
    fn from_f64(value: f64) -> Self;
    /// `a` if `pick` else `b`, by masking bits rather than branching, so that loops of it
    /// vectorise.
    fn select(pick: bool, a: Self, b: Self) -> Self;
    /// The micro-kernels of `isa` for this type, by increasing tile height `mr` (the scalar one
    /// if `isa` is not compiled in); all share one tile width `nr`.
    fn micro_kernels(isa: Isa) -> Vec<MicroKernel<Self>>;

    /// The row kernels of `isa` for this type (the scalar ones if `isa` is not compiled in).
    fn row_kernels(isa: Isa) -> RowKernels<Self>;

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

/// The row operations of the direct (tap-by-tap) kernels, on rows of `len` elements whose
/// elements lie `x_step` and `y_step` apart. The SIMD versions vectorise rows with unit steps
/// and take the scalar loop otherwise. Safety: every addressed element is valid, and `y` does
/// not overlap `x`.
#[derive(Clone, Copy)]
pub struct RowKernels<T> {
    /// `y[k * y_step] += a * x[k * x_step]` for `k < len`.
    pub axpy: unsafe fn(len: usize, a: T, x: *const T, x_step: isize, y: *mut T, y_step: isize),
    /// `sum_k x[k * x_step] * y[k * y_step]` over `k < len`.
    pub dot: unsafe fn(len: usize, x: *const T, x_step: isize, y: *const T, y_step: isize) -> T,
    /// `sums[o * TAPS + j] = sum_{p, r, k} g[o g_step + p g_plane + r g_row + k] x[p x_plane +
    /// r x_row + k + j]` over the `Correlation`'s planes `p`, rows `r` and elements `k < len`,
    /// for `o < OUTPUTS`, `j < TAPS`: the weight gradient of one kernel row of a stride-1 conv
    /// for `OUTPUTS` output channels, rows of unit step (`len + TAPS - 1` elements of x each).
    pub correlate: Correlate<T>,
}

/// Output channels and taps of one [`RowKernels::correlate`] call: 12 vector accumulators.
pub const OUTPUTS: usize = 4;
pub const TAPS: usize = 3;

/// See [`RowKernels::correlate`].
pub type Correlate<T> =
    unsafe fn(at: &Correlation, g: *const T, x: *const T, sums: &mut [T; OUTPUTS * TAPS]);

/// The extents of a [`RowKernels::correlate`] call, in elements.
#[derive(Clone, Copy, Debug)]
pub struct Correlation {
    pub planes: usize,
    pub rows: usize,
    pub len: usize,
    pub g_step: isize,
    pub g_plane: isize,
    pub g_row: isize,
    pub x_plane: isize,
    pub x_row: isize,
}

/// A SIMD register of `LANES` floats.
trait Vector<T: Float>: Copy {
    const LANES: usize;
    unsafe fn splat(value: T) -> Self;
    unsafe fn load(from: *const T) -> Self;
    unsafe fn store(self, to: *mut T);
    /// `self + a * b` (fused where the instruction set has it).
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
    /// The sum of the lanes, first to last.
    unsafe fn sum(self) -> T {
        let mut lanes = [T::ZERO; 16];
        unsafe { self.store(lanes.as_mut_ptr()) };
        lanes[..Self::LANES]
            .iter()
            .fold(T::ZERO, |total, &v| total + v)
    }
}

/// `RowKernels::axpy` over vectors `V` (the scalar loop for strided rows and the tail).
#[inline(always)]
unsafe fn axpy<T: Float, V: Vector<T>>(
    len: usize,
    a: T,
    x: *const T,
    x_step: isize,
    y: *mut T,
    y_step: isize,
) {
    // SAFETY: the caller guarantees the row extents (see `RowKernels`).
    unsafe {
        let mut k = 0;
        if x_step == 1 && y_step == 1 {
            let a_vector = V::splat(a);
            while k + V::LANES <= len {
                let target = y.add(k);
                V::load(target)
                    .mul_add(a_vector, V::load(x.add(k)))
                    .store(target);
                k += V::LANES;
            }
        }
        for k in k..len {
            let target = y.offset(k as isize * y_step);
            *target = *target + a * *x.offset(k as isize * x_step);
        }
    }
}

/// `RowKernels::dot` over vectors `V`: four vector accumulators, summed at the end.
#[inline(always)]
unsafe fn dot<T: Float, V: Vector<T>>(
    len: usize,
    x: *const T,
    x_step: isize,
    y: *const T,
    y_step: isize,
) -> T {
    // SAFETY: the caller guarantees the row extents (see `RowKernels`).
    unsafe {
        let (mut k, mut total) = (0, T::ZERO);
        if x_step == 1 && y_step == 1 {
            let mut acc = [V::splat(T::ZERO); 4];
            while k + 4 * V::LANES <= len {
                for (u, sum) in acc.iter_mut().enumerate() {
                    let at = k + u * V::LANES;
                    *sum = sum.mul_add(V::load(x.add(at)), V::load(y.add(at)));
                }
                k += 4 * V::LANES;
            }
            while k + V::LANES <= len {
                acc[0] = acc[0].mul_add(V::load(x.add(k)), V::load(y.add(k)));
                k += V::LANES;
            }
            for sum in acc {
                total = total + sum.sum();
            }
        }
        for k in k..len {
            total = total + *x.offset(k as isize * x_step) * *y.offset(k as isize * y_step);
        }
        total
    }
}

/// One vector step of [`correlate`]: `acc[o][j] += g[o g_step ..] * x[j][..]`, a vector each.
#[inline(always)]
unsafe fn correlate_step<T: Float, V: Vector<T>>(
    acc: &mut [[V; TAPS]; OUTPUTS],
    g: *const T,
    g_step: isize,
    x: [*const T; TAPS],
) {
    // SAFETY: the caller guarantees a vector at each of these places.
    unsafe {
        let xs: [V; TAPS] = std::array::from_fn(|j| V::load(x[j]));
        for (o, row) in acc.iter_mut().enumerate() {
            let gv = V::load(g.offset(o as isize * g_step));
            for (sum, &xv) in row.iter_mut().zip(&xs) {
                *sum = sum.mul_add(gv, xv);
            }
        }
    }
}

/// `RowKernels::correlate` over vectors `V`: [`OUTPUTS`] x [`TAPS`] vector accumulators over
/// each row's vectors (each load of x serves every output, each load of g every tap), a row's
/// last partial vector taken from zero-padded copies (zeros times zeros, so that no element
/// outside a tap's window enters its sum), the lanes summed at the end.
#[inline(always)]
unsafe fn correlate<T: Float, V: Vector<T>>(
    at: &Correlation,
    g: *const T,
    x: *const T,
    sums: &mut [T; OUTPUTS * TAPS],
) {
    const MAX_LANES: usize = 16;
    // SAFETY: the caller guarantees the rows' extents (see `RowKernels`).
    unsafe {
        let mut acc = [[V::splat(T::ZERO); TAPS]; OUTPUTS];
        let (full, rest) = (at.len / V::LANES * V::LANES, at.len % V::LANES);
        let (mut g_tail, mut x_tail) =
            ([T::ZERO; OUTPUTS * MAX_LANES], [T::ZERO; TAPS * MAX_LANES]);
        let (planes, rows) = (at.planes as isize, at.rows as isize);
        for (p, r) in (0..planes).flat_map(|p| (0..rows).map(move |r| (p, r))) {
            let g_r = g.offset(p * at.g_plane + r * at.g_row);
            let x_r = x.offset(p * at.x_plane + r * at.x_row);
            for k in (0..full).step_by(V::LANES) {
                let x_taps = std::array::from_fn(|j| x_r.add(k + j));
                correlate_step(&mut acc, g_r.add(k), at.g_step, x_taps);
            }
            if rest > 0 {
                for e in 0..rest {
                    for o in 0..OUTPUTS {
                        g_tail[o * MAX_LANES + e] =
                            *g_r.offset(o as isize * at.g_step).add(full + e);
                    }
                    for j in 0..TAPS {
                        x_tail[j * MAX_LANES + e] = *x_r.add(full + e + j);
                    }
                }
                let x_taps = std::array::from_fn(|j| x_tail[j * MAX_LANES..].as_ptr());
                correlate_step(&mut acc, g_tail.as_ptr(), MAX_LANES as isize, x_taps);
            }
        }
        for (o, row) in acc.iter().enumerate() {
            for (j, sum) in row.iter().enumerate() {
                sums[o * TAPS + j] = sum.sum();
            }
        }
    }
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

/// Defines the row kernels' entry points compiled for `$features`.
macro_rules! rows {
    ($axpy:ident, $dot:ident, $correlate:ident, $features:literal, $t:ty, $vector:ty) => {
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $axpy(
            len: usize,
            a: $t,
            x: *const $t,
            x_step: isize,
            y: *mut $t,
            y_step: isize,
        ) {
            unsafe { super::axpy::<$t, $vector>(len, a, x, x_step, y, y_step) }
        }
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $dot(
            len: usize,
            x: *const $t,
            x_step: isize,
            y: *const $t,
            y_step: isize,
        ) -> $t {
            unsafe { super::dot::<$t, $vector>(len, x, x_step, y, y_step) }
        }
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $correlate(
            at: &super::Correlation,
            g: *const $t,
            x: *const $t,
            sums: &mut [$t; super::OUTPUTS * super::TAPS],
        ) {
            unsafe { super::correlate::<$t, $vector>(at, g, x, sums) }
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
    rows!(
        avx2_f32_axpy,
        avx2_f32_dot,
        avx2_f32_correlate,
        "avx2,fma",
        f32,
        F32x8
    );
    rows!(
        avx2_f64_axpy,
        avx2_f64_dot,
        avx2_f64_correlate,
        "avx2,fma",
        f64,
        F64x4
    );
    rows!(
        avx512_f32_axpy,
        avx512_f32_dot,
        avx512_f32_correlate,
        "avx512f",
        f32,
        F32x16
    );
    rows!(
        avx512_f64_axpy,
        avx512_f64_dot,
        avx512_f64_correlate,
        "avx512f",
        f64,
        F64x8
    );
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
    rows!(
        neon_f32_axpy,
        neon_f32_dot,
        neon_f32_correlate,
        "neon",
        f32,
        F32x4
    );
    rows!(
        neon_f64_axpy,
        neon_f64_dot,
        neon_f64_correlate,
        "neon",
        f64,
        F64x2
    );
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

/// The scalar row kernels: the reference the SIMD ones are tested against.
fn scalar_rows<T: Float>() -> RowKernels<T> {
    unsafe fn run_axpy<T: Float>(
        len: usize,
        a: T,
        x: *const T,
        x_step: isize,
        y: *mut T,
        y_step: isize,
    ) {
        unsafe { axpy::<T, Lane<T>>(len, a, x, x_step, y, y_step) }
    }
    unsafe fn run_dot<T: Float>(
        len: usize,
        x: *const T,
        x_step: isize,
        y: *const T,
        y_step: isize,
    ) -> T {
        unsafe { dot::<T, Lane<T>>(len, x, x_step, y, y_step) }
    }
    unsafe fn run_correlate<T: Float>(
        at: &Correlation,
        g: *const T,
        x: *const T,
        sums: &mut [T; OUTPUTS * TAPS],
    ) {
        unsafe { correlate::<T, Lane<T>>(at, g, x, sums) }
    }
    RowKernels {
        axpy: run_axpy::<T>,
        dot: run_dot::<T>,
        correlate: run_correlate::<T>,
    }
}

/// `Float`'s kernels for one type: `$isa => $nr, [($mr, $kernel), ...], ($axpy, $dot)` arms,
/// scalar otherwise.
macro_rules! float {
    ($t:ty, $($arch:literal, $isa:path => $nr:literal, [$(($mr:literal, $kernel:path)),*], ($axpy:path, $dot:path, $correlate:path)),*) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(value: f64) -> Self {
                value as $t
            }
            #[inline(always)]
            fn select(pick: bool, a: Self, b: Self) -> Self {
                let mask = if pick { !0 } else { 0 };
                <$t>::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
            }
            fn micro_kernels(isa: Isa) -> Vec<MicroKernel<Self>> {
                match isa {
                    $(
                        #[cfg(target_arch = $arch)]
                        $isa => vec![$(MicroKernel { mr: $mr, nr: $nr, run: $kernel }),*],
                    )*
                    _ => vec![scalar()],
                }
            }
            fn row_kernels(isa: Isa) -> RowKernels<Self> {
                match isa {
                    $(
                        #[cfg(target_arch = $arch)]
                        $isa => RowKernels { axpy: $axpy, dot: $dot, correlate: $correlate },
                    )*
                    _ => scalar_rows(),
                }
            }
        }
    };
}

float!(f32,
    "x86_64", Isa::Avx2 => 16, [(2, x86::avx2_f32_2), (4, x86::avx2_f32_4), (6, x86::avx2_f32)],
        (x86::avx2_f32_axpy, x86::avx2_f32_dot, x86::avx2_f32_correlate),
    "x86_64", Isa::Avx512 => 32, [(2, x86::avx512_f32_2), (4, x86::avx512_f32_4), (8, x86::avx512_f32)],
        (x86::avx512_f32_axpy, x86::avx512_f32_dot, x86::avx512_f32_correlate),
    "aarch64", Isa::Neon => 8, [(2, arm::neon_f32_2), (4, arm::neon_f32_4), (8, arm::neon_f32)],
        (arm::neon_f32_axpy, arm::neon_f32_dot, arm::neon_f32_correlate));
float!(f64,
    "x86_64", Isa::Avx2 => 8, [(2, x86::avx2_f64_2), (4, x86::avx2_f64_4), (6, x86::avx2_f64)],
        (x86::avx2_f64_axpy, x86::avx2_f64_dot, x86::avx2_f64_correlate),
    "x86_64", Isa::Avx512 => 16, [(2, x86::avx512_f64_2), (4, x86::avx512_f64_4), (8, x86::avx512_f64)],
        (x86::avx512_f64_axpy, x86::avx512_f64_dot, x86::avx512_f64_correlate),
    "aarch64", Isa::Neon => 4, [(2, arm::neon_f64_2), (4, arm::neon_f64_4), (8, arm::neon_f64)],
        (arm::neon_f64_axpy, arm::neon_f64_dot, arm::neon_f64_correlate));

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

    /// Every supported row kernel equals the scalar reference (and the definition) on rows of
    /// lengths around the vector widths, with unit and other steps.
    fn check_rows<T: Float>(from: fn(f64) -> T) {
        for isa in Isa::available() {
            let rows = T::row_kernels(isa);
            for len in [0_usize, 1, 3, 4, 7, 8, 15, 16, 17, 33, 64, 67] {
                for (x_step, y_step) in [(1_isize, 1_isize), (2, 1), (1, 3), (-1, 1)] {
                    let x: Vec<T> = (0..len * 2 + 1)
                        .map(|v| from(((v * 7 % 11) as f64) - 5.0))
                        .collect();
                    let y0: Vec<T> = (0..len * 3 + 1)
                        .map(|v| from(((v * 5 % 13) as f64) / 4.0))
                        .collect();
                    // A negative step starts at the row's last element.
                    let x_start = if x_step < 0 { len.saturating_sub(1) } else { 0 };
                    let xp = unsafe { x.as_ptr().add(x_start) };
                    let xi = |k: usize| (x_start as isize + k as isize * x_step) as usize;
                    let yi = |k: usize| k * y_step as usize;
                    let (a, mut y) = (from(1.5), y0.clone());
                    unsafe { (rows.axpy)(len, a, xp, x_step, y.as_mut_ptr(), y_step) };
                    let mut want = y0.clone();
                    for k in 0..len {
                        want[yi(k)] = want[yi(k)] + a * x[xi(k)];
                    }
                    assert!(
                        y == want,
                        "{} axpy len {len} steps {x_step} {y_step}",
                        isa.name()
                    );
                    let got = unsafe { (rows.dot)(len, xp, x_step, y0.as_ptr(), y_step) };
                    let want = (0..len).fold(T::ZERO, |s, k| s + x[xi(k)] * y0[yi(k)]);
                    assert!(
                        got == want,
                        "{} dot len {len} steps {x_step} {y_step}",
                        isa.name()
                    );
                }
            }
        }
    }

    #[test]
    fn every_row_kernel_matches_the_definition() {
        // Small integers and quarters: every product and sum is exact, so paths agree exactly.
        check_rows::<f32>(|v| v as f32);
        check_rows::<f64>(|v| v);
    }

    /// Every supported `correlate` equals the scalar reference and the definition, on rows
    /// around the vector widths, g's outputs, planes and rows and x's at their own distances.
    fn check_correlate<T: Float>(from: fn(f64) -> T) {
        let reference = scalar_rows::<T>().correlate;
        for isa in Isa::available() {
            let correlate = T::row_kernels(isa).correlate;
            for (len, rows, planes) in
                (0..9)
                    .flat_map(|l| (0..3).map(move |r| (l, r)))
                    .map(|(l, r)| {
                        (
                            [1_usize, 3, 4, 7, 8, 9, 16, 17, 33][l],
                            [1_usize, 2, 5][r],
                            1 + l % 3,
                        )
                    })
            {
                let (g_row, x_row) = (len as isize + 1, len as isize + TAPS as isize + 3);
                let (g_plane, x_plane) = (rows as isize * g_row + 2, rows as isize * x_row + 1);
                let g_step = planes as isize * g_plane + 3;
                let at = Correlation {
                    planes,
                    rows,
                    len,
                    g_step,
                    g_plane,
                    g_row,
                    x_plane,
                    x_row,
                };
                let g: Vec<T> = (0..OUTPUTS * g_step as usize)
                    .map(|v| from(((v * 7 % 11) as f64) - 5.0))
                    .collect();
                let x: Vec<T> = (0..planes * x_plane as usize)
                    .map(|v| from(((v * 5 % 13) as f64) / 4.0))
                    .collect();
                let mut got = [T::ZERO; OUTPUTS * TAPS];
                let mut want = got;
                unsafe { correlate(&at, g.as_ptr(), x.as_ptr(), &mut got) };
                unsafe { reference(&at, g.as_ptr(), x.as_ptr(), &mut want) };
                assert!(got == want, "{} correlate {at:?}", isa.name());
                for (o, j) in (0..OUTPUTS).flat_map(|o| (0..TAPS).map(move |j| (o, j))) {
                    let terms = (0..planes as isize)
                        .flat_map(|p| (0..rows as isize).map(move |r| (p, r)))
                        .flat_map(|(p, r)| (0..len as isize).map(move |k| (p, r, k)));
                    let sum = terms.fold(T::ZERO, |s, (p, r, k)| {
                        let gi = o as isize * g_step + p * g_plane + r * g_row + k;
                        let xi = p * x_plane + r * x_row + k + j as isize;
                        s + g[gi as usize] * x[xi as usize]
                    });
                    assert!(want[o * TAPS + j] == sum, "definition ({o}, {j}) {at:?}");
                }
            }
        }
    }

    #[test]
    fn every_correlate_matches_the_scalar_reference_and_the_definition() {
        check_correlate::<f32>(|v| v as f32);
        check_correlate::<f64>(|v| v);
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
