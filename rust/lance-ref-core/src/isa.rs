//! The SIMD instruction set a kernel call runs on, chosen at run time.

use crate::LanceError;
use std::sync::OnceLock;

/// Environment variable that forces one instruction set (`scalar`, `avx2`, `avx512`, `neon`).
pub const ISA_ENV: &str = "LANCE_CORE_ISA";

/// An instruction set with its own GEMM micro-kernel.
///
/// `Avx2` means AVX2 with FMA; `Avx512` means AVX-512F. `Scalar` runs everywhere and is the
/// reference the SIMD paths are tested against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    pub fn name(&self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// The instruction set called `name`, if it is one of [`Isa::ALL`].
    pub fn from_name(name: &str) -> Result<Isa, LanceError> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == name)
            .ok_or_else(|| {
                LanceError::Invalid(format!(
                    "{ISA_ENV} must be one of scalar, avx2, avx512, neon; got {name:?}"
                ))
            })
    }

    /// Whether this CPU can run the instruction set.
    pub fn is_supported(&self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every instruction set this CPU supports, scalar first, best last.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(Isa::is_supported).collect()
    }

    /// The best instruction set of this CPU.
    pub fn best() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::Scalar)
    }

    /// The instruction set kernels use by default: the one named by `LANCE_CORE_ISA` if it is
    /// set (an error if it is unknown or this CPU lacks it), else [`Isa::best`]. Read once.
    pub fn selected() -> Result<Isa, LanceError> {
        static SELECTED: OnceLock<Result<Isa, LanceError>> = OnceLock::new();
        SELECTED
            .get_or_init(|| match std::env::var(ISA_ENV) {
                Ok(name) if !name.is_empty() => {
                    let isa = Isa::from_name(&name)?;
                    if isa.is_supported() {
                        Ok(isa)
                    } else {
                        Err(LanceError::Invalid(format!(
                            "{ISA_ENV}={name} but this CPU does not support it; it supports {}",
                            Isa::available()
                                .iter()
                                .map(Isa::name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    }
                }
                _ => Ok(Isa::best()),
            })
            .clone()
    }

    /// [`Isa::selected`], falling back to [`Isa::best`] when `LANCE_CORE_ISA` is unusable.
    pub fn detect() -> Isa {
        Isa::selected().unwrap_or_else(|_| Isa::best())
    }
}
