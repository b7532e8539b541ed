//! Writing `.npy` files, the format numpy and the CLIP tooling read.
//!
//! Format version 1.0 (<https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>):
//! magic, a little-endian `<f4` header padded to a multiple of 64 bytes, then rows.

use std::io::{self, Write};

/// Writes `rows` (all of length `dim`) as a C-order float32 array of shape (n, dim).
pub fn write_f32<W: Write>(mut w: W, rows: &[Vec<f32>], dim: usize) -> io::Result<()> {
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        dim
    );
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    w.write_all(b"\x93NUMPY\x01\x00")?;
    w.write_all(&(header.len() as u16).to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    for row in rows {
        assert_eq!(row.len(), dim, "npy rows must share one length");
        for v in row {
            w.write_all(&v.to_le_bytes())?;
        }
    }
    w.flush()
}

/// Reads back a float32 `.npy` written by [`write_f32`] (used by tests and eval).
pub fn read_f32(bytes: &[u8]) -> Option<(Vec<f32>, usize, usize)> {
    if bytes.len() < 10 || &bytes[..8] != b"\x93NUMPY\x01\x00" {
        return None;
    }
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + hlen)?).ok()?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return None;
    }
    let shape = header.split("'shape': (").nth(1)?.split(')').next()?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let (n, d) = match dims[..] {
        [n, d] => (n, d),
        [n] => (n, 1),
        _ => return None,
    };
    let data = bytes.get(10 + hlen..)?;
    if data.len() != n * d * 4 {
        return None;
    }
    let v = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Some((v, n, d))
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
        let (v, n, d) = read_f32(&buf).unwrap();
        assert_eq!((n, d), (2, 3));
        assert_eq!(v, rows.concat());
    }
}
