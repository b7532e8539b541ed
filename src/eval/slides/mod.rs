//! Slide-level evaluation (issue 32) over the slides of an index: `plip eval
//! slide-retrieval` (slides as queries, figures as SISH, Yottixel and RetCCL report
//! them) and `plip eval slide-zero-shot` ([`zero_shot`], MI-Zero's top-K pooling).
//!
//! [`metrics`] is pure arithmetic with hand-worked and golden tests
//! (`fixtures/golden/slide_retrieval.json`, from `fixtures/slide_metrics.py`, an
//! independent Python implementation); [`labels`] reads the `slide,label[,patient]`
//! CSV against the index; [`command`] runs the leave-one-out protocol.

pub(crate) mod command;
pub(crate) mod labels;
pub(crate) mod metrics;
mod report;
#[cfg(test)]
mod tests;
pub(crate) mod zero_shot;
