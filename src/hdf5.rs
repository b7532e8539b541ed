//! HDF5 through the reference C library, loaded at run time with `libloading` as
//! OpenSlide is (Debian's `libhdf5-103-1` ships `libhdf5_serial.so.103`; 1.12 and 1.14
//! ship `.so.200` and `.so.310`). It writes the per-slide feature files of
//! `plip export --format trident|clam` and reads the coordinate files of
//! `plip index --coords`.
//!
//! Why the C library and not a pure-Rust writer: the files must open in h5py and in
//! `h5dump`, and the coordinate files plip reads are written by h5py in whatever
//! layout TRIDENT and CLAM chose (chunked, resizable, sometimes compressed). The C
//! library is the one implementation all of those use, so reading and writing through
//! it cannot disagree with them; the pure-Rust crates read only part of the format.
//!
//! Only what those files need is bound: 2-D datasets of `f32` and `i64` (stored
//! little-endian, as h5py stores NumPy's), and scalar attributes of integers, floats
//! and UTF-8 strings (variable-length, as h5py writes a Python `str`).
//!
//! Guarantees: without the library every entry point returns [`H5Error::Missing`],
//! which names the Debian package; every error names the file; the serial library is
//! not thread-safe, so every call holds one process-wide lock; the library's own
//! error printing is turned off (plip says what failed).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

type Hid = i64;
type Herr = c_int;
type Hsize = u64;

const SONAMES: &[&str] = &[
    "libhdf5_serial.so.103",
    "libhdf5.so.103",
    "libhdf5_serial.so.200",
    "libhdf5.so.200",
    "libhdf5_serial.so.310",
    "libhdf5.so.310",
    "libhdf5.so",
    "libhdf5.dylib",
];

const H5P_DEFAULT: Hid = 0;
const H5S_ALL: Hid = 0;
const H5F_ACC_RDONLY: c_uint = 0;
const H5F_ACC_TRUNC: c_uint = 2;
const H5S_SCALAR: c_int = 0;
const H5T_INTEGER: c_int = 0;
const H5T_FLOAT: c_int = 1;
const H5T_STRING: c_int = 3;
const H5T_CSET_UTF8: c_int = 1;
const H5T_VARIABLE: usize = usize::MAX;

/// What can go wrong, each naming the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H5Error {
    #[error(
        "{path}: HDF5 files need the HDF5 library, which is not installed ({why}); \
         install it (Debian/Ubuntu: `apt install libhdf5-103-1`, or the libhdf5 package \
         of your release; macOS: `brew install hdf5`)"
    )]
    Missing { path: PathBuf, why: String },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
}

/// A scalar attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Attr {
    Int(i64),
    Float(f64),
    Str(String),
}

impl Attr {
    /// The value as an integer: an integer, or a float with no fractional part.
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Attr::Int(v) => Some(*v),
            Attr::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Some(*f as i64),
            Attr::Str(s) => s.trim().parse().ok(),
            Attr::Float(_) => None,
        }
    }
}

macro_rules! api {
    ($($name:ident: fn($($arg:ty),*) -> $ret:ty;)*) => {
        #[allow(non_snake_case)]
        struct Api {
            _lib: libloading::Library,
            $($name: unsafe extern "C" fn($($arg),*) -> $ret,)*
            native_float: Hid,
            native_double: Hid,
            native_i64: Hid,
            file_f32: Hid,
            file_i64: Hid,
            c_s1: Hid,
        }

        #[allow(non_snake_case)]
        fn bind(lib: libloading::Library) -> Result<Api, libloading::Error> {
            // SAFETY: the signatures match H5*public.h for 1.10 to 1.14 (hid_t is 64-bit
            // since 1.10); the type ids are the library's globals, read after H5open.
            unsafe {
                $(let $name = *lib.get::<unsafe extern "C" fn($($arg),*) -> $ret>(
                    concat!(stringify!($name), "\0").as_bytes())?;)*
                // The type ids below are set by the library's initialisation.
                (*lib.get::<unsafe extern "C" fn() -> Herr>(b"H5open\0")?)();
                let global = |name: &[u8]| -> Result<Hid, libloading::Error> {
                    Ok(**lib.get::<*const Hid>(name)?)
                };
                let api = Api {
                    native_float: global(b"H5T_NATIVE_FLOAT_g\0")?,
                    native_double: global(b"H5T_NATIVE_DOUBLE_g\0")?,
                    native_i64: global(b"H5T_NATIVE_INT64_g\0")?,
                    file_f32: global(b"H5T_IEEE_F32LE_g\0")?,
                    file_i64: global(b"H5T_STD_I64LE_g\0")?,
                    c_s1: global(b"H5T_C_S1_g\0")?,
                    $($name,)*
                    _lib: lib,
                };
                // No error stacks on stderr: plip reports failures itself.
                (api.H5Eset_auto2)(0, std::ptr::null(), std::ptr::null_mut());
                Ok(api)
            }
        }
    };
}

