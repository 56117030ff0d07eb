//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights: a lookup table of prime
//! size in which each member owns slots in proportion to its weight, built so that removing one
//! member reassigns mostly that member's own slots. The XDP program looks flows up in this table
//! (new flows only; a conntrack map keeps established flows on their member); userspace builds it.

/// Default table size: a prime comfortably above 100 × the member count of large pools.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size must be prime for every member's permutation to visit every slot.
    NotPrime(u32),
    /// The table must be larger than the total weight handed out.
    TooSmall { size: u32, total_weight: u64 },
}

impl std::fmt::Display for MaglevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaglevError::NotPrime(n) => write!(f, "Maglev table size {n} is not prime"),
            MaglevError::TooSmall { size, total_weight } => write!(f, "Maglev table size {size} is not larger than the total weight {total_weight}"),
        }
    }
}

impl std::error::Error for MaglevError {}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = n as u64;
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// 64-bit FNV-1a with a seed: stable across platforms and releases, unlike `std`'s hasher.
pub fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A built table: `slots[i]` is the index (into the member list given to [`Table::build`]) of
/// the member owning slot `i`, or `u32::MAX` when no member has weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub slots: Vec<u32>,
}

pub const NO_MEMBER: u32 = u32::MAX;

impl Table {
    /// Builds the table for `members` (stable key, weight) with `size` slots. Members with
    /// weight 0 (drained, down, admin-disabled) own no slot.
    pub fn build<K: AsRef<[u8]>>(members: &[(K, u32)], size: u32) -> Result<Table, MaglevError> {
        if !is_prime(size) {
            return Err(MaglevError::NotPrime(size));
        }
        let total: u64 = members.iter().map(|(_, w)| *w as u64).sum();
        if total >= size as u64 {
            return Err(MaglevError::TooSmall { size, total_weight: total });
        }
        let m = size as u64;
        let mut slots = vec![NO_MEMBER; size as usize];
        if total == 0 {
            return Ok(Table { slots });
        }
        // Each member's preference list is offset + j * skip (mod m); skip ≠ 0, so with m prime
        // the list visits every slot.
        let perms: Vec<(u64, u64)> = members
            .iter()
            .map(|(k, _)| (fnv1a(0x5eed_0ff5, k.as_ref()) % m, fnv1a(0x5eed_5c1b, k.as_ref()) % (m - 1) + 1))
            .collect();
        let mut next = vec![0u64; members.len()];
        let mut filled = 0u64;
        // Weighted rounds: in each round a member places `weight` entries.
        'outer: loop {
            for (i, (_, w)) in members.iter().enumerate() {
                for _ in 0..*w {
                    let (offset, skip) = perms[i];
                    loop {
                        let slot = ((offset + next[i] * skip) % m) as usize;
                        next[i] += 1;
                        if slots[slot] == NO_MEMBER {
                            slots[slot] = i as u32;
                            filled += 1;
                            break;
                        }
                    }
                    if filled == m {
                        break 'outer;
                    }
                }
            }
        }
        Ok(Table { slots })
    }

    /// The member for a flow hash.
    pub fn lookup(&self, hash: u64) -> u32 {
        self.slots[(hash % self.slots.len() as u64) as usize]
    }

    /// How many slots each of `n` members owns.
    pub fn shares(&self, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for s in &self.slots {
            if (*s as usize) < n {
                c[*s as usize] += 1;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<(String, u32)> {
        (0..n).map(|i| (format!("10.0.0.{i}:80"), 1)).collect()
    }

    #[test]
    fn sizes_must_be_prime_and_larger_than_the_weights() {
        assert_eq!(Table::build(&members(3), 65_536), Err(MaglevError::NotPrime(65_536)));
        assert!(matches!(Table::build(&[("a", 20u32)], 17), Err(MaglevError::TooSmall { .. })));
        assert!(Table::build(&members(3), 251).is_ok());
    }

    #[test]
    fn equal_weights_share_evenly_and_weights_are_respected() {
        let t = Table::build(&members(10), DEFAULT_TABLE_SIZE).unwrap();
        for c in t.shares(10) {
            let share = c as f64 / DEFAULT_TABLE_SIZE as f64;
            assert!((share - 0.1).abs() < 0.01, "{share}");
        }
        let weighted = vec![("a", 1u32), ("b", 2), ("c", 3), ("drained", 0)];
        let t = Table::build(&weighted, DEFAULT_TABLE_SIZE).unwrap();
        let s = t.shares(4);
        assert_eq!(s[3], 0, "weight 0 owns nothing");
        for (i, want) in [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0].iter().enumerate() {
            let share = s[i] as f64 / DEFAULT_TABLE_SIZE as f64;
            assert!((share - want).abs() < 0.01, "member {i}: {share} vs {want}");
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_of_the_slots() {
        let n = 10;
        let before = Table::build(&members(n), DEFAULT_TABLE_SIZE).unwrap();
        let mut fewer = members(n);
        fewer.remove(4);
        let after = Table::build(&fewer, DEFAULT_TABLE_SIZE).unwrap();
        // Map new indices back to the old member indices.
        let old_index = |i: u32| if i >= 4 { i + 1 } else { i };
        let mut moved = 0usize;
        let mut moved_survivors = 0usize;
        for (b, a) in before.slots.iter().zip(&after.slots) {
            let a = old_index(*a);
            if *b != a {
                moved += 1;
                if *b != 4 {
                    moved_survivors += 1;
                }
            }
        }
        let frac = moved as f64 / DEFAULT_TABLE_SIZE as f64;
        let survivors = moved_survivors as f64 / DEFAULT_TABLE_SIZE as f64;
        println!("removing 1 of {n}: {:.2}% of slots moved, {:.2}% of the survivors' slots", frac * 100.0, survivors * 100.0);
        assert!((0.09..0.15).contains(&frac), "moved {frac}");
        assert!(survivors < 0.05, "surviving members' slots moved: {survivors}");
    }

    #[test]
    fn no_members_or_all_drained_gives_an_empty_table() {
        let t = Table::build(&[("a", 0u32)], 251).unwrap();
        assert!(t.slots.iter().all(|s| *s == NO_MEMBER));
        assert_eq!(t.lookup(12345), NO_MEMBER);
    }
}
