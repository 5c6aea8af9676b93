//! How a kernel call runs: its instruction set and thread count.

use crate::{Isa, LanceError, parallel};

/// `$body` compiled for `$ctx`'s instruction set ([`Context::vectorised`]).
macro_rules! vectorised {
    ($ctx:expr, $body:block) => {
        $ctx.vectorised(
            #[inline(always)]
            || $body,
        )
    };
}
pub(crate) use vectorised;

/// The instruction set and thread count of a kernel call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub(crate) isa: Isa,
    pub(crate) threads: usize,
}

impl Context {
    /// A context on `isa` (which this CPU must support) with `threads` threads (at least 1).
    pub fn new(isa: Isa, threads: usize) -> Result<Context, LanceError> {
        if !isa.is_supported() {
            return Err(LanceError::Invalid(format!(
                "this CPU does not support the {} instruction set",
                isa.name()
            )));
        }
        if threads == 0 {
            return Err(LanceError::Invalid(
                "threads must be at least 1, got 0".into(),
            ));
        }
        Ok(Context { isa, threads })
    }

    /// [`Isa::selected`] and [`parallel::num_threads`]: what `LANCE_CORE_ISA`,
    /// `LANCE_CORE_THREADS` and [`parallel::set_num_threads`] say.
    pub fn from_env() -> Result<Context, LanceError> {
        Context::new(Isa::selected()?, parallel::num_threads())
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// `f()` compiled with AVX2 and FMA enabled when this context's instruction set has them
    /// (AVX-512 included), so that the compiler vectorises the plain loops of `f` 8 wide; as is
    /// elsewhere. `f` must be `#[inline(always)]` to be compiled into each variant: use
    /// [`vectorised!`]. Rust never contracts a multiply and an add into an FMA, so both variants
    /// round alike. Not 16 wide on AVX-512: BatchNorm's normalisation of (64, 96, 32, 32) float32
    /// took 8.5 ms so against 6.1 ms 8 wide (and 10 ms unvectorised).
    #[inline(always)]
    pub(crate) fn vectorised<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        if matches!(self.isa, Isa::Avx2 | Isa::Avx512) {
            #[target_feature(enable = "avx2,fma")]
            fn avx2<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            // SAFETY: a Context's instruction set is one this CPU supports (`Context::new`).
            return unsafe { avx2(f) };
        }
        f()
    }
}