api! {
    H5Eset_auto2: fn(Hid, *const c_void, *mut c_void) -> Herr;
    H5Fcreate: fn(*const c_char, c_uint, Hid, Hid) -> Hid;
    H5Fopen: fn(*const c_char, c_uint, Hid) -> Hid;
    H5Fclose: fn(Hid) -> Herr;
    H5Screate_simple: fn(c_int, *const Hsize, *const Hsize) -> Hid;
    H5Screate: fn(c_int) -> Hid;
    H5Sclose: fn(Hid) -> Herr;
    H5Sget_simple_extent_ndims: fn(Hid) -> c_int;
    H5Sget_simple_extent_dims: fn(Hid, *mut Hsize, *mut Hsize) -> c_int;
    H5Dcreate2: fn(Hid, *const c_char, Hid, Hid, Hid, Hid, Hid) -> Hid;
    H5Dopen2: fn(Hid, *const c_char, Hid) -> Hid;
    H5Dwrite: fn(Hid, Hid, Hid, Hid, Hid, *const c_void) -> Herr;
    H5Dread: fn(Hid, Hid, Hid, Hid, Hid, *mut c_void) -> Herr;
    H5Dget_space: fn(Hid) -> Hid;
    H5Dget_type: fn(Hid) -> Hid;
    H5Dclose: fn(Hid) -> Herr;
    H5Acreate2: fn(Hid, *const c_char, Hid, Hid, Hid, Hid) -> Hid;
    H5Aopen: fn(Hid, *const c_char, Hid) -> Hid;
    H5Aexists: fn(Hid, *const c_char) -> c_int;
    H5Awrite: fn(Hid, Hid, *const c_void) -> Herr;
    H5Aread: fn(Hid, Hid, *mut c_void) -> Herr;
    H5Aget_type: fn(Hid) -> Hid;
    H5Aclose: fn(Hid) -> Herr;
    H5Tcopy: fn(Hid) -> Hid;
    H5Tset_size: fn(Hid, usize) -> Herr;
    H5Tset_cset: fn(Hid, c_int) -> Herr;
    H5Tget_class: fn(Hid) -> c_int;
    H5Tget_size: fn(Hid) -> usize;
    H5Tis_variable_str: fn(Hid) -> c_int;
    H5Tclose: fn(Hid) -> Herr;
    H5free_memory: fn(*mut c_void) -> Herr;
}

fn load() -> Result<Api, String> {
    let mut errors = Vec::new();
    for name in SONAMES {
        // SAFETY: loading libhdf5 runs its initialisers, which any process may run.
        match unsafe { libloading::Library::new(name) } {
            Ok(lib) => match bind(lib) {
                Ok(api) => return Ok(api),
                Err(e) => errors.push(format!("{name}: {e}")),
            },
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    Err(errors.join("; "))
}

/// The bound library and the process-wide lock every call holds.
fn api(path: &Path) -> Result<(&'static Api, MutexGuard<'static, ()>), H5Error> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let api = API
        .get_or_init(load)
        .as_ref()
        .map_err(|why| H5Error::Missing {
            path: path.to_path_buf(),
            // The first name tried is the one Debian's package installs.
            why: why.split(';').next().unwrap_or(why).to_string(),
        })?;
    let lock = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // The library's error printing is per thread in thread-safe builds (Debian's
    // is one): turned off on the calling thread, every time.
    // SAFETY: H5E_DEFAULT (0) and no callback.
    unsafe { (api.H5Eset_auto2)(0, std::ptr::null(), std::ptr::null_mut()) };
    Ok((api, lock))
}

/// Whether the HDF5 library could be loaded.
pub(crate) fn available() -> bool {
    api(Path::new("")).is_ok()
}

/// An open HDF5 file; closed on drop.
pub(crate) struct H5File {
    path: PathBuf,
    api: &'static Api,
    id: Hid,
}

/// Closes an id on drop (datasets, spaces, types, attributes).
struct Guard(Hid, unsafe extern "C" fn(Hid) -> Herr);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: the id was returned open by the library and is closed once.
            unsafe { (self.1)(self.0) };
        }
    }
}

