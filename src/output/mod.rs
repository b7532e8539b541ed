//! What plip writes for people and other tools: printed hits, `.npy` files,
//! HTML pages, and exports for FAISS and clip-retrieval's tools.

pub(crate) mod export;
pub(crate) mod html;
pub(crate) mod npy;
pub(crate) mod printers;
