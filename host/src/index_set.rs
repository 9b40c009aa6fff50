//! A growable bitset of result indices: which results went out (host) or came in (client)
//! already, so a result is shown once even when it is sent twice. A job can have millions.

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct IndexSet(Vec<u64>);

impl IndexSet {
    /// Adds `index`; true if it was not in the set.
    pub fn insert(&mut self, index: u64) -> bool {
        let Ok(word) = usize::try_from(index / 64) else {
            return false;
        };
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let bit = 1u64 << (index % 64);
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    pub fn contains(&self, index: u64) -> bool {
        usize::try_from(index / 64)
            .ok()
            .and_then(|w| self.0.get(w))
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_once() {
        let mut s = IndexSet::default();
        assert!(s.insert(0) && s.insert(64) && s.insert(1_000_003));
        assert!(!s.insert(64));
        assert!(s.contains(1_000_003) && !s.contains(63) && !s.contains(u64::MAX));
    }
}