fn cstr(s: &str, path: &Path) -> Result<CString, H5Error> {
    CString::new(s).map_err(|_| H5Error::File {
        path: path.to_path_buf(),
        msg: format!("the name {s:?} contains a NUL byte"),
    })
}

impl H5File {
    /// Creates (or truncates) `path` for writing.
    pub(crate) fn create(path: &Path) -> Result<H5File, H5Error> {
        let (api, _lock) = api(path)?;
        let name = cstr(&path.to_string_lossy(), path)?;
        // SAFETY: a valid C string and default property lists.
        let id = unsafe { (api.H5Fcreate)(name.as_ptr(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT) };
        Self::opened(path, api, id, "could not be created")
    }

    /// Opens `path` read-only.
    pub(crate) fn open(path: &Path) -> Result<H5File, H5Error> {
        let (api, _lock) = api(path)?;
        let name = cstr(&path.to_string_lossy(), path)?;
        // SAFETY: a valid C string and the default access list.
        let id = unsafe { (api.H5Fopen)(name.as_ptr(), H5F_ACC_RDONLY, H5P_DEFAULT) };
        Self::opened(path, api, id, "is not an HDF5 file that can be read")
    }

    fn opened(path: &Path, api: &'static Api, id: Hid, what: &str) -> Result<H5File, H5Error> {
        if id < 0 {
            return Err(H5Error::File {
                path: path.to_path_buf(),
                msg: what.to_string(),
            });
        }
        Ok(H5File {
            path: path.to_path_buf(),
            api,
            id,
        })
    }

    fn err(&self, msg: String) -> H5Error {
        H5Error::File {
            path: self.path.clone(),
            msg,
        }
    }

    fn lock(&self) -> MutexGuard<'static, ()> {
        api(&self.path)
            .expect("loaded before the file was opened")
            .1
    }

    /// Writes `data` (row-major, `rows x cols`) as dataset `name`, stored as
    /// little-endian float32, with `attrs` on it.
    pub(crate) fn write_f32(
        &self,
        name: &str,
        (rows, cols): (usize, usize),
        data: &[f32],
        attrs: &[(&str, Attr)],
    ) -> Result<(), H5Error> {
        assert_eq!(data.len(), rows * cols);
        let a = self.api;
        self.write(
            name,
            (rows, cols),
            a.file_f32,
            a.native_float,
            data.as_ptr().cast(),
            attrs,
        )
    }

    /// As [`Self::write_f32`], for int64.
    pub(crate) fn write_i64(
        &self,
        name: &str,
        (rows, cols): (usize, usize),
        data: &[i64],
        attrs: &[(&str, Attr)],
    ) -> Result<(), H5Error> {
        assert_eq!(data.len(), rows * cols);
        let a = self.api;
        self.write(
            name,
            (rows, cols),
            a.file_i64,
            a.native_i64,
            data.as_ptr().cast(),
            attrs,
        )
    }

