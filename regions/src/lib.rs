//! Meridian's geography: which region a node serves, and where an entity lives.
//!
//! For now a node knows its own region and the region's shard count; entity → shard routing
//! is the stable hash of `meridian_domain::shard`. Cross-region directory, residency policy
//! and DR live here as they arrive.
//!
//! Module map: [`Topology`] (a node's own region and routing); [`file`] (`regions.toml`, the
//! deployment's topology file, and its policy checks).
//!
//! Must never depend on: storage or RocksDB, or the wire types.

pub mod file;
pub mod residency;

pub use file::{NodeSpec, RegionSpec, RegionsFile, Residency, TopologyError, TopologyProblem};

use meridian_domain::shard::shard_for;
use meridian_domain::{ConversationId, RegionCode, ShardId, UserId};

/// The region a node serves and how its data is sharded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    region: RegionCode,
    shards: u32,
}

impl Topology {
    pub fn new(region: RegionCode, shards: u32) -> Self {
        Self { region, shards }
    }

    pub fn region(&self) -> &RegionCode {
        &self.region
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Whether this region can be the home region of a new user or group. Only the local
    /// region can until cross-region routing exists.
    pub fn serves(&self, region: &RegionCode) -> bool {
        region == &self.region
    }

    /// The shard holding a user's account, profile and conversation index.
    pub fn user_shard(&self, user: &UserId) -> ShardId {
        shard_for(user.as_str(), self.shards)
    }

    /// The shard holding a conversation's messages, head and read cursors.
    pub fn conversation_shard(&self, conversation: &ConversationId) -> ShardId {
        shard_for(conversation.as_str(), self.shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_within_the_shard_count() {
        let region = RegionCode::parse("sg").unwrap_or_else(|e| panic!("{e}"));
        let t = Topology::new(region.clone(), 8);
        assert!(t.serves(&region));
        assert!(!t.serves(&RegionCode::parse("de").unwrap_or_else(|e| panic!("{e}"))));
        for i in 0..100 {
            let u = UserId::parse(&format!("u{i}")).unwrap_or_else(|e| panic!("{e}"));
            assert!(t.user_shard(&u).0 < 8);
        }
    }
}
