//! The node's integration tests, in one binary (one link of the node, RocksDB and the SDK
//! instead of one per file): real `meridian` processes on loopback, driven through the SDK
//! and the CLI, one file per subject. `cargo test -p meridian-node --test cluster NAME`
//! runs the tests whose path contains NAME (e.g. `t94_webhooks`).

#![allow(clippy::unwrap_used)]

mod common;
mod t05_api_decode_props;
mod t10_api_rejections;
mod t20_concurrent_sends;
mod t21_write_counters;
mod t30_leader_kill;
mod t40_snapshot_catch_up;
mod t41_snapshot_policy;
mod t45_state_hash_ignores_map_order;
mod t50_idempotent_send;
mod t60_unread_counts;
mod t70_add_and_remove_node;
mod t75_event_log;
mod t80_peer_door;
mod t85_tls;
mod t90_malformed_entry_in_the_log;
mod t92_logic_version;
mod t93_subscribe;
mod t94_webhooks;
mod t95_archive;
mod t95b_restore;
mod t96_dev_region_survives_a_kill;
mod t97_region_link;
mod t98_regions;
mod t99_groups;
mod t99b_group_send_cost;