    fn write(
        &self,
        name: &str,
        (rows, cols): (usize, usize),
        file_type: Hid,
        mem_type: Hid,
        data: *const c_void,
        attrs: &[(&str, Attr)],
    ) -> Result<(), H5Error> {
        let a = self.api;
        let _lock = self.lock();
        let cname = cstr(name, &self.path)?;
        let dims = [rows as Hsize, cols as Hsize];
        // SAFETY: ids come from the library, `data` holds rows * cols values of
        // `mem_type` (checked by the callers), and every id is closed by its guard.
        unsafe {
            let space = Guard(
                (a.H5Screate_simple)(2, dims.as_ptr(), std::ptr::null()),
                a.H5Sclose,
            );
            let dset = Guard(
                (a.H5Dcreate2)(self.id, cname.as_ptr(), file_type, space.0, 0, 0, 0),
                a.H5Dclose,
            );
            if space.0 < 0 || dset.0 < 0 {
                return Err(self.err(format!("could not create the dataset {name:?}")));
            }
            if rows * cols > 0 && (a.H5Dwrite)(dset.0, mem_type, H5S_ALL, H5S_ALL, 0, data) < 0 {
                return Err(self.err(format!("could not write the dataset {name:?}")));
            }
            for (key, value) in attrs {
                self.write_attr(dset.0, name, key, value)?;
            }
        }
        Ok(())
    }

    /// One scalar attribute on object `obj` (the caller holds the lock). Integers are
    /// stored as int64 and floats as float64, as h5py stores Python's; strings as
    /// variable-length UTF-8, as h5py stores a `str`.
    fn write_attr(&self, obj: Hid, on: &str, key: &str, value: &Attr) -> Result<(), H5Error> {
        let a = self.api;
        // SAFETY: ids from the library, closed by their guards; `buf` points at one
        // value of `mem_type` (a string: one pointer to a NUL-terminated string) that
        // lives until the write returns.
        unsafe {
            let ckey = cstr(key, &self.path)?;
            let space = Guard((a.H5Screate)(H5S_SCALAR), a.H5Sclose);
            let text = match value {
                Attr::Str(s) => Some(cstr(s, &self.path)?),
                _ => None,
            };
            let text_ptr: *const c_char = text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
            let string_type = Guard(
                if text.is_some() {
                    (a.H5Tcopy)(a.c_s1)
                } else {
                    -1
                },
                a.H5Tclose,
            );
            let (stored, mem_type, buf): (Hid, Hid, *const c_void) = match value {
                Attr::Int(v) => (a.file_i64, a.native_i64, (v as *const i64).cast()),
                Attr::Float(v) => (a.native_double, a.native_double, (v as *const f64).cast()),
                Attr::Str(_) => {
                    (a.H5Tset_size)(string_type.0, H5T_VARIABLE);
                    (a.H5Tset_cset)(string_type.0, H5T_CSET_UTF8);
                    let p: *const *const c_char = &text_ptr;
                    (string_type.0, string_type.0, p.cast())
                }
            };
            let attr = Guard(
                (a.H5Acreate2)(obj, ckey.as_ptr(), stored, space.0, 0, 0),
                a.H5Aclose,
            );
            if attr.0 < 0 || (a.H5Awrite)(attr.0, mem_type, buf) < 0 {
                return Err(self.err(format!("could not write the attribute {key:?} of {on:?}")));
            }
            Ok(())
        }
    }

