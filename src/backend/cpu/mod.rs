//! CPU fast paths for the few operations where candle's generic kernels cost
//! measurable time in PLIP: dense layers laid out for their matmul shape, fused
//! attention, layer norm and QuickGELU, and the allocator setting that keeps big
//! activation buffers from being returned to the kernel after every op.
//!
//! Every path here computes the same function as the candle ops it replaces, in
//! f32; only the order of floating-point additions differs. The exception is
//! opt-in: [`Precision::Bf16`] rounds the dense layers' weights and inputs to
//! bf16 (see `bf16.rs`). The parity tests in
//! `tests/parity.rs` run through them.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use candle_nn::Linear;
use rayon::prelude::*;

mod activation;
mod attention;
mod auto;
mod bf16;
mod dense;
mod memory;
mod norm;
#[cfg(test)]
pub(crate) mod tests;
pub(crate) use activation::{
    contiguous_f32, exp, quick_gelu, quick_gelu_bias_in_place, quick_gelu_in_place,
};
pub(crate) use attention::attention;
pub use auto::{cpu_name, Chosen, PrecisionChoice};
pub(crate) use bf16::{bf16_linear, pack_panels_bf16};
pub use bf16::{bf16_supported, Precision, UnsupportedPrecision};
pub(crate) use dense::{
    panels_apply, prefetch_panel_ahead, transpose16_avx512, Dense, Epilogue, PanelEpilogue, PANEL,
};
pub use memory::tune_allocator;
pub(crate) use memory::{release_free_memory, zeroed_f32};
pub(crate) use norm::Norm;
// The SIMD dispatch (`multiversion!`) and the dot product live a floor below,
// in `crate::vectors`, which every score shares.
use crate::vectors::{dot_portable, LANES};

/// The threads that the model's kernels split work over: rayon's pool, at most
/// one per physical core as candle counts them. candle's count is read once here:
/// candle reads it from the environment and `/proc/cpuinfo` on every call, about
/// 5% of a short prompt's time when every layer asked.
pub fn threads() -> usize {
    static PHYSICAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let physical = *PHYSICAL.get_or_init(candle_core::utils::get_num_threads);
    rayon::current_num_threads().min(physical)
}
// Set while `with_serial_gemm` runs on this thread.
thread_local! {
    pub(crate) static SERIAL_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with [`Dense`]'s gemm calls on the calling thread only.
///
/// For callers that already keep every core busy with independent work, such
/// as the vision tower running one slice of a batch per core: splitting each
/// matmul across cores as well would only add synchronization.
pub(crate) fn with_serial_gemm<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SERIAL_GEMM.set(self.0);
        }
    }
    let _reset = Reset(SERIAL_GEMM.replace(true));
    f()
}

/// The least number of pieces of a parallel loop that one task takes: all of
/// them under [`with_serial_gemm`], so that the loop stays on the calling
/// thread, else one.
///
/// A core that is running its own slice of a batch would otherwise hand pieces
/// of its layer norms and activations to the other core whenever it waits, and
/// then wait for that core's pieces in turn.
fn min_len() -> usize {
    if SERIAL_GEMM.get() {
        usize::MAX
    } else {
        1
    }
}
