//! LANCE tensor kernels in pure Rust, with no Python dependency, so they can be called from Rust
//! on a board as well as through the `lance_ref._core` extension module.
//!
//! Arrays come in as [`View4`]s (a slice plus a shape and element strides) and go out into
//! caller-provided row-major buffers. Every kernel validates its input and returns a
//! [`LanceError`] instead of panicking.

mod error;
mod unfold;
mod view;

pub use error::LanceError;
pub use unfold::{unfold, unfolded_shape};
pub use view::{View4, numel, offset_range};
