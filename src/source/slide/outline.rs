//! Outlines of a label mask: every connected region of one label as a polygon with
//! holes, traced on the pixel grid, so that `plip tiles --geojson` can hand the tissue
//! mask to QuPath and a user can correct it there.
//!
//! How: regions are 4-connected sets of pixels with the label. Every pixel side between
//! a region pixel and anything else (another label, the image border) is a unit edge,
//! oriented so that the region lies on its left in a y-up frame (top side left to
//! right, right side downwards, ...). The edges are chained at their shared corners
//! into closed rings. Where two region pixels touch only at a corner (a "pinch"), the
//! corner has two outgoing edges. Pixels of two regions: the ring keeps hugging the
//! pixel it came along, so the regions stay apart. Pixels of one region (it closes on
//! itself there): the ring goes on along the other pixel, so the enclosed background
//! becomes a hole. Either way every ring is simple; two rings may touch at such a
//! corner, which is a valid polygon (OGC) and what QuPath's own exports contain.
//!
//! Guarantees: rings are closed (first point == last point), have no repeated or
//! collinear points, and lie on pixel corners `0..=w` x `0..=h`. Outer rings have a
//! positive shoelace area in raw (x, y) numbers and holes a negative one (RFC 7946's
//! counter-clockwise exterior when y points up); each region has exactly one outer
//! ring, and the signed areas of its rings add up to its pixel count.

/// A closed ring of pixel-corner coordinates: first point == last point.
pub(crate) type Ring = Vec<(u32, u32)>;

/// One connected region of a label.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outline {
    /// Its boundary (positive signed area).
    pub(crate) outer: Ring,
    /// Its holes (negative signed area).
    pub(crate) holes: Vec<Ring>,
}

/// Twice the shoelace area of a closed ring, in raw (x, y) numbers.
pub(crate) fn signed_area2(ring: &[(u32, u32)]) -> i64 {
    ring.windows(2)
        .map(|p| {
            let (x0, y0) = (i64::from(p[0].0), i64::from(p[0].1));
            let (x1, y1) = (i64::from(p[1].0), i64::from(p[1].1));
            x0 * y1 - x1 * y0
        })
        .sum()
}

/// One unit edge of a region pixel.
#[derive(Clone, Copy)]
struct Edge {
    from: u64,
    to: u64,
    pixel: u32,
}

/// The 4-connected regions of the pixels equal to `label`: a component id per pixel
/// (`u32::MAX` outside) and the number of components.
fn components(data: &[u8], w: usize, h: usize, label: u8) -> (Vec<u32>, usize) {
    let mut comp = vec![u32::MAX; w * h];
    let mut n = 0u32;
    let mut stack = Vec::new();
    for start in 0..w * h {
        if data[start] != label || comp[start] != u32::MAX {
            continue;
        }
        comp[start] = n;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if data[j] == label && comp[j] == u32::MAX {
                    comp[j] = n;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        n += 1;
    }
    (comp, n as usize)
}

/// The boundary edges of every pixel with `label`, sorted by their start corner.
fn edges(data: &[u8], w: usize, h: usize, label: u8) -> Vec<Edge> {
    let vid = |x: usize, y: usize| (y * (w + 1) + x) as u64;
    let inside = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && data[y as usize * w + x as usize] == label
    };
    let mut out = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if data[y * w + x] != label {
                continue;
            }
            let pixel = (y * w + x) as u32;
            let (xi, yi) = (x as isize, y as isize);
            // top, right, bottom, left: each ends where the next one starts
            if !inside(xi, yi - 1) {
                out.push(Edge {
                    from: vid(x, y),
                    to: vid(x + 1, y),
                    pixel,
                });
            }
            if !inside(xi + 1, yi) {
                out.push(Edge {
                    from: vid(x + 1, y),
                    to: vid(x + 1, y + 1),
                    pixel,
                });
            }
            if !inside(xi, yi + 1) {
                out.push(Edge {
                    from: vid(x + 1, y + 1),
                    to: vid(x, y + 1),
                    pixel,
                });
            }
            if !inside(xi - 1, yi) {
                out.push(Edge {
                    from: vid(x, y + 1),
                    to: vid(x, y),
                    pixel,
                });
            }
        }
    }
    out.sort_by_key(|e| (e.from, e.pixel));
    out
}

