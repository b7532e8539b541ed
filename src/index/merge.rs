//! Joining shard indexes into one: `plip merge SHARD... --index OUT`.
//!
//! The merged index's segments *are* the shards' segments: every segment file
//! is hard-linked into OUT under a new name (copied where a link is impossible,
//! such as across file systems), never re-embedded and never re-graphed; search
//! already fans out over segments, each with its own graph, and merges their
//! hits. The work therefore grows with the number of segments; per row, only
//! the small `.meta` file is rewritten, and only when the shards' paths must be
//! rebased (stored paths are relative to an index's root, its folder's parent,
//! so `shards/3/` stores `../images/a.png` where `OUT` beside `images/` stores
//! `images/a.png`). Every shard file is checked (length, magic, version, CRC32)
//! before anything is linked.
//!
//! Guarantees:
//! * every shard is checked, and locked against a running `plip index`, and OUT
//!   is checked, before anything changes; a bad input is a typed error naming
//!   the folder and the fix;
//! * the commit is the manifest, written last and atomically, after every
//!   segment file is in place under a name no commit has used: a crash or
//!   `kill -9` leaves OUT as it was (plus unnamed files that the next writer
//!   removes) or fully merged;
//! * shards built with another model or other tiling options are refused, with
//!   a message that names both;
//! * an item found in several shards is kept once (from the first shard that
//!   has it, in the order given) and reported; the others are tombstoned.
//!   Items are matched by path: a slide's tiles all come from one shard, since
//!   shards split by file path.

use super::*;

use super::paths;

/// Why a merge was refused. Nothing has been changed when one is returned.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MergeError {
    /// No shard given.
    #[error("no shard indexes given; run `plip merge SHARD... --index OUT`")]
    NoShards,
    /// A shard folder does not exist.
    #[error(
        "shard {0} does not exist (check the path, or that its `plip index --shard` task ran)"
    )]
    MissingShard(PathBuf),
    /// The same folder given twice, or OUT among the shards.
    #[error("{0} is given twice (as two shards, or as a shard and as --index OUT)")]
    Repeated(PathBuf),
    /// Shards of different models.
    #[error(
        "shards {a} and {b} were built with different models: {a_model} and {b_model}; \
         index every shard with the same --model"
    )]
    ModelMismatch {
        a: PathBuf,
        b: PathBuf,
        /// `source` (fingerprint F, D-d)
        a_model: String,
        b_model: String,
    },
    /// Shards whose slides were tiled differently.
    #[error(
        "shards {a} and {b} tiled their slides differently ({a_tiling} and {b_tiling}); \
         index every shard with the same tiling options"
    )]
    TilingMismatch {
        a: PathBuf,
        b: PathBuf,
        a_tiling: String,
        b_tiling: String,
    },
    /// OUT holds an index and `--replace` was not given.
    #[error(
        "{0} already holds a plip index; pass --replace to replace it with the merge \
         (searches keep seeing the old index until the merge commits), or choose \
         another --index"
    )]
    OutExists(PathBuf),
    /// A shard or OUT cannot be used: locked, corrupt, not an index, I/O.
    #[error("{context}")]
    Store {
        /// Which folder.
        context: String,
        /// The cause.
        source: StoreError,
    },
}

fn store_err(context: impl Into<String>) -> impl FnOnce(StoreError) -> MergeError {
    let context = context.into();
    move |source| MergeError::Store { context, source }
}

/// What a merge did.
#[derive(Clone, Debug, Default)]
pub(crate) struct MergeReport {
    /// Shards merged.
    pub(crate) shards: usize,
    /// Segments in the merged index.
    pub(crate) segments: usize,
    /// Live items in the merged index.
    pub(crate) items: usize,
    /// Items found in more than one shard: (path, shard kept, shard dropped).
    pub(crate) duplicates: Vec<(String, PathBuf, PathBuf)>,
    /// Files hard-linked and copied.
    pub(crate) linked: usize,
    /// Files copied (no hard link possible).
    pub(crate) copied: usize,
    /// Paths were rewritten for OUT's root.
    pub(crate) rebased: bool,
    /// The manifest generation committed.
    pub(crate) generation: u64,
}

