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
    /// A region whose pixel count does not fit in memory arithmetic.
    #[error("{path}: region {w}x{h} is too large to allocate; read it in pieces")]
    RegionTooLarge { path: PathBuf, w: u32, h: u32 },
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
    BadTileOptions { path: PathBuf, msg: String },
    /// OpenSlide reported an error.
    #[error("{path}: OpenSlide: {msg}")]
    OpenSlide { path: PathBuf, msg: String },
    /// A user's tissue mask (`--tissue-mask`) that cannot be used; `path` is the mask.
    #[error(
        "{path}: cannot use this tissue mask: {msg}; fix the file, or remove it and tissue is \
         detected instead"
    )]
    Mask { path: PathBuf, msg: String },
}
