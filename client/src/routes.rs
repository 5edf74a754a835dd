//! [`Routes`]: which endpoint leads the shard a request is for.
//!
//! Every node accepts every request and forwards a write (or asks for a read index) to the
//! shard's leader when it is not the leader itself. That costs a hop: a second gRPC call
//! inside the region, its latency and its CPU. The client avoids it by calling the leader
//! directly: it keeps the region's routing table (`GetRoutes`: the shard count and each
//! shard's leader), maps a one-to-one conversation to its shard exactly as the nodes do
//! (FNV-1a over the conversation id, [`meridian_domain::shard::shard_for`]) and starts the call at
//! the leader's endpoint. The table is refreshed in the background when it is older than
//! [`MAX_AGE`] or when a call had to retry; a stale table only costs the hop it was meant to
//! save, never correctness, since any node still forwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use meridian_domain::shard::shard_for;
use meridian_domain::{ConversationId, UserId};
use meridian_proto::api::GetRoutesResponse;

/// How long a routing table is used before it is fetched again.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(5);
/// The most shards a region may have (the nodes' own limit).
const MAX_SHARDS: u32 = 1024;
/// How soon a failed fetch of the table is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Table {
    shards: u32,
    /// Per shard, the index of the leader's endpoint in the client's list, if it is there.
    leaders: Vec<Option<usize>>,
    fetched: Instant,
}

/// A client's routing table, shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    table: RwLock<Option<Table>>,
    refreshing: AtomicBool,
    /// Home regions learned from responses (`x-meridian-home-region`), by conversation id
    /// or, for a user's list, `@user`. A home region never changes.
    homes: RwLock<HashMap<String, String>>,
    /// Per endpoint of the client, its region (from `GetRoutes`, when the deployment has a
    /// topology file).
    endpoint_regions: RwLock<Vec<Option<String>>>,
}

impl Routes {
    /// The endpoint index of the leader of the one-to-one conversation between `me` and
    /// `peer`, and whether the table should be refreshed (missing or old).
    pub(crate) fn c2c_leader(&self, me: &str, peer: &str) -> (Option<usize>, bool) {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let Some(table) = table.as_ref() else { return (None, true) };
        let stale = table.fetched.elapsed() > MAX_AGE;
        if table.shards == 0 {
            return (None, stale);
        }
        let (Ok(me), Ok(peer)) = (UserId::parse(me), UserId::parse(peer)) else { return (None, stale) };
        let conversation = ConversationId::c2c(&me, &peer);
        let shard = shard_for(conversation.as_str(), table.shards).0 as usize;
        (table.leaders.get(shard).copied().flatten(), stale)
    }

    /// The conversation id of `me` and `peer`, as the nodes spell it.
    pub(crate) fn c2c_key(me: &str, peer: &str) -> Option<String> {
        let (Ok(me), Ok(peer)) = (UserId::parse(me), UserId::parse(peer)) else { return None };
        Some(ConversationId::c2c(&me, &peer).to_string())
    }

    /// Records the home region of `key` (a conversation id or `@user`).
    pub(crate) fn learn_home(&self, key: &str, region: &str) {
        let mut homes = self.homes.write().unwrap_or_else(|p| p.into_inner());
        if homes.get(key).map(String::as_str) != Some(region) {
            homes.insert(key.to_owned(), region.to_owned());
        }
    }

    /// Where to start a call about `key`: `leader` (the shard leader's endpoint by the
    /// table) when it is in the key's home region or nothing is known, else the first
    /// endpoint of the home region, so the call needs no forwarding between regions.
    pub(crate) fn place(&self, key: &str, leader: Option<usize>) -> Option<usize> {
        let homes = self.homes.read().unwrap_or_else(|p| p.into_inner());
        let Some(home) = homes.get(key) else { return leader };
        let regions = self.endpoint_regions.read().unwrap_or_else(|p| p.into_inner());
        let in_home = |i: usize| regions.get(i).and_then(Option::as_deref) == Some(home.as_str());
        match leader {
            Some(i) if in_home(i) => Some(i),
            _ => (0..regions.len()).find(|&i| in_home(i)).or(leader),
        }
    }