/// One checked, locked shard.
struct OpenShard {
    dir: PathBuf,
    manifest: Manifest,
    segments: Vec<ShardSegment>,
    _lock: Option<File>,
}

/// Merges the shard indexes `shards` into the index at `out` (created, or, with
/// `replace`, replaced), as the module docs say.
pub(crate) fn merge(
    shards: &[PathBuf],
    out: &Path,
    replace: bool,
) -> std::result::Result<MergeReport, MergeError> {
    if shards.is_empty() {
        return Err(MergeError::NoShards);
    }
    // 1. Check everything; change nothing.
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let open = open_shards(shards, &out)?;
    let tiling = agreed_tiling(&open)?;
    let out_ctx = || format!("cannot merge into {}", out.display());
    check_index_folder(&out).map_err(store_err(out_ctx()))?;
    let previous = match Manifest::load(&out) {
        Ok(m) if !replace => {
            let _ = m;
            return Err(MergeError::OutExists(out.clone()));
        }
        Ok(m) => Some(m),
        Err(StoreError::NoIndex(_)) => None,
        // A damaged index in OUT: --replace may overwrite it, as --rebuild does.
        Err(_) if replace => None,
        Err(e) => return Err(store_err(out_ctx())(e)),
    };

    // 2. Take OUT (creating it) and place every segment file under a new name.
    fs::create_dir_all(&out)
        .map_err(io_err(format!("creating {}", out.display())))
        .map_err(store_err(out_ctx()))?;
    let _out_lock = take_lock(&out, true)
        .map_err(store_err(out_ctx()))?
        .expect("created");
    let out_root = root_of(&out);
    let mut next_id = next_free_segment(&out);
    if let Some(p) = &previous {
        next_id = next_id.max(p.next_segment);
    }
    let mut report = MergeReport {
        shards: open.len(),
        ..MergeReport::default()
    };
    let mut created: Vec<PathBuf> = Vec::new();
    let placed = place_segments(
        &open,
        &out,
        &out_root,
        &mut next_id,
        &mut report,
        &mut created,
    );
    let placed = match placed {
        Ok(r) => r,
        Err(e) => {
            for f in &created {
                let _ = fs::remove_file(f);
            }
            return Err(store_err(out_ctx())(e));
        }
    };
    let sync = sync_dir(&out).map_err(io_err(format!("syncing {}", out.display())));
    sync.map_err(store_err(out_ctx()))?;

    // 3. Commit: the one manifest, written last.
    failpoint("merge-before-manifest");
    // The first shard's manifest carries what every shard agrees on (the model).
    let mut manifest = open[0].manifest.clone();
    manifest.generation = previous.as_ref().map_or(0, |p| p.generation);
    manifest.next_segment = next_id;
    manifest.segments = placed.records;
    manifest.roots = placed.roots;
    manifest.slides = placed.slides;
    manifest.tiling = tiling;
    report.items = manifest
        .segments
        .iter()
        .map(|s| s.rows - s.deleted.len())
        .sum();
    report.segments = manifest.segments.len();
    manifest.last_run = RunStats {
        added: report.items,
        ..RunStats::default()
    };
    manifest.store(&out).map_err(store_err(out_ctx()))?;
    report.generation = manifest.generation;
    // What the previous commit named, and leftovers of crashed merges, go now.
    remove_unreferenced(&out, &manifest.file_names());
    Ok(report)
}

