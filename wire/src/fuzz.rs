//! Seeded inputs for every decoder's bounded fuzz run in CI: random bytes, and valid samples
//! with bytes flipped, inserted, removed or cut short. Each crate's tests feed its decoders
//! from here (a failure names the seed to replay with `FUZZ_SEED`); the cargo-fuzz targets in
//! `fuzz/` explore further where a nightly toolchain exists.

/// A deterministic stream of inputs (splitmix64).
#[derive(Clone, Debug)]
pub struct Inputs(u64);

impl Inputs {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// Up to `max` random bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// `sample` with one to four edits: a byte changed, inserted or removed, or the end cut.
    pub fn mutate(&mut self, sample: &[u8]) -> Vec<u8> {
        let mut out = sample.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(4) {
                0 if at < out.len() => out[at] = self.next_u64() as u8,
                1 => out.insert(at, self.next_u64() as u8),
                2 if at < out.len() => {
                    out.remove(at);
                }
                _ => out.truncate(at),
            }
        }
        out
    }

    /// Either random bytes or a mutated sample (half each).
    pub fn input(&mut self, samples: &[&[u8]], max: usize) -> Vec<u8> {
        if samples.is_empty() || self.below(2) == 0 {
            return self.bytes(max);
        }
        let sample = samples[self.below(samples.len())];
        self.mutate(sample)
    }
}

/// The seeds of a run: `FUZZ_SEED` alone (to replay a failure), or `FUZZ_RUNS` seeds (default
/// 2,000) counting from 1.
pub fn seeds() -> impl Iterator<Item = u64> {
    let one = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok());
    let runs = std::env::var("FUZZ_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let (from, count) = match one {
        Some(seed) => (seed, 1),
        None => (1, runs),
    };
    (from..).take(count)
}

/// Runs `check` on the inputs of every seed; a panic names the seed to replay.
pub fn run(samples: &[&[u8]], max: usize, mut check: impl FnMut(&[u8])) {
    for seed in seeds() {
        let input = Inputs::new(seed).input(samples, max);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        assert!(
            result.is_ok(),
            "decoder panicked; replay with FUZZ_SEED={seed}"
        );
    }
}