/// Drops the points where the ring goes on straight, and closes it.
fn simplify(points: &[(u32, u32)]) -> Ring {
    let n = points.len();
    let dir = |a: (u32, u32), b: (u32, u32)| {
        (
            (i64::from(b.0) - i64::from(a.0)).signum(),
            (i64::from(b.1) - i64::from(a.1)).signum(),
        )
    };
    let mut ring: Ring = (0..n)
        .filter(|&i| {
            let prev = points[(i + n - 1) % n];
            let next = points[(i + 1) % n];
            dir(prev, points[i]) != dir(points[i], next)
        })
        .map(|i| points[i])
        .collect();
    if let Some(&first) = ring.first() {
        ring.push(first);
    }
    ring
}

/// Every region of the pixels equal to `label` in the row-major `w x h` image, in the
/// order of their first pixel.
pub(crate) fn trace(data: &[u8], w: usize, h: usize, label: u8) -> Vec<Outline> {
    assert_eq!(data.len(), w * h, "mask size");
    let (comp, n) = components(data, w, h, label);
    let edges = edges(data, w, h, label);
    let corner = |v: u64| ((v % (w as u64 + 1)) as u32, (v / (w as u64 + 1)) as u32);
    let mut used = vec![false; edges.len()];
    let mut outers: Vec<Vec<Ring>> = vec![Vec::new(); n];
    let mut holes: Vec<Vec<Ring>> = vec![Vec::new(); n];
    for start in 0..edges.len() {
        if used[start] {
            continue;
        }
        let mut points = Vec::new();
        let mut cur = start;
        loop {
            used[cur] = true;
            let e = edges[cur];
            points.push(corner(e.from));
            // The edges leaving e.to: one, or two at a pinch, one per diagonal pixel.
            let lo = edges.partition_point(|x| x.from < e.to);
            let hi = edges.partition_point(|x| x.from <= e.to);
            let next = if hi - lo == 1 {
                lo
            } else {
                let same_pixel = (lo..hi).find(|&i| edges[i].pixel == e.pixel);
                let other = (lo..hi).find(|&i| edges[i].pixel != e.pixel);
                match other {
                    // one region closing on itself: go on along it (outer ring and
                    // hole then touch at this corner, instead of one ring touching
                    // itself)
                    Some(o) if comp[edges[o].pixel as usize] == comp[e.pixel as usize] => o,
                    // two regions: stay around this pixel
                    _ => same_pixel.unwrap_or(lo),
                }
            };
            if next == start || used[next] {
                break;
            }
            cur = next;
        }
        let ring = simplify(&points);
        let c = comp[edges[start].pixel as usize] as usize;
        if signed_area2(&ring) > 0 {
            outers[c].push(ring);
        } else {
            holes[c].push(ring);
        }
    }
    let mut out = Vec::with_capacity(n);
    for (o, h) in outers.into_iter().zip(holes) {
        let mut o = o.into_iter();
        if let Some(first) = o.next() {
            out.push(Outline {
                outer: first,
                holes: h,
            });
        }
        // Not expected (one outer ring per 4-connected region); kept, not lost.
        out.extend(o.map(|outer| Outline {
            outer,
            holes: Vec::new(),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(rows: &[&str]) -> (Vec<u8>, usize, usize) {
        let h = rows.len();
        let w = rows[0].len();
        let data = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| b - b'0'))
            .collect();
        (data, w, h)
    }

    fn area(o: &Outline) -> i64 {
        (signed_area2(&o.outer) + o.holes.iter().map(|h| signed_area2(h)).sum::<i64>()) / 2
    }

    #[test]
    fn a_square_is_one_ring_of_its_four_corners() {
        let (d, w, h) = image(&["0000", "0110", "0110", "0000"]);
        let o = trace(&d, w, h, 1);
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].outer, vec![(1, 1), (3, 1), (3, 3), (1, 3), (1, 1)]);
        assert!(o[0].holes.is_empty());
        assert_eq!(area(&o[0]), 4);
    }

    #[test]
    fn a_ring_of_pixels_has_one_hole_with_opposite_orientation() {
        let (d, w, h) = image(&["11111", "10001", "10101", "10001", "11111"]);
        let o = trace(&d, w, h, 1);
        // the frame and the lone centre pixel
        assert_eq!(o.len(), 2);
        let frame = o.iter().find(|o| !o.holes.is_empty()).unwrap();
        assert_eq!(frame.holes.len(), 1);
        assert!(signed_area2(&frame.holes[0]) < 0);
        assert_eq!(area(frame), 16);
        for ring in std::iter::once(&frame.outer).chain(&frame.holes) {
            assert_eq!(ring.first(), ring.last());
        }
    }

    #[test]
    fn diagonal_pixels_are_separate_regions_with_simple_rings() {
        let (d, w, h) = image(&["10", "01"]);
        let o = trace(&d, w, h, 1);
        assert_eq!(o.len(), 2);
        for r in &o {
            assert_eq!(r.outer.len(), 5, "{:?}", r.outer);
            assert_eq!(area(r), 1);
        }
    }

    #[test]
    fn a_region_closing_on_itself_at_a_corner_keeps_one_outer_ring() {
        // a loop whose ends touch diagonally at (2,0)-(1,1): the enclosed zero is a hole
        let (d, w, h) = image(&["0011", "0101", "0111", "0000"]);
        let o = trace(&d, w, h, 1);
        let total: usize = d.iter().filter(|&&v| v == 1).count();
        assert_eq!(o.iter().map(area).sum::<i64>(), total as i64);
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!(o[0].holes.len(), 1, "{o:?}");
        // each ring passes the pinch corner (2, 1) once
        for ring in std::iter::once(&o[0].outer).chain(&o[0].holes) {
            let n = ring[1..].iter().filter(|&&p| p == (2, 1)).count();
            assert_eq!(n, 1, "{ring:?}");
        }
    }

    #[test]
    fn labels_are_traced_separately() {
        let (d, w, h) = image(&["1122", "1122", "0000"]);
        let t = trace(&d, w, h, 1);
        let a = trace(&d, w, h, 2);
        assert_eq!(t[0].outer, vec![(0, 0), (2, 0), (2, 2), (0, 2), (0, 0)]);
        assert_eq!(a[0].outer, vec![(2, 0), (4, 0), (4, 2), (2, 2), (2, 0)]);
    }

    #[test]
    fn areas_add_up_on_a_noisy_mask() {
        let (w, h) = (37, 29);
        let d: Vec<u8> = (0..w * h)
            .map(|i| u8::from((i * 7919 + i / 5 * 31) % 11 < 5))
            .collect();
        let o = trace(&d, w, h, 1);
        let total = d.iter().filter(|&&v| v == 1).count() as i64;
        assert_eq!(o.iter().map(area).sum::<i64>(), total);
        // one outer ring per 4-connected region
        assert_eq!(o.len(), components(&d, w, h, 1).1);
        for r in &o {
            assert!(signed_area2(&r.outer) > 0);
            assert!(r.holes.iter().all(|h| signed_area2(h) < 0));
            // simple rings: no corner twice
            for ring in std::iter::once(&r.outer).chain(&r.holes) {
                let mut c = ring[1..].to_vec();
                c.sort_unstable();
                c.dedup();
                assert_eq!(c.len(), ring.len() - 1, "{ring:?}");
            }
        }
    }
}
