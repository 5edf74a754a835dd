//! The stable entity → shard mapping. It must never change for a given shard count: it decides
//! where data lives on disk.

use crate::ids::ShardId;

/// FNV-1a, 64-bit: tiny, stable across Rust versions and platforms (unlike `DefaultHasher`).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard of an entity (a user id or a conversation id) among `shards` shards. A
/// Community topic's stream (`grp:{group}/{topic}`) lives on its group's shard, with the
/// members it is read and written by; no other entity contains a `/`.
pub fn shard_for(entity: &str, shards: u32) -> ShardId {
    let n = u64::from(shards.max(1));
    let key = match entity.strip_prefix("grp:").and_then(|rest| rest.split_once('/')) {
        Some((group, _)) => &entity[..4 + group.len()],
        None => entity,
    };
    // `n` fits in u32, so the remainder does too.
    ShardId(u32::try_from(stable_hash(key.as_bytes()) % n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_stable() {
        // Pinned values: a change here would move existing data to other shards.
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_for("a", 8), ShardId((0xaf63_dc4c_8601_ec8c_u64 % 8) as u32));
    }

    #[test]
    fn a_topic_lives_on_its_group_s_shard() {
        for g in ["team", "g7", "a-b"] {
            assert_eq!(shard_for(&format!("grp:{g}/news"), 8), shard_for(&format!("grp:{g}"), 8));
        }
    }

    #[test]
    fn spreads_over_shards() {
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_for(&format!("user{i}"), 8).0 as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
