//! OpenSlide, loaded at run time with `libloading` (`libopenslide.so.1`,
//! OpenSlide 4, or `libopenslide.so.0`, OpenSlide 3.4 as Debian's
//! `libopenslide0` ships it). Used for the formats the built-in TIFF reader
//! does not cover: `.ndpi`, `.mrxs`, `.scn`, `.bif`, `.vms`, `.vmu`,
//! `.svslide`, `.dcm`, and JPEG 2000 Aperio files.
//!
//! Guarantees: without the library every entry point returns
//! [`SlideError::OpenSlideMissing`] naming the Debian package; the library is
//! loaded once per process; pixels are converted from OpenSlide's
//! premultiplied ARGB exactly as openslide-python does (see
//! [`super::compose`]); an OpenSlide handle is thread-safe (OpenSlide
//! documents `openslide_t` as such), so [`OpenSlide`] is `Send + Sync`.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::error::SlideError;
use super::Level;

const SONAMES: &[&str] = &[
    "libopenslide.so.1",
    "libopenslide.so.0",
    "libopenslide.dylib",
];

type OpenFn = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type CloseFn = unsafe extern "C" fn(*mut c_void);
type GetErrorFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type LevelCountFn = unsafe extern "C" fn(*mut c_void) -> i32;
type LevelDimsFn = unsafe extern "C" fn(*mut c_void, i32, *mut i64, *mut i64);
type LevelDsFn = unsafe extern "C" fn(*mut c_void, i32) -> f64;
type PropFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> *const c_char;
type ReadRegionFn = unsafe extern "C" fn(*mut c_void, *mut u32, i64, i64, i32, i64, i64);

struct Api {
    // Keeps the library mapped for the life of the process.
    _lib: libloading::Library,
    open: OpenFn,
    close: CloseFn,
    get_error: GetErrorFn,
    level_count: LevelCountFn,
    level_dims: LevelDimsFn,
    level_ds: LevelDsFn,
    prop: PropFn,
    read_region: ReadRegionFn,
}

