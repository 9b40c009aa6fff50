//! Seeded inputs for every decoder's bounded fuzz run in CI: random bytes, and valid samples
//! with bytes flipped, inserted, removed or cut short. Each crate's tests feed its decoders
//! from here (a failure names the seed to replay with `FUZZ_SEED`) and count what they
//! allocate ([`Counting`], the test binary's global allocator): a decode may neither panic nor
//! allocate more than its input justifies. The cargo-fuzz targets in `fuzz/` explore further
//! where a nightly toolchain exists.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

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

/// What a decode of `len` input bytes may allocate at most: 64 bytes per input byte covers
/// the most inflating shapes (a list of structs of a byte each, doubled while a vector grows),
/// plus 64 KiB for a parser's own tables.
pub fn justified(len: usize) -> usize {
    64 * len + (64 << 10)
}

/// Runs `check` on the inputs of every seed: a panic, or a peak of allocations above
/// [`justified`], names the seed to replay. The test binary must count allocations
/// (`#[global_allocator] static A: Counting = Counting;`).
pub fn run(samples: &[&[u8]], max: usize, mut check: impl FnMut(&[u8])) {
    reset();
    drop(std::hint::black_box(vec![0u8; 4096]));
    assert!(
        peak() >= 4096,
        "allocations are not counted: make bramble_wire::fuzz::Counting the global allocator"
    );
    for seed in seeds() {
        let input = Inputs::new(seed).input(samples, max);
        reset();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        assert!(
            result.is_ok(),
            "decoder panicked; replay with FUZZ_SEED={seed}"
        );
        let peak = peak();
        assert!(
            peak <= justified(input.len()),
            "{} input bytes took {peak} bytes of allocations; replay with FUZZ_SEED={seed}",
            input.len()
        );
    }
}

/// A global allocator for test binaries that counts the live bytes of each thread: [`peak`]
/// is the most that were live at once since [`reset`]. Every call is forwarded to the system
/// allocator unchanged.
pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static BASE: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    // `try_with`: the thread's slots may already be gone while it exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + n;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// const-initialised thread-locals, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        add(new as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

/// Starts a new peak at what this thread has live now.
pub fn reset() {
    let live = LIVE.with(Cell::get);
    BASE.with(|b| b.set(live));
    PEAK.with(|p| p.set(live));
}

/// The most bytes this thread had live at once above the level at the last [`reset`].
pub fn peak() -> usize {
    let base = BASE.with(Cell::get);
    PEAK.with(|p| (p.get() - base).max(0) as usize)
}
