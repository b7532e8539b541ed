//! What plip writes for people and other tools: printed hits, `.npy` files and
//! HTML pages.

pub(crate) mod html;
pub(crate) mod npy;
pub(crate) mod printers;
