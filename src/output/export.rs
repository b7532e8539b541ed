//! `plip export OUT`: an index's vectors in clip-retrieval's layout, so the
//! engines built for 10^8 rows (autofaiss/FAISS, embedding_reader, LanceDB,
//! Qdrant) take over where plip's exact scan and per-segment graphs stop.
//!
//! ```text
//! OUT/img_emb/img_emb_{i}.npy         float32 (rows, dim), L2-normalized, C order
//! OUT/metadata/metadata_{i}.parquet   image_path [, x, y, w, h, level, mpp]
//! ```
//!
//! Part `i` of both folders holds the same rows in the same order, at most
//! `rows_per_part` (1M by default, as clip-retrieval writes them); only live
//! rows are written. `image_path` is the image's absolute path (or, with
//! `relative`, the path as stored, relative to the index's root). The region
//! columns (`x, y, w, h` in level-0 pixels, `level`, `mpp`) are written, null
//! for whole images, when the index holds any tile of a whole slide;
//! [`Row::region`] is where an entry's region is read. Parquet files are
//! written uncompressed with arrow-rs's low-level writer (the `parquet` crate
//! without its default features), which pyarrow, pandas and DuckDB read.
//! Every file is written under a temporary name and renamed into place, so an
//! interrupted export leaves no half-written part under a final name, and
//! `OUT/plip-export.json` says whether the set is complete
//! ([`export_marker`]: written incomplete first, complete last; `--resume`,
//! `--replace`).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::index::paths;
use crate::index::{FileEntry, Index};
pub(crate) use crate::output::export_marker::Mode;
use crate::output::export_marker::{self, Marker};

/// The most rows clip-retrieval puts in one part.
pub(crate) const DEFAULT_ROWS_PER_PART: usize = 1_000_000;

/// Where a tile lies in its slide: the export's region columns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct RegionColumns {
    pub(crate) x: i64,
    pub(crate) y: i64,
    pub(crate) w: i64,
    pub(crate) h: i64,
    pub(crate) level: i32,
    pub(crate) mpp: f64,
}

/// One exported row's metadata.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub(crate) image_path: String,
    pub(crate) region: Option<RegionColumns>,
}

impl Row {
    /// The region of an indexed entry: a tile's, none for a whole image.
    fn region(entry: &FileEntry) -> Option<RegionColumns> {
        entry.region.map(|r| RegionColumns {
            x: r.x as i64,
            y: r.y as i64,
            w: r.w as i64,
            h: r.h as i64,
            level: r.level as i32,
            mpp: r.mpp,
        })
    }
}

/// What an export wrote.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExportSummary {
    pub(crate) rows: usize,
    pub(crate) parts: usize,
    pub(crate) dim: usize,
    pub(crate) with_regions: bool,
    /// Parts kept from an interrupted run (`--resume`).
    pub(crate) resumed_parts: usize,
}

