//! Typed errors of the slide reader, so that the indexing job can skip one slide (or one
//! tile) and go on. Every message names the file and, where there is one, the fix.

use std::path::PathBuf;

/// Everything that can go wrong opening or reading a slide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SlideError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read the file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a TIFF this reader understands (bad header, broken IFDs,
    /// a truncated file).
    #[error("{path}: not a readable TIFF slide: {msg}")]
    Tiff { path: PathBuf, msg: String },
    /// A TIFF that is valid but has nothing this reader can use.
    #[error("{path}: unsupported slide: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    /// An Aperio level stored as JPEG 2000 (TIFF compression 33003 or 33005).
    #[error(
        "{path}: level {level} is JPEG 2000 (Aperio TIFF compression {compression}), which the \
         built-in reader does not decode; install OpenSlide (Debian package `libopenslide0`: \
         apt-get install libopenslide0) and it is used automatically"
    )]
    Jpeg2000 {
        path: PathBuf,
        level: usize,
        compression: u16,
    },
    /// One stored tile could not be decoded. Only regions touching this tile
    /// fail; the caller can skip them.
    #[error(
        "{path}: level {level} tile (col {col}, row {row}, index {index}) is corrupt: {msg}; \
         skip the regions that touch it"
    )]
    CorruptTile {
        path: PathBuf,
        level: usize,
        col: u64,
        row: u64,
        index: u64,
        msg: String,
    },
    /// A tile with TileByteCounts = 0 (an encoder bug seen in Aperio files).
    #[error(
        "{path}: level {level} tile (col {col}, row {row}, index {index}) has no stored data \
         (byte count 0); skip the regions that touch it"
    )]
    MissingTile {
        path: PathBuf,
        level: usize,
        col: u64,
        row: u64,
        index: u64,
    },
    /// A level index past the last level.
    #[error("{path}: level {level} does not exist: the slide has {count} levels (0..{count})")]
    LevelOutOfRange {
        path: PathBuf,
        level: usize,
        count: usize,
    },
    /// A region with more pixels than one read may hold ([`super::MAX_REGION_PIXELS`]).
    #[error(
        "{path}: a {w}x{h}-pixel region is more than one read may hold ({limit} pixels); ask \
         for a smaller region, or for the same region at a coarser level"
    )]
    RegionTooLarge {
        path: PathBuf,
        w: u32,
        h: u32,
        limit: u64,
    },
    /// A low-resolution view (tissue detection, thumbnails) over [`super::MAX_VIEW_PIXELS`]:
    /// the slide's size or its recorded resolution is implausible.
    #[error(
        "{path}: the {w}x{h}-pixel low-resolution view of level {level} (for tissue detection) \
         is more than {limit} pixels, so the slide's size or its recorded resolution is \
         implausible; pass the right resolution with `--slide-mpp`, or `--min-tissue 0` to \
         keep every tile without detecting tissue"
    )]
    ViewTooLarge {
        path: PathBuf,
        level: usize,
        w: u64,
        h: u64,
        limit: u64,
    },
    /// A slide whose recorded resolution is so coarse that a model input would be
    /// upsampled more than 2x (an Aperio `MPP = 99` makes 1-pixel tiles).
    #[error(
        "{path}: the slide records {mpp} µm/px ({source_name}), so a {tile} px tile at {target} \
         µm/px covers only {s0} level-0 pixel(s) and would be upsampled {factor:.0}x; if the \
         recorded resolution is wrong, give the right one with `--slide-mpp UM` (it replaces a \
         recorded value this coarse), else ask for a coarser `--mpp` (at least {min_mpp})"
    )]
    CoarseResolution {
        path: PathBuf,
        mpp: f64,
        source_name: &'static str,
        tile: u32,
        target: f64,
        s0: u64,
        factor: f64,
        min_mpp: f64,
    },
    /// A region of a slide (a query `SLIDE@X,Y,W,H`) that is empty, outside the slide, or
    /// whose bounds overflow.
    #[error("{path}: {msg}")]
    BadRegion { path: PathBuf, msg: String },
    /// The format needs OpenSlide and the library is not installed.
    #[error(
        "{path}: {what} needs OpenSlide, which is not installed (tried {tried}); install the \
         Debian package `libopenslide0` (apt-get install libopenslide0)"
    )]
    OpenSlideMissing {
        path: PathBuf,
        what: String,
        tried: String,
    },
    /// Neither the file nor the user gives the slide's resolution, so no tile size in
    /// level-0 pixels can be computed.
    #[error(
        "{path}: the slide records no resolution (no Aperio `MPP`, no TIFF resolution in \
         inches or centimetres, no OME-XML `PhysicalSizeX`); give it with `--slide-mpp X` \
         (micrometres per pixel at full resolution, e.g. 0.25 for a 40x scan)"
    )]
    NoMpp { path: PathBuf },
    /// Tiling options that cannot describe a grid (a caller's bug or an unchecked flag).
    #[error("{path}: invalid tiling options: {msg}")]
    BadTiling { path: PathBuf, msg: String },
    /// OpenSlide reported an error.
    #[error("{path}: OpenSlide: {msg}")]
    OpenSlide { path: PathBuf, msg: String },
    /// A user's tissue mask (`--tissue-mask`) that cannot be used; `path` is the mask.
    #[error(
        "{path}: cannot use this tissue mask: {msg}; fix the file, or remove it and tissue is \
         detected instead"
    )]
    Mask { path: PathBuf, msg: String },
    #[error(
        "{path}: cannot use this coordinate file: {msg}; fix it, or remove it and the \
         slide is tiled by plip's own grid"
    )]
    Coords { path: PathBuf, msg: String },
}
