//! Bounded fuzzing on the stable toolchain (test builds only): inputs mutated from
//! checked-in seeds by a fixed-seed generator, so every run is the same and a failure
//! names the input. Each parser's tests call [`each_mutation`]; debug assertions are
//! on in test builds, so a `debug_assert` in a dependency counts as a crash.

/// A small deterministic generator (xorshift64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that break parsers most often.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\n",
    b"\r\n",
    b"'",
    b"\"",
    b"\\",
    b"$(",
    b"`",
    b"..",
    b"/",
    b"%",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"-",
    b"#",
    b"&",
    b"|",
    b";",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xae",
    b"0",
    b"-1",
    b"65535",
    b"4294967296",
    b"99999999999999999999",
    b"null",
    b"true",
];

/// One mutation of `input`: byte changes, insertions of interesting tokens, deletions,
/// duplications, truncation or a splice with `other`.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 => {
                let t = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, t.iter().copied());
            }
            2 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                let start = at.min(end);
                v.drain(start..end);
            }
            3 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(64)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            4 => v.truncate(at),
            5 if !other.is_empty() => {
                let cut = rng.below(other.len());
                v.truncate(at);
                v.extend_from_slice(&other[cut..]);
            }
            _ => {
                let n = rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, bytes);
            }
        }
    }
    v
}

/// Calls `f` on every seed and on `n` mutations of them (from a fixed seed). A panic
/// in `f` fails the calling test; the input is printed first.
pub fn each_mutation(seeds: &[&[u8]], n: usize, mut f: impl FnMut(&[u8])) {
    assert!(!seeds.is_empty());
    for s in seeds {
        f(s);
    }
    let mut rng = Rng::new(0x5eed_0000 + n as u64);
    for i in 0..n {
        let a = seeds[i % seeds.len()];
        let b = seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, a, b);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&input)));
        if let Err(p) = r {
            eprintln!(
                "crashing input #{i} ({} bytes): {:?}",
                input.len(),
                String::from_utf8_lossy(&input)
            );
            std::panic::resume_unwind(p);
        }
    }
}