/// Writes the live rows of `index` to `out` (see the module docs). What `out` may
/// already hold, and what happens to it, is `mode`'s ([`export_marker::prepare`]).
pub(crate) fn export(
    index: &Index,
    out: &Path,
    rows_per_part: usize,
    relative: bool,
    mode: Mode,
) -> Result<ExportSummary> {
    if rows_per_part == 0 || rows_per_part > DEFAULT_ROWS_PER_PART {
        bail!("--rows-per-part must be between 1 and {DEFAULT_ROWS_PER_PART}");
    }
    let emb_dir = out.join("img_emb");
    let meta_dir = out.join("metadata");
    let mut marker = Marker::new(index.commit_id(), rows_per_part, relative);
    let keep_done = export_marker::prepare(out, mode, &marker)?;
    for d in [&emb_dir, &meta_dir] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Before the first part: an interrupted export is marked as such.
    marker.store(out)?;
    let root = index.root();
    let dim = index.model().dim;
    let with_regions = index.iter().any(|(e, _)| Row::region(e).is_some());
    let mut summary = ExportSummary {
        dim,
        with_regions,
        ..ExportSummary::default()
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut vectors: Vec<&[f32]> = Vec::new();
    let mut flush = |rows: &mut Vec<Row>, vectors: &mut Vec<&[f32]>| -> Result<()> {
        if rows.is_empty() && summary.parts > 0 {
            return Ok(());
        }
        let i = summary.parts;
        let npy = emb_dir.join(format!("img_emb_{i}.npy"));
        let parquet = meta_dir.join(format!("metadata_{i}.parquet"));
        if keep_done && npy.is_file() && parquet.is_file() {
            // Written (renamed into place) by the interrupted run of the same commit.
            summary.resumed_parts += 1;
        } else {
            write_new(&npy, |w| write_npy(w, vectors, dim))?;
            write_new(&parquet, |w| {
                write_parquet(w, rows, with_regions).map_err(io::Error::other)
            })?;
        }
        summary.parts += 1;
        summary.rows += rows.len();
        rows.clear();
        vectors.clear();
        Ok(())
    };
    for (entry, vector) in index.iter() {
        let image_path = if relative {
            entry.path.clone()
        } else {
            paths::resolve(&root, &entry.path)
                .to_string_lossy()
                .into_owned()
        };
        rows.push(Row {
            image_path,
            region: Row::region(entry),
        });
        vectors.push(vector);
        if rows.len() == rows_per_part {
            flush(&mut rows, &mut vectors)?;
        }
    }
    // The last part (or an empty one, so that readers find the layout).
    flush(&mut rows, &mut vectors)?;
    marker.complete = true;
    marker.parts = summary.parts;
    marker.rows = summary.rows;
    marker.dim = dim;
    marker.store(out)?;
    Ok(summary)
}

/// Writes `path` through a temporary file renamed into place.
fn write_new(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> Result<()> {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp: PathBuf = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        fill(&mut w)?;
        let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// A float32 `.npy` of the rows, streamed (no copy of the matrix).
fn write_npy(w: &mut impl Write, rows: &[&[f32]], dim: usize) -> io::Result<()> {
    crate::output::npy::write_f32_header(&mut *w, rows.len(), dim)?;
    for row in rows {
        if cfg!(target_endian = "little") {
            w.write_all(bytemuck::cast_slice(row))?;
        } else {
            for v in *row {
                w.write_all(&v.to_le_bytes())?;
            }
        }
    }
    Ok(())
}

/// The metadata schema: `image_path`, then the region columns when wanted.
fn schema(with_regions: bool) -> parquet::errors::Result<Type> {
    let mut fields = vec![Arc::new(
        Type::primitive_type_builder("image_path", PhysicalType::BYTE_ARRAY)
            .with_repetition(Repetition::REQUIRED)
            .with_logical_type(Some(LogicalType::String))
            .with_converted_type(ConvertedType::UTF8)
            .build()?,
    )];
    if with_regions {
        for (name, t) in [
            ("x", PhysicalType::INT64),
            ("y", PhysicalType::INT64),
            ("w", PhysicalType::INT64),
            ("h", PhysicalType::INT64),
            ("level", PhysicalType::INT32),
            ("mpp", PhysicalType::DOUBLE),
        ] {
            fields.push(Arc::new(
                Type::primitive_type_builder(name, t)
                    .with_repetition(Repetition::OPTIONAL)
                    .build()?,
            ));
        }
    }
    Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
}

/// One parquet file of `rows`, in one row group.
pub(crate) fn write_parquet<W: Write + Send>(
    w: W,
    rows: &[Row],
    with_regions: bool,
) -> parquet::errors::Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_created_by(format!("plip {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut file = SerializedFileWriter::new(w, Arc::new(schema(with_regions)?), Arc::new(props))?;
    let mut group = file.next_row_group()?;
    let paths: Vec<ByteArray> = rows
        .iter()
        .map(|r| ByteArray::from(r.image_path.as_bytes().to_vec()))
        .collect();
    let mut col = group.next_column()?.expect("image_path column");
    col.typed::<ByteArrayType>()
        .write_batch(&paths, None, None)?;
    col.close()?;
    if with_regions {
        let def: Vec<i16> = rows.iter().map(|r| i16::from(r.region.is_some())).collect();
        let regions: Vec<RegionColumns> = rows.iter().filter_map(|r| r.region).collect();
        let ints: [fn(&RegionColumns) -> i64; 4] = [|r| r.x, |r| r.y, |r| r.w, |r| r.h];
        for get in ints {
            let values: Vec<i64> = regions.iter().map(get).collect();
            let mut col = group.next_column()?.expect("region column");
            col.typed::<Int64Type>()
                .write_batch(&values, Some(&def), None)?;
            col.close()?;
        }
        let levels: Vec<i32> = regions.iter().map(|r| r.level).collect();
        let mut col = group.next_column()?.expect("level column");
        col.typed::<Int32Type>()
            .write_batch(&levels, Some(&def), None)?;
        col.close()?;
        let mpp: Vec<f64> = regions.iter().map(|r| r.mpp).collect();
        let mut col = group.next_column()?.expect("mpp column");
        col.typed::<DoubleType>()
            .write_batch(&mpp, Some(&def), None)?;
        col.close()?;
    }
    group.close()?;
    file.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn region_columns_round_trip_with_nulls_for_whole_images() {
        let rows = vec![
            Row {
                image_path: "a.png".into(),
                region: None,
            },
            Row {
                image_path: "s.svs".into(),
                region: Some(RegionColumns {
                    x: 448,
                    y: 0,
                    w: 448,
                    h: 448,
                    level: 1,
                    mpp: 0.5,
                }),
            },
        ];
        let mut file = tempfile::tempfile().unwrap();
        write_parquet(&mut file, &rows, true).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 2);
        let names: Vec<&str> = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .map(|c| c.name())
            .collect();
        assert_eq!(names, ["image_path", "x", "y", "w", "h", "level", "mpp"]);
        let got: Vec<String> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap().to_string())
            .collect();
        assert!(
            got[0].contains("a.png") && got[0].contains("x: null"),
            "{got:?}"
        );
        assert!(
            got[1].contains("x: 448") && got[1].contains("mpp: 0.5"),
            "{got:?}"
        );
    }
}