    /// A 2-D integer dataset as int64 (the library converts narrower integer types;
    /// a float dataset is read when every value is a whole number), with its shape.
    pub(crate) fn read_i64(&self, name: &str) -> Result<(Vec<i64>, (usize, usize)), H5Error> {
        let a = self.api;
        let _lock = self.lock();
        let cname = cstr(name, &self.path)?;
        // SAFETY: ids from the library, closed by their guards; the buffer holds as
        // many values as the dataspace has elements.
        unsafe {
            let dset = Guard((a.H5Dopen2)(self.id, cname.as_ptr(), 0), a.H5Dclose);
            if dset.0 < 0 {
                return Err(self.err(format!("has no dataset {name:?}")));
            }
            let space = Guard((a.H5Dget_space)(dset.0), a.H5Sclose);
            let rank = (a.H5Sget_simple_extent_ndims)(space.0);
            if rank != 2 {
                return Err(self.err(format!("{name:?} has {rank} dimension(s); 2 were expected")));
            }
            let mut dims = [0 as Hsize; 2];
            (a.H5Sget_simple_extent_dims)(space.0, dims.as_mut_ptr(), std::ptr::null_mut());
            let (rows, cols) = (dims[0] as usize, dims[1] as usize);
            let t = Guard((a.H5Dget_type)(dset.0), a.H5Tclose);
            let class = (a.H5Tget_class)(t.0);
            let n = rows * cols;
            let values = match class {
                H5T_INTEGER => {
                    let mut v = vec![0i64; n];
                    if n > 0
                        && (a.H5Dread)(dset.0, a.native_i64, 0, 0, 0, v.as_mut_ptr().cast()) < 0
                    {
                        return Err(self.err(format!("could not read {name:?}")));
                    }
                    v
                }
                H5T_FLOAT => {
                    let mut v = vec![0f64; n];
                    if n > 0
                        && (a.H5Dread)(dset.0, a.native_double, 0, 0, 0, v.as_mut_ptr().cast()) < 0
                    {
                        return Err(self.err(format!("could not read {name:?}")));
                    }
                    if let Some(bad) = v.iter().find(|x| x.fract() != 0.0 || !x.is_finite()) {
                        return Err(self.err(format!(
                            "{name:?} holds {bad}, which is not a whole pixel coordinate"
                        )));
                    }
                    v.into_iter().map(|x| x as i64).collect()
                }
                _ => return Err(self.err(format!("{name:?} holds neither integers nor floats"))),
            };
            Ok((values, (rows, cols)))
        }
    }

    /// A 2-D float dataset as f32, with its shape (the tests read exports back).
    #[cfg(test)]
    pub(crate) fn read_f32(&self, name: &str) -> Result<(Vec<f32>, (usize, usize)), H5Error> {
        let a = self.api;
        let _lock = self.lock();
        let cname = cstr(name, &self.path)?;
        // SAFETY: as in read_i64.
        unsafe {
            let dset = Guard((a.H5Dopen2)(self.id, cname.as_ptr(), 0), a.H5Dclose);
            if dset.0 < 0 {
                return Err(self.err(format!("has no dataset {name:?}")));
            }
            let space = Guard((a.H5Dget_space)(dset.0), a.H5Sclose);
            if (a.H5Sget_simple_extent_ndims)(space.0) != 2 {
                return Err(self.err(format!("{name:?} is not 2-D")));
            }
            let mut dims = [0 as Hsize; 2];
            (a.H5Sget_simple_extent_dims)(space.0, dims.as_mut_ptr(), std::ptr::null_mut());
            let n = (dims[0] * dims[1]) as usize;
            let mut v = vec![0f32; n];
            if n > 0 && (a.H5Dread)(dset.0, a.native_float, 0, 0, 0, v.as_mut_ptr().cast()) < 0 {
                return Err(self.err(format!("could not read {name:?}")));
            }
            Ok((v, (dims[0] as usize, dims[1] as usize)))
        }
    }

