//! What plip writes for people and other tools: printed hits, `.npy` files,
//! HTML pages, PNG pictures of slides (heatmaps, tiling checks), GeoJSON tissue
//! outlines for QuPath, and exports
//! for FAISS and clip-retrieval's tools.

pub(crate) mod by_slide;
pub(crate) mod export;
pub(crate) mod export_marker;
pub(crate) mod geojson;
pub(crate) mod h5_export;
pub(crate) mod html;
pub(crate) mod npy;
pub(crate) mod printers;
pub(crate) mod qupath;
pub(crate) mod slide_files;
pub(crate) mod slide_matches;
pub(crate) mod slide_png;
pub(crate) mod thumb;
