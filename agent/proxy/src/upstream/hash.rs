//! Consistent hashing of requests to endpoints: a ketama-style ring and a Maglev table, both
//! weighted, and the hash both use.
//!
//! Every agent builds the same table from the same endpoints (xxHash64 of the endpoint's
//! address, no per-process seed), so a key goes to the same endpoint whichever agent serves
//! it. Removing one endpoint of `n` moves only that endpoint's keys (about 1/n of them).

use xxhash_rust::xxh64::xxh64;

/// The hash of a request key or an endpoint name.
pub fn hash(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// Ring points per unit of weight. A member's share of the ring strays from its weight's by
/// about one over the square root of its points: with 2,048 points a member is within about
/// 2% of its share. The count does not depend on the other members, so removing one member
/// moves only its own keys. A point takes 8 bytes.
const POINTS_PER_WEIGHT: u64 = 2_048;
/// The most points on a ring; past it every member's points shrink in proportion.
const MAX_RING: u64 = 1 << 20;

/// A ketama-style ring: each endpoint owns points in proportion to its weight, and a key goes
/// to the owner of the first point at or after its hash (the hash's upper 32 bits).
#[derive(Debug)]
pub struct Ring {
    /// (point, member) sorted by point.
    points: Vec<(u32, u32)>,
}

impl Ring {
    /// A ring over `members`: (name, weight) each, indexed by position.
    pub fn new(members: &[(&str, u32)]) -> Ring {
        let total: u64 = members.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Ring { points: Vec::new() };
        }
        let per_weight = POINTS_PER_WEIGHT.min(MAX_RING / total);
        let mut points = Vec::with_capacity((total * per_weight.max(1)).min(MAX_RING) as usize);
        let mut label = String::new();
        for (m, (name, weight)) in members.iter().enumerate() {
            let count = if per_weight > 0 {
                per_weight * u64::from(*weight)
            } else {
                (MAX_RING * u64::from(*weight) / total).max(1)
            };
            for p in 0..count {
                label.clear();
                label.push_str(name);
                label.push('_');
                label.push_str(itoa(p, &mut [0; 20]));
                points.push(((hash(label.as_bytes()) >> 32) as u32, m as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The member that owns `key`'s hash.
    pub fn get(&self, key: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let key = (key >> 32) as u32;
        let i = self.points.partition_point(|(p, _)| *p < key);
        let (_, member) = self.points[i % self.points.len()];
        Some(member as usize)
    }
}

/// Maglev's lookup table size: a prime, as the algorithm needs, and large enough that each of
/// hundreds of endpoints gets many slots.
pub const MAGLEV_SIZE: usize = 65_537;

/// A Maglev table (Eisenbud et al., NSDI 2016), weighted as Envoy's is: each member fills
/// slots from its own permutation of the table, as many rounds as its weight allows.
#[derive(Debug)]
pub struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// A table over `members`: (name, weight) each, indexed by position.
    pub fn new(members: &[(&str, u32)]) -> Maglev {
        Self::with_size(members, MAGLEV_SIZE)
    }

    fn with_size(members: &[(&str, u32)], size: usize) -> Maglev {
        let max_weight = members.iter().map(|(_, w)| *w).max().unwrap_or(0);
        if members.is_empty() || max_weight == 0 {
            return Maglev { table: Vec::new() };
        }
        let m = size as u64;
        let perms: Vec<(u64, u64)> = members
            .iter()
            .map(|(name, _)| {
                let offset = xxh64(name.as_bytes(), 0xA5A5) % m;
                let skip = xxh64(name.as_bytes(), 0x5A5A) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut table = vec![u32::MAX; size];
        let mut next = vec![0u64; members.len()];
        let mut filled_by = vec![0u64; members.len()];
        let mut filled = 0;
        let mut round: u64 = 0;
        while filled < size {
            round += 1;
            for (i, (_, weight)) in members.iter().enumerate() {
                // Slots member i is owed after `round` rounds, in proportion to its weight.
                let owed = round * u64::from(*weight) / u64::from(max_weight);
                if filled_by[i] >= owed {
                    continue;
                }
                let (offset, skip) = perms[i];
                let slot = loop {
                    let c = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[c] == u32::MAX {
                        break c;
                    }
                };
                table[slot] = i as u32;
                filled_by[i] += 1;
                filled += 1;
                if filled == size {
                    break;
                }
            }
        }
        Maglev { table }
    }

    /// The member `key`'s hash maps to.
    pub fn get(&self, key: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(key % self.table.len() as u64) as usize] as usize)
    }
}

/// `n` in decimal, without allocating.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn members(names: &[String], weight: impl Fn(usize) -> u32) -> Vec<(&str, u32)> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), weight(i)))
            .collect()
    }

    /// Share of 10,000 keys remapped when endpoint 3 of 10 goes, by a table builder.
    fn remapped(build: impl Fn(&[(&str, u32)]) -> Box<dyn Fn(u64) -> Option<usize>>) -> f64 {
        let all = names(10);
        let before = build(&members(&all, |_| 1));
        let fewer: Vec<String> = all.iter().filter(|n| *n != &all[3]).cloned().collect();
        let after = build(&members(&fewer, |_| 1));
        let moved = (0..10_000u64)
            .filter(|k| {
                let key = hash(&k.to_le_bytes());
                let was = &all[before(key).unwrap()];
                let is = &fewer[after(key).unwrap()];
                was != is
            })
            .count();
        moved as f64 / 10_000.0
    }

    #[test]
    fn removing_one_of_ten_endpoints_moves_its_keys_only() {
        let ring = remapped(|m| {
            let r = Ring::new(m);
            Box::new(move |k| r.get(k))
        });
        let maglev = remapped(|m| {
            let t = Maglev::new(m);
            Box::new(move |k| t.get(k))
        });
        assert!(ring <= 0.15, "ring remapped {ring}");
        assert!(maglev <= 0.15, "maglev remapped {maglev}");
        // Its own tenth must move; a table that moved nothing would pass the bound too.
        assert!(ring >= 0.05 && maglev >= 0.05, "{ring} {maglev}");
    }

    #[test]
    fn tables_honour_weights() {
        let all = names(3);
        let weighted = members(&all, |i| if i == 0 { 3 } else { 1 });
        let ring = Ring::new(&weighted);
        let maglev = Maglev::new(&weighted);
        for (name, get) in [
            (
                "ring",
                Box::new(|k| ring.get(k)) as Box<dyn Fn(u64) -> Option<usize>>,
            ),
            ("maglev", Box::new(|k| maglev.get(k))),
        ] {
            let mut counts = [0usize; 3];
            for k in 0..50_000u64 {
                counts[get(hash(&k.to_le_bytes())).unwrap()] += 1;
            }
            let share = counts[0] as f64 / 50_000.0;
            assert!((share - 0.6).abs() < 0.05, "{name}: {counts:?}");
        }
    }

    #[test]
    fn maglev_fills_every_slot() {
        let all = names(7);
        let t = Maglev::with_size(&members(&all, |i| i as u32 + 1), 1009);
        assert!(t.table.iter().all(|m| (*m as usize) < 7));
        assert!(Maglev::new(&[]).get(1).is_none());
        assert!(Ring::new(&[]).get(1).is_none());
    }
}
