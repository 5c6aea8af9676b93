//! LANCE tensor kernels in pure Rust, with no Python dependency, so they can be called from Rust
//! on a board as well as through the `lance_ref._core` extension module.
//!
//! Arrays come in as strided views ([`View4`], [`View2`]: a slice plus a shape and element
//! strides) and go out into caller-provided row-major buffers. Every kernel takes a [`Context`]
//! (the SIMD instruction set and the thread count), validates its input and returns a
//! [`LanceError`] instead of panicking. The products run on one GEMM whose micro-kernel exists
//! for AVX2+FMA, AVX-512F, NEON and a scalar reference ([`Isa`]); depthwise convolutions and
//! batch normalisation run on SIMD row kernels (axpy, dot) with the same four paths; the
//! elementwise clamp and masked VJP work on contiguous slices of any shape.
//!
//! # Fine-tuning a layer on a board, without Python
//!
//! [`lance_conv2d_step`] is one LANCE step of a conv layer: its forward, the Tucker core of its
//! input on fixed bases, the weight gradient from that core ([`lance_conv2d_weight_grad`]) and
//! an SGD update. The example `examples/lance_step.rs` runs it on `.npy` files ([`npy`]) that
//! lance-ref's Python side writes (the weight, an input batch, the output gradient and the bases
//! calibrated by `lance_ref.compress.calibrate`), and writes the trained weight back:
//!
//! ```text
//! cargo build --release --example lance_step --target aarch64-unknown-linux-gnu
//! lance_step DIR --steps 10 --lr 0.05 --padding 1      # on the board
//! ```

mod activation;
mod context;
mod conv;
mod depthwise;
mod error;
mod gemm;
mod im2col;
mod isa;
mod lance;
mod layout;
mod norm;
pub mod npy;
mod out;
mod parallel;
mod pool;
mod simd;
mod taps;
mod tucker;
mod view;

pub use activation::{clamp, mask_len, masked};
pub use context::Context;
pub use conv::{conv2d, conv2d_input_grad, conv2d_weight_grad, padded_workspace_len};
pub use depthwise::{
    depthwise_conv2d, depthwise_conv2d_input_grad, depthwise_conv2d_weight_grad,
    depthwise_output_hw,
};
pub use error::LanceError;
pub use im2col::{ConvGeometry, im2col};
pub use isa::{ISA_ENV, Isa};
pub use lance::{lance_conv2d_step, lance_conv2d_weight_grad};
pub use layout::{fold, unfold, unfolded_shape};
pub use norm::{Normalisation, batch_norm_backward, batch_norm_forward, batch_norm_stats};
pub use out::Out;
pub use parallel::{THREADS_ENV, num_threads, set_num_threads};
pub use pool::{PoolGeometry, TapIndex, max_pool2d, max_pool2d_backward};
pub use simd::{Float, RowKernels};
pub use tucker::{
    gram, mode_product, projected_shape, reconstructed_shape, tucker_project, tucker_reconstruct,
};
pub use view::{View, View2, View4, c_strides, numel, offset_range};

/// Small integers for the kernels' tests: every product and sum of them is exact, so every
/// summation order, SIMD path and thread count must agree exactly.
#[cfg(test)]
pub(crate) fn exact_values(len: usize, seed: usize) -> Vec<f64> {
    (0..len)
        .map(|v| ((v * 7 + seed) % 11) as f64 - 5.0)
        .collect()
}