/// Opens every shard (each an existing folder, none named twice, none the output)
/// and checks that they were built by the same model.
fn open_shards(shards: &[PathBuf], out: &Path) -> std::result::Result<Vec<OpenShard>, MergeError> {
    let out_canon = out.canonicalize().ok();
    let mut seen: Vec<PathBuf> = out_canon.iter().cloned().collect();
    let mut open = Vec::with_capacity(shards.len());
    for dir in shards {
        if !dir.is_dir() {
            return Err(MergeError::MissingShard(dir.clone()));
        }
        let canon = dir
            .canonicalize()
            .map_err(|_| MergeError::MissingShard(dir.clone()))?;
        if seen.contains(&canon) {
            return Err(MergeError::Repeated(dir.clone()));
        }
        seen.push(canon);
        open.push(open_shard(dir)?);
    }
    let first = &open[0];
    for s in &open[1..] {
        let (a, b) = (&first.manifest.model, &s.manifest.model);
        if !a.same_model(b) {
            let describe = |m: &ModelInfo| {
                format!(
                    "`{}` (fingerprint {}, {}-d)",
                    m.source, m.fingerprint, m.dim
                )
            };
            return Err(MergeError::ModelMismatch {
                a: first.dir.clone(),
                b: s.dir.clone(),
                a_model: describe(a),
                b_model: describe(b),
            });
        }
    }
    Ok(open)
}

/// The shards' common tiling: shards without slides record none; those that have
/// slides must agree.
fn agreed_tiling(open: &[OpenShard]) -> std::result::Result<Option<Tiling>, MergeError> {
    let tiled: Vec<(&OpenShard, Tiling)> = open
        .iter()
        .filter_map(|s| s.manifest.tiling.map(|t| (s, t)))
        .collect();
    if let Some(&(s0, t0)) = tiled.first() {
        if let Some(&(other, t)) = tiled.iter().find(|(_, t)| !t.same_grid(&t0)) {
            return Err(MergeError::TilingMismatch {
                a: s0.dir.clone(),
                b: other.dir.clone(),
                a_tiling: t0.describe(),
                b_tiling: t.describe(),
            });
        }
    }
    Ok(tiled.first().map(|&(_, t)| t))
}

/// A shard's segment, checked: its record and its entries.
struct ShardSegment {
    record: SegmentRecord,
    entries: Vec<FileEntry>,
}

/// Locks and checks one shard: its manifest, and every file it names.
fn open_shard(dir: &Path) -> std::result::Result<OpenShard, MergeError> {
    let ctx = || format!("cannot merge shard {}", dir.display());
    let lock = take_lock(dir, false).map_err(store_err(ctx()))?;
    let manifest = Manifest::load(dir).map_err(store_err(ctx()))?;
    let mut segments = Vec::with_capacity(manifest.segments.len());
    for r in &manifest.segments {
        let segment = check_segment(dir, r, manifest.model.dim).map_err(store_err(ctx()))?;
        segments.push(segment);
    }
    Ok(OpenShard {
        dir: dir.to_path_buf(),
        manifest,
        segments,
        _lock: lock,
    })
}

/// Checks every file of a segment as `Segment::load` does (length, magic,
/// version, CRC32, entry count, tombstones), but streams the vectors and graph
/// through the checksum instead of mapping them: a merge's memory does not grow
/// with the vectors.
fn check_segment(dir: &Path, r: &SegmentRecord, dim: usize) -> Result<ShardSegment> {
    let vec_len = 12 + (r.rows * dim * 4) as u64 + 4;
    if r.vec.len != vec_len {
        return Err(corrupt(
            &dir.join(&r.vec.name),
            "vector count does not match the manifest",
        ));
    }
    stream_check(dir, &r.vec, Some(VEC_MAGIC))?;
    for f in &r.hnsw {
        stream_check(dir, f, None)?;
    }
    let meta = read_framed(dir, &r.meta, META_MAGIC)?;
    let meta_path = dir.join(&r.meta.name);
    let (entries, _): (Vec<FileEntry>, usize) =
        bincode::serde::decode_from_slice(&meta, bincode_config())
            .map_err(|e| corrupt(&meta_path, format!("undecodable metadata: {e}")))?;
    if entries.len() != r.rows {
        return Err(corrupt(
            &meta_path,
            "entry count does not match the manifest",
        ));
    }
    if let Some(bad) = r.deleted.iter().find(|&&d| d as usize >= r.rows) {
        return Err(corrupt(
            &dir.join(MANIFEST),
            format!(
                "tombstone {bad} of {} is past its {} rows",
                r.vec.name, r.rows
            ),
        ));
    }
    Ok(ShardSegment {
        record: r.clone(),
        entries,
    })
}

