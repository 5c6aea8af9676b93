use std::fmt;

/// Why a kernel refused its input. Kernels validate everything up front and never panic on bad
/// input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LanceError {
    /// A mode (axis) index is not below the number of dimensions.
    InvalidMode { mode: usize, ndim: usize },
    /// An element count or offset does not fit in `usize`/`isize`.
    SizeOverflow,
    /// A strided view reaches outside the data slice it was given.
    OutOfBounds {
        lowest: isize,
        highest: isize,
        len: usize,
    },
    /// An output buffer does not have the required length.
    BufferLength { expected: usize, got: usize },
    /// An argument does not fit the others; the message names it and says what was expected.
    Invalid(String),
}

impl fmt::Display for LanceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidMode { mode, ndim } => {
                write!(f, "mode must be in 0..{ndim}, got {mode}")
            }
            Self::SizeOverflow => write!(f, "array size or offset overflows the address space"),
            Self::OutOfBounds {
                lowest,
                highest,
                len,
            } => write!(
                f,
                "strided view reaches elements {lowest}..={highest} of a slice of length {len}"
            ),
            Self::BufferLength { expected, got } => {
                write!(f, "output buffer must hold {expected} elements, got {got}")
            }
            Self::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for LanceError {}
