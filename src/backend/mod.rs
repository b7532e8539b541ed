//! Where the model's arithmetic runs. Only the CPU has fast paths today; each
//! backend computes the same function as candle's generic ops.

pub(crate) mod cpu;