/// Reads `r` in 1 MiB pieces and checks its length and CRC32 against the
/// manifest; for a framed file (`magic`), also its header and trailing CRC.
fn stream_check(dir: &Path, r: &FileRef, magic: Option<&[u8; 8]>) -> Result<()> {
    let path = dir.join(&r.name);
    let mut file = File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
    let len = file
        .metadata()
        .map_err(io_err(format!("reading {}", path.display())))?
        .len();
    if len != r.len || (magic.is_some() && len < 16) {
        return Err(corrupt(&path, "size differs from the manifest"));
    }
    // Framed files: the record's CRC covers all but the trailing 4 bytes.
    let covered = if magic.is_some() { len - 4 } else { len };
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let read_err = || io_err(format!("reading {}", path.display()));
    while done < covered {
        let want = buf.len().min((covered - done) as usize);
        file.read_exact(&mut buf[..want]).map_err(read_err())?;
        if done == 0 {
            if let Some(m) = magic {
                let version = u32::from_le_bytes(buf[8..12].try_into().unwrap());
                if &buf[..8] != m || version != FORMAT_VERSION {
                    return Err(corrupt(&path, "bad magic or file version"));
                }
            }
        }
        crc.update(&buf[..want]);
        done += want as u64;
    }
    let computed = crc.finalize();
    if magic.is_some() {
        let mut tail = [0u8; 4];
        file.read_exact(&mut tail).map_err(read_err())?;
        if u32::from_le_bytes(tail) != computed {
            return Err(corrupt(&path, "checksum mismatch"));
        }
    }
    if computed != r.crc32 {
        return Err(corrupt(&path, "checksum differs from the manifest"));
    }
    Ok(())
}

/// Links (or copies) every shard segment into `out` under new ids, rewriting
/// `.meta` where paths must be rebased, and tombstones rows of items an earlier
/// shard has. Returns the new segment records and the rebased roots.
fn place_segments(
    open: &[OpenShard],
    out: &Path,
    out_root: &Path,
    next_id: &mut u64,
    report: &mut MergeReport,
    created: &mut Vec<PathBuf>,
) -> Result<Placed> {
    // Which shard holds each path first.
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut records = Vec::new();
    let mut roots: Vec<String> = Vec::new();
    let mut slides: BTreeMap<String, SlideRecord> = BTreeMap::new();
    for (si, shard) in open.iter().enumerate() {
        let root = root_of(&shard.dir);
        let rebase = root != out_root;
        let rebased = |p: &str| -> String {
            if rebase {
                paths::relative(&paths::resolve(&root, p), out_root)
            } else {
                p.to_string()
            }
        };
        report.rebased |= rebase;
        roots.extend(shard.manifest.roots.iter().map(|r| rebased(r)));
        for seg in &shard.segments {
            let old = &seg.record;
            let id = *next_id;
            *next_id += 1;
            let rename = |name: &str| -> String {
                let old_base = format!("seg-{:06}", old.id);
                match name.strip_prefix(&old_base) {
                    Some(rest) => format!("seg-{id:06}{rest}"),
                    None => format!("seg-{id:06}.{name}"),
                }
            };
            let mut entries = seg.entries.clone();
            if rebase {
                for e in &mut entries {
                    e.path = rebased(&e.path);
                }
            }
            let deleted = first_owner_wins(&entries, &old.deleted, si, &mut owner, open, report);
            let mut place = |f: &FileRef| -> Result<FileRef> {
                let name = rename(&f.name);
                let to = out.join(&name);
                let copied = link_or_copy(&shard.dir.join(&f.name), &to)?;
                created.push(to);
                if copied {
                    report.copied += 1;
                } else {
                    report.linked += 1;
                }
                Ok(FileRef { name, ..f.clone() })
            };
            let vec = place(&old.vec)?;
            let hnsw = old
                .hnsw
                .iter()
                .map(&mut place)
                .collect::<Result<Vec<_>>>()?;
            // Regions carry no paths: the file is linked as it is.
            let regions = old.regions.as_ref().map(&mut place).transpose()?;
            let meta = if rebase {
                let name = rename(&old.meta.name);
                let bytes = bincode::serde::encode_to_vec(&entries, bincode_config())
                    .expect("entries serialize");
                created.push(out.join(&name));
                write_framed(out, &name, META_MAGIC, &bytes)?
            } else {
                place(&old.meta)?
            };
            // The update is empty today; it carries any field a record gains.
            #[allow(clippy::needless_update)]
            records.push(SegmentRecord {
                id,
                rows: old.rows,
                vec,
                meta,
                hnsw,
                hnsw_basename: old.hnsw_basename.as_deref().map(rename),
                deleted,
                regions,
                // Every file a record names must be placed above: a field that
                // names a new kind of file needs its own line here.
                ..old.clone()
            });
        }
        // What the shard's runs recorded per slide, unless an earlier shard has
        // that slide (its tiles were kept from there).
        for (path, record) in &shard.manifest.slides {
            let path = rebased(path);
            if owner.get(&path).is_none_or(|&first| first == si) {
                slides.entry(path).or_insert_with(|| record.clone());
            }
        }
    }
    roots.sort();
    roots.dedup();
    let all = roots.clone();
    roots.retain(|r| !all.iter().any(|o| o != r && paths::is_under(r, o)));
    Ok(Placed {
        records,
        roots,
        slides,
    })
}