fn load() -> Result<Api, String> {
    let mut errors = Vec::new();
    for name in SONAMES {
        // SAFETY: loading OpenSlide runs its (glib) initialisers, which are
        // safe to run in any process.
        let lib = match unsafe { libloading::Library::new(name) } {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        // SAFETY: the signatures match openslide.h for 3.4 and 4.x.
        let api = unsafe {
            (|| -> Result<Api, libloading::Error> {
                Ok(Api {
                    open: *lib.get::<OpenFn>(b"openslide_open\0")?,
                    close: *lib.get::<CloseFn>(b"openslide_close\0")?,
                    get_error: *lib.get::<GetErrorFn>(b"openslide_get_error\0")?,
                    level_count: *lib.get::<LevelCountFn>(b"openslide_get_level_count\0")?,
                    level_dims: *lib.get::<LevelDimsFn>(b"openslide_get_level_dimensions\0")?,
                    level_ds: *lib.get::<LevelDsFn>(b"openslide_get_level_downsample\0")?,
                    prop: *lib.get::<PropFn>(b"openslide_get_property_value\0")?,
                    read_region: *lib.get::<ReadRegionFn>(b"openslide_read_region\0")?,
                    _lib: lib,
                })
            })()
        };
        match api {
            Ok(a) => return Ok(a),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

fn api() -> Result<&'static Api, &'static str> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(|e| e.as_str())
}

/// Whether OpenSlide could be loaded.
pub(crate) fn available() -> bool {
    api().is_ok()
}

/// An open OpenSlide handle.
pub(crate) struct OpenSlide {
    path: PathBuf,
    handle: *mut c_void,
    api: &'static Api,
    levels: Vec<Level>,
    vendor: String,
    mpp: Option<f64>,
}

// SAFETY: OpenSlide documents openslide_t as thread-safe; the handle is only
// closed in Drop, when no other reference exists.
unsafe impl Send for OpenSlide {}
// SAFETY: as for Send: every OpenSlide call on one handle may come from any thread.
unsafe impl Sync for OpenSlide {}

impl OpenSlide {
    /// Open `path`; `what` names the kind of file for the not-installed error.
    pub(crate) fn open(path: &Path, what: &str) -> Result<Self, SlideError> {
        let api = api().map_err(|tried| SlideError::OpenSlideMissing {
            path: path.to_path_buf(),
            what: what.to_string(),
            tried: tried.to_string(),
        })?;
        let err = |msg: String| SlideError::OpenSlide {
            path: path.to_path_buf(),
            msg,
        };
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| err("path contains a NUL byte".into()))?;
        // SAFETY: c is a valid C string.
        let handle = unsafe { (api.open)(c.as_ptr()) };
        if handle.is_null() {
            return Err(err("not a format OpenSlide recognises".into()));
        }
        let mut s = OpenSlide {
            path: path.to_path_buf(),
            handle,
            api,
            levels: Vec::new(),
            vendor: String::new(),
            mpp: None,
        };
        s.check()?;
        // SAFETY: handle is valid and without error.
        let n = unsafe { (api.level_count)(handle) };
        let mut levels = Vec::new();
        for i in 0..n.max(0) {
            let (mut w, mut h) = (0i64, 0i64);
            // SAFETY: i < level count; out pointers are valid.
            let ds = unsafe {
                (api.level_dims)(handle, i, &mut w, &mut h);
                (api.level_ds)(handle, i)
            };
            let tw = s.prop_u32(&format!("openslide.level[{i}].tile-width"));
            let th = s.prop_u32(&format!("openslide.level[{i}].tile-height"));
            levels.push(Level {
                width: w.max(0) as u64,
                height: h.max(0) as u64,
                downsample: ds,
                tile_w: tw.unwrap_or(256),
                tile_h: th.unwrap_or(256),
            });
        }
        s.check()?;
        if levels.is_empty() {
            return Err(err("no levels".into()));
        }
        s.levels = levels;
        s.vendor = s.property("openslide.vendor").unwrap_or_default();
        s.mpp = s
            .property("openslide.mpp-x")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|m| m.is_finite() && *m > 0.0);
        Ok(s)
    }

    fn check(&self) -> Result<(), SlideError> {
        // SAFETY: handle is valid until Drop.
        let e = unsafe { (self.api.get_error)(self.handle) };
        if e.is_null() {
            Ok(())
        } else {
            // SAFETY: OpenSlide returns a NUL-terminated string it owns.
            let msg = unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned();
            Err(SlideError::OpenSlide {
                path: self.path.clone(),
                msg,
            })
        }
    }

    /// A property value, if present.
    pub(crate) fn property(&self, name: &str) -> Option<String> {
        let c = CString::new(name).ok()?;
        // SAFETY: valid handle and C string; the result is owned by OpenSlide.
        let v = unsafe { (self.api.prop)(self.handle, c.as_ptr()) };
        if v.is_null() {
            None
        } else {
            // SAFETY: NUL-terminated, valid while the handle is open.
            Some(unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
        }
    }

    fn prop_u32(&self, name: &str) -> Option<u32> {
        self.property(name)?.parse().ok()
    }

    pub(crate) fn levels(&self) -> &[Level] {
        &self.levels
    }

    pub(crate) fn vendor(&self) -> &str {
        &self.vendor
    }

    pub(crate) fn mpp(&self) -> Option<f64> {
        self.mpp
    }

    /// Premultiplied ARGB, as `openslide_read_region` writes it.
    pub(crate) fn read_region_argb(
        &self,
        x: i64,
        y: i64,
        level: usize,
        w: u32,
        h: u32,
    ) -> Result<Vec<u32>, SlideError> {
        let mut buf = vec![0u32; w as usize * h as usize];
        let level = i32::try_from(level).map_err(|_| SlideError::LevelOutOfRange {
            path: self.path.clone(),
            level,
            count: self.levels.len(),
        })?;
        // SAFETY: buf holds w*h pixels.
        unsafe {
            (self.api.read_region)(
                self.handle,
                buf.as_mut_ptr(),
                x,
                y,
                level,
                i64::from(w),
                i64::from(h),
            )
        };
        self.check()?;
        Ok(buf)
    }
}

impl Drop for OpenSlide {
    fn drop(&mut self) {
        // SAFETY: handle came from openslide_open and is closed once.
        unsafe { (self.api.close)(self.handle) };
    }
}