    /// Takes the right to refresh; false when a refresh is already running.
    pub(crate) fn begin_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Installs a fetched table (`None`: the fetch failed; the old table stays) and ends
    /// the refresh. `uris` are the client's endpoints, normalized, in order.
    pub(crate) fn finish_refresh(&self, fetched: Option<&GetRoutesResponse>, uris: &[String]) {
        // A table from a node is data from the network: a shard count no region has is refused.
        let Some(response) = fetched.filter(|r| r.shards <= MAX_SHARDS) else {
            // Try again in a second, not on every call: the nodes may not serve the table.
            let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
            let retry_at = Instant::now().checked_sub(MAX_AGE - RETRY_AFTER_FAILURE).unwrap_or_else(Instant::now);
            match table.as_mut() {
                Some(t) => t.fetched = retry_at,
                None => *table = Some(Table { shards: 0, leaders: Vec::new(), fetched: retry_at }),
            }
            drop(table);
            self.refreshing.store(false, Ordering::Release);
            return;
        };
        let mut leaders = vec![None; response.shards as usize];
        for route in &response.routes {
            let tls = uris.first().is_some_and(|u| u.starts_with("https://"));
            let uri = crate::config::normalize_endpoint_with(&route.leader_addr, tls).ok();
            let index = uri.and_then(|uri| uris.iter().position(|u| *u == uri));
            if let Some(slot) = leaders.get_mut(route.shard as usize) {
                *slot = index;
            }
        }
        if !response.regions.is_empty() {
            let tls = uris.first().is_some_and(|u| u.starts_with("https://"));
            let mut regions = vec![None; uris.len()];
            for route in &response.regions {
                for endpoint in &route.endpoints {
                    let uri = crate::config::normalize_endpoint_with(endpoint, tls).ok();
                    if let Some(i) = uri.and_then(|uri| uris.iter().position(|u| *u == uri)) {
                        regions[i] = Some(route.region.clone());
                    }
                }
            }
            *self.endpoint_regions.write().unwrap_or_else(|p| p.into_inner()) = regions;
        }
        let table = Table { shards: response.shards, leaders, fetched: Instant::now() };
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Some(table);
        self.refreshing.store(false, Ordering::Release);
    }

    /// Marks the table stale, after a call that had to retry.
    pub(crate) fn mark_stale(&self) {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = table.as_mut() {
            t.fetched = Instant::now().checked_sub(MAX_AGE * 2).unwrap_or(t.fetched);
        }
    }
}

/// The user a user token speaks for, read from its (signed, not secret) payload without
/// verifying it: only to route, never to trust. `None` for admin tokens and other forms.
pub(crate) fn token_user(token: &str) -> Option<String> {
    use base64::Engine as _;
    let rest = token.trim().strip_prefix("v1.")?;
    let (payload, _) = rest.split_once('.')?;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let payload = String::from_utf8(payload).ok()?;
    let mut lines = payload.split('\n');
    match (lines.next(), lines.next(), lines.next()) {
        (Some("user"), Some(_app), Some(user)) if !user.is_empty() => Some(user.to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use meridian_proto::api::ShardRoute;

    use super::*;

    fn response(shards: u32, leaders: &[(u32, &str)]) -> GetRoutesResponse {
        GetRoutesResponse {
            shards,
            routes: leaders
                .iter()
                .map(|(shard, addr)| ShardRoute { shard: *shard, leader_id: 1, leader_addr: (*addr).to_owned() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_conversation_routes_to_its_shards_leader() {
        let uris: Vec<String> = ["http://127.0.0.1:7001", "http://127.0.0.1:7002"].map(String::from).to_vec();
        let routes = Routes::default();
        assert_eq!(routes.c2c_leader("alice", "bob"), (None, true), "no table yet");
        // Every shard of 4 led by the second endpoint, except shard of alice/bob.
        let conversation =
            ConversationId::c2c(&UserId::parse("alice").expect("id"), &UserId::parse("bob").expect("id"));
        let shard = shard_for(conversation.as_str(), 4).0;
        let mut leaders: Vec<(u32, &str)> = (0..4).map(|s| (s, "127.0.0.1:7002")).collect();
        leaders[shard as usize].1 = "127.0.0.1:7001";
        routes.finish_refresh(Some(&response(4, &leaders)), &uris);
        assert_eq!(routes.c2c_leader("alice", "bob"), (Some(0), false));
        assert_eq!(routes.c2c_leader("bob", "alice"), (Some(0), false), "either side maps to one conversation");
        routes.mark_stale();
        assert_eq!(routes.c2c_leader("alice", "bob"), (Some(0), true));
    }

    #[test]
    fn unknown_leaders_and_bad_ids_do_not_route() {
        let uris = vec!["http://127.0.0.1:7001".to_owned()];
        let routes = Routes::default();
        routes.finish_refresh(Some(&response(2, &[(0, "10.0.0.9:7001"), (1, "10.0.0.9:7001")])), &uris);
        assert_eq!(routes.c2c_leader("alice", "bob"), (None, false), "leader not among the endpoints");
        assert_eq!(routes.c2c_leader("", "bob"), (None, false), "not a user id");
    }

    #[test]
    fn only_one_refresh_at_a_time() {
        let routes = Routes::default();
        assert!(routes.begin_refresh());
        assert!(!routes.begin_refresh());
        routes.finish_refresh(None, &[]);
        assert!(routes.begin_refresh());
    }

    #[test]
    fn a_failed_fetch_is_not_retried_on_every_call() {
        let routes = Routes::default();
        assert!(routes.begin_refresh());
        routes.finish_refresh(None, &[]);
        assert_eq!(routes.c2c_leader("alice", "bob"), (None, false), "no retry right away");
    }

    #[test]
    fn a_user_tokens_subject_is_read_and_admin_tokens_give_none() {
        use base64::Engine as _;
        let enc = |payload: &str| {
            format!("v1.{}.c2ln", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.as_bytes()))
        };
        assert_eq!(token_user(&enc("user\napp\nalice\n99")).as_deref(), Some("alice"));
        assert_eq!(token_user(&enc("admin\napp\nops\n99")), None);
        assert_eq!(token_user("garbage"), None);
    }
}