/// The tombstones of a segment of shard `si` after the merge: its own, plus every
/// row of an item that an earlier shard already holds (reported as a duplicate).
/// Items seen first here are recorded in `owner`.
fn first_owner_wins(
    entries: &[FileEntry],
    tombstones: &[u32],
    si: usize,
    owner: &mut HashMap<String, usize>,
    open: &[OpenShard],
    report: &mut MergeReport,
) -> Vec<u32> {
    let mut deleted: Vec<u32> = tombstones.to_vec();
    let dead: HashSet<u32> = tombstones.iter().copied().collect();
    for (row, e) in entries.iter().enumerate() {
        if dead.contains(&(row as u32)) {
            continue;
        }
        match owner.get(&e.path) {
            Some(&first) if first != si => {
                deleted.push(row as u32);
                report.duplicates.push((
                    e.path.clone(),
                    open[first].dir.clone(),
                    open[si].dir.clone(),
                ));
            }
            Some(_) => {}
            None => {
                owner.insert(e.path.clone(), si);
            }
        }
    }
    deleted.sort_unstable();
    deleted.dedup();
    deleted
}

/// The merged index's segments, folders and slide records.
struct Placed {
    records: Vec<SegmentRecord>,
    roots: Vec<String>,
    slides: BTreeMap<String, SlideRecord>,
}

/// Hard-links `from` to the new name `to`, or copies it (and syncs the copy)
/// where a link cannot be made. Returns true when it copied.
fn link_or_copy(from: &Path, to: &Path) -> Result<bool> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(false);
    }
    let copy = || -> io::Result<()> {
        let mut src = File::open(from)?;
        let mut dst = OpenOptions::new().write(true).create_new(true).open(to)?;
        io::copy(&mut src, &mut dst)?;
        dst.sync_all()
    };
    copy().map_err(|e| {
        let _ = fs::remove_file(to);
        io_err(format!("copying {} to {}", from.display(), to.display()))(e)
    })?;
    Ok(true)
}

/// `PLIP_FAILPOINT=merge-before-manifest:0` stops a merge after every segment
/// file is placed and before the manifest is written, until the process is
/// killed: what a crash there leaves is what the tests check. (Also
/// `h5-export-before-rename`, in `output/h5_export.rs`.)
pub(crate) fn failpoint(name: &str) {
    let Ok(spec) = std::env::var("PLIP_FAILPOINT") else {
        return;
    };
    if spec.split(':').next() == Some(name) {
        eprintln!("plip: failpoint {name} reached");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
