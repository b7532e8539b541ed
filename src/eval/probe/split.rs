//! The stratified train/test split of `plip eval linear-probe`, bit-for-bit as PLIP's dataset
//! scripts make it with pandas.
//!
//! PLIP splits each group with `df.sample(frac=1, random_state=seed)` and keeps the first
//! `int(len * 0.7)` rows for training (`process_PanNuke` in
//! `reproducibility/generate_validation_datasets/_dataset_loader.py`, PathologyFoundation/plip
//! at f010f3d). pandas' `sample` is `np.random.RandomState(seed).choice(n, n, replace=False)`,
//! which is `RandomState(seed).permutation(n)`: numpy's legacy MT19937 seeded with
//! `init_genrand(seed)`, then a Fisher-Yates shuffle drawing `j` in `0..=i` by masked
//! rejection sampling of 32-bit outputs (`random_interval` in numpy's `distributions.c`). This
//! file reimplements exactly that, so a split here equals the one numpy makes for the same
//! seed; `fixtures/linear_probe_golden.py` stores numpy's permutations and the tests compare.

/// numpy's legacy MT19937 (`RandomState`), 32-bit outputs only.
struct Mt19937 {
    state: [u32; 624],
    pos: usize,
}

impl Mt19937 {
    /// `RandomState(seed)` for an integer seed (`mt19937_seed`, which is `init_genrand`).
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, pos: 624 }
    }

    fn twist(&mut self) {
        for i in 0..624 {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[i] = self.state[(i + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `0..=max` (numpy's `random_interval` for `max < 2^32`).
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }
}

/// `np.random.RandomState(seed).permutation(n)`.
pub(crate) fn numpy_permutation(seed: u32, n: usize) -> Vec<usize> {
    let mut rng = Mt19937::new(seed);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // n fits in u32 for any data set an eval holds in memory; larger would be a bug
        let j = rng.interval(u32::try_from(i).expect("fewer than 2^32 items")) as usize;
        v.swap(i, j);
    }
    v
}

/// Stratified split of `labels` (class ids): per class, ascending, the class's positions in
/// input order are permuted with [`numpy_permutation`]`(seed, n_c)` and the first
/// `int(n_c * ratio)` go to the first list. Both lists come back sorted ascending.
pub(crate) fn stratified_split(
    labels: &[usize],
    seed: u32,
    ratio: f64,
) -> (Vec<usize>, Vec<usize>) {
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for c in classes {
        let idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        let perm = numpy_permutation(seed, idx.len());
        // Python's int(n * ratio): truncation of the float64 product
        let k = (idx.len() as f64 * ratio) as usize;
        for (rank, &p) in perm.iter().enumerate() {
            if rank < k {
                first.push(idx[p]);
            } else {
                second.push(idx[p]);
            }
        }
    }
    first.sort_unstable();
    second.sort_unstable();
    (first, second)
}