    /// Scalar attribute `key` of dataset `name`: `None` when it is absent or of a kind
    /// plip does not read (arrays, compound types).
    pub(crate) fn attr(&self, name: &str, key: &str) -> Result<Option<Attr>, H5Error> {
        let a = self.api;
        let _lock = self.lock();
        let (cname, ckey) = (cstr(name, &self.path)?, cstr(key, &self.path)?);
        // SAFETY: ids from the library, closed by their guards; a variable-length
        // string is one pointer the library allocated, freed with H5free_memory.
        unsafe {
            let dset = Guard((a.H5Dopen2)(self.id, cname.as_ptr(), 0), a.H5Dclose);
            if dset.0 < 0 {
                return Err(self.err(format!("has no dataset {name:?}")));
            }
            if (a.H5Aexists)(dset.0, ckey.as_ptr()) <= 0 {
                return Ok(None);
            }
            let attr = Guard((a.H5Aopen)(dset.0, ckey.as_ptr(), 0), a.H5Aclose);
            let t = Guard((a.H5Aget_type)(attr.0), a.H5Tclose);
            Ok(match (a.H5Tget_class)(t.0) {
                H5T_INTEGER => {
                    let mut v = 0i64;
                    ((a.H5Aread)(attr.0, a.native_i64, (&mut v as *mut i64).cast()) >= 0)
                        .then_some(Attr::Int(v))
                }
                H5T_FLOAT => {
                    let mut v = 0f64;
                    ((a.H5Aread)(attr.0, a.native_double, (&mut v as *mut f64).cast()) >= 0)
                        .then_some(Attr::Float(v))
                }
                H5T_STRING if (a.H5Tis_variable_str)(t.0) > 0 => {
                    let mut p: *mut c_char = std::ptr::null_mut();
                    if (a.H5Aread)(attr.0, t.0, (&mut p as *mut *mut c_char).cast()) < 0
                        || p.is_null()
                    {
                        return Ok(None);
                    }
                    let s = CStr::from_ptr(p).to_string_lossy().into_owned();
                    (a.H5free_memory)(p.cast());
                    Some(Attr::Str(s))
                }
                H5T_STRING => {
                    let size = (a.H5Tget_size)(t.0);
                    let mut buf = vec![0u8; size];
                    if (a.H5Aread)(attr.0, t.0, buf.as_mut_ptr().cast()) < 0 {
                        return Ok(None);
                    }
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(size);
                    Some(Attr::Str(
                        String::from_utf8_lossy(&buf[..end]).trim_end().to_string(),
                    ))
                }
                _ => None,
            })
        }
    }

    /// Flushes and closes the file, reporting a failure (drop closes silently).
    pub(crate) fn close(mut self) -> Result<(), H5Error> {
        let _lock = self.lock();
        let id = std::mem::replace(&mut self.id, -1);
        // SAFETY: the file id is open and closed once.
        if unsafe { (self.api.H5Fclose)(id) } < 0 {
            return Err(self.err("could not be closed (the disk may be full)".into()));
        }
        Ok(())
    }
}

impl Drop for H5File {
    fn drop(&mut self) {
        if self.id >= 0 {
            let _lock = self.lock();
            // SAFETY: the file id is open and closed once.
            unsafe { (self.api.H5Fclose)(self.id) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_and_attributes_round_trip_through_the_c_library() {
        if !available() {
            eprintln!("SKIPPED: no HDF5 library (.ci/run installs libhdf5-103-1)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.h5");
        let f = H5File::create(&path).unwrap();
        let feats: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        f.write_f32(
            "features",
            (3, 2),
            &feats,
            &[("encoder", Attr::Str("plip".into()))],
        )
        .unwrap();
        let coords = [0i64, 0, 448, 0, 896, 448];
        f.write_i64(
            "coords",
            (3, 2),
            &coords,
            &[
                ("patch_size", Attr::Int(224)),
                ("mpp", Attr::Float(0.5)),
                ("name", Attr::Str("é/x".into())),
            ],
        )
        .unwrap();
        f.write_f32("empty", (0, 512), &[], &[]).unwrap();
        f.close().unwrap();

        let f = H5File::open(&path).unwrap();
        assert_eq!(f.read_f32("features").unwrap(), (feats, (3, 2)));
        assert_eq!(f.read_i64("coords").unwrap(), (coords.to_vec(), (3, 2)));
        assert_eq!(f.read_f32("empty").unwrap(), (vec![], (0, 512)));
        assert_eq!(
            f.attr("coords", "patch_size").unwrap(),
            Some(Attr::Int(224))
        );
        assert_eq!(f.attr("coords", "mpp").unwrap(), Some(Attr::Float(0.5)));
        assert_eq!(
            f.attr("coords", "name").unwrap(),
            Some(Attr::Str("é/x".into()))
        );
        assert_eq!(
            f.attr("features", "encoder").unwrap(),
            Some(Attr::Str("plip".into()))
        );
        assert_eq!(f.attr("coords", "absent").unwrap(), None);
        assert!(f.read_i64("nope").unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn a_file_that_is_not_hdf5_is_named() {
        if !available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.h5");
        std::fs::write(&path, b"not hdf5").unwrap();
        let e = H5File::open(&path).err().unwrap().to_string();
        assert!(e.contains("x.h5") && e.contains("not an HDF5 file"), "{e}");
    }
}
