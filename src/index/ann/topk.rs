//! Ranking order (score descending, then id ascending) and a bounded top-k
//! collector, shared by exact and graph search so both rank identically.

use super::*;

/// `Less` means `a` ranks before `b`: higher score first, then lower id.
#[inline]
pub(crate) fn rank_cmp(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.id.cmp(&b.id))
}

pub(crate) fn sort_hits(hits: &mut [Hit]) {
    hits.sort_unstable_by(rank_cmp);
}

/// Keeps the `k` best hits in amortized O(1) per push (buffer of `2k`,
/// partial selection when full) instead of sorting everything.
pub(crate) struct TopK {
    k: usize,
    buf: Vec<Hit>,
    worst: Option<Hit>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            buf: Vec::with_capacity(k.saturating_mul(2).min(4096)),
            worst: None,
        }
    }

    /// Whether [`TopK::push`] would keep `h` now.
    #[inline]
    pub(crate) fn admits(&self, h: &Hit) -> bool {
        self.worst
            .as_ref()
            .is_none_or(|w| rank_cmp(h, w) == Ordering::Less)
    }

    #[inline]
    pub(crate) fn push(&mut self, h: Hit) {
        if !self.admits(&h) {
            return;
        }
        self.buf.push(h);
        if self.buf.len() >= self.k.saturating_mul(2).max(64) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        if self.k > 0 && self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, rank_cmp);
            self.buf.truncate(self.k);
            self.worst = self.buf.iter().copied().max_by(rank_cmp);
        }
    }

    pub(crate) fn merge(mut self, other: TopK) -> TopK {
        for h in other.buf {
            self.push(h);
        }
        self
    }

    pub(crate) fn finish(mut self) -> Vec<Hit> {
        sort_hits(&mut self.buf);
        self.buf.truncate(self.k);
        self.buf
    }
}
