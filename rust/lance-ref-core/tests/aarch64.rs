//! Which SIMD path the kernels take on this CPU. `.ci/aarch64` runs this under `qemu-aarch64`
//! (with `-- --nocapture`) and checks for the line "NEON path active", proving that the
//! cross-built crate dispatches to its NEON micro-kernels there. Natively (x86_64) it checks that
//! NEON is never chosen. `LANCE_CORE_ISA` must be unset (or name the best ISA) for the aarch64
//! assertion to hold, since it forces the dispatch.

use lance_ref_core::Isa;

#[cfg(target_arch = "aarch64")]
#[test]
fn neon_path_is_active() {
    let available = Isa::available();
    let detected = Isa::detect();
    assert!(
        available.contains(&Isa::Neon),
        "NEON not available on this aarch64 CPU: {available:?}"
    );
    assert_eq!(
        detected,
        Isa::Neon,
        "expected the NEON path on aarch64, got {} (available: {available:?}, LANCE_CORE_ISA={:?})",
        detected.name(),
        std::env::var("LANCE_CORE_ISA").ok()
    );
    println!("NEON path active (Isa::detect() = {})", detected.name());
}

#[cfg(not(target_arch = "aarch64"))]
#[test]
fn neon_path_is_not_chosen_off_aarch64() {
    let detected = Isa::detect();
    assert_ne!(detected, Isa::Neon, "NEON chosen on a non-aarch64 CPU");
    assert!(!Isa::available().contains(&Isa::Neon));
    println!("SIMD path: {} (not aarch64, so not NEON)", detected.name());
}
