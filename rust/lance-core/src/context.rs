//! How a kernel call runs: its instruction set and thread count.

use crate::{Isa, LanceError, parallel};

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
}
