//! Writing `.npy` files, the format numpy and the CLIP tooling read.
//!
//! Format version 1.0 (<https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>):
//! magic, a little-endian `<f4` header padded to a multiple of 64 bytes, then rows.

use std::io::{self, Write};

/// Writes `rows` (all of length `dim`) as a C-order float32 array of shape (n, dim).
pub fn write_f32<W: Write>(mut w: W, rows: &[Vec<f32>], dim: usize) -> io::Result<()> {
    write_f32_header(&mut w, rows.len(), dim)?;
    for row in rows {
        assert_eq!(row.len(), dim, "npy rows must share one length");
        for v in row {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.flush()
}

/// Writes the magic and header of a float32 array of shape (rows, dim); the
/// caller writes the rows' little-endian values after it.
pub(crate) fn write_f32_header<W: Write>(mut w: W, rows: usize, dim: usize) -> io::Result<()> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_round_trips() {
        let rows = vec![vec![1.0, -2.5, 3.25], vec![0.0, 0.5, 1e-8]];
        let mut buf = Vec::new();
        write_f32(&mut buf, &rows, 3).unwrap();
        let hlen = u16::from_le_bytes([buf[8], buf[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&buf[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (2, 3)"), "{header}");
        let data: Vec<f32> = buf[10 + hlen..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(data, rows.concat());
    }
}
