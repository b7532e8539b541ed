//! What plip writes for people and other tools: printed hits, `.npy` files,
//! HTML pages, and PNG pictures of slides (heatmaps, tiling checks).

pub(crate) mod by_slide;
pub(crate) mod html;
pub(crate) mod npy;
pub(crate) mod printers;
pub(crate) mod slide_png;
