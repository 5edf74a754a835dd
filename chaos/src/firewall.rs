//! Kernel-level link cuts with nftables: one table per run, whose rules drop packets from one
//! node's address to another's. Nodes bind their outgoing peer connections to their own
//! address, so a rule cuts exactly one direction of one link.

use std::net::Ipv4Addr;

use crate::cluster::{is_root, run};

#[derive(Debug)]
pub struct Firewall {
    table: String,
}

impl Firewall {
    /// Whether this process can use nftables (root, and `nft` answers).
    pub fn available() -> bool {
        is_root() && run("nft", &["list", "tables"]).is_ok()
    }

    pub fn create(run_id: &str) -> anyhow::Result<Self> {
        let table = format!("meridian_chaos_{run_id}");
        run("nft", &["add", "table", "inet", &table])?;
        let fw = Self { table };
        let chain =
            format!("add chain inet {} out {{ type filter hook output priority 0 ; policy accept ; }}", fw.table);
        run("nft", &chain.split_whitespace().collect::<Vec<_>>())?;
        Ok(fw)
    }

    /// Drops every packet from `from` to `to`.
    pub fn drop_link(&self, from: Ipv4Addr, to: Ipv4Addr) -> anyhow::Result<()> {
        let rule = format!("add rule inet {} out ip saddr {from} ip daddr {to} drop", self.table);
        run("nft", &rule.split(' ').collect::<Vec<_>>()).map(|_| ())
    }

    /// Removes every cut.
    pub fn heal(&self) -> anyhow::Result<()> {
        run("nft", &["flush", "chain", "inet", &self.table, "out"]).map(|_| ())
    }

    /// The rules in force, as nft prints them.
    pub fn rules(&self) -> String {
        run("nft", &["list", "chain", "inet", &self.table, "out"]).unwrap_or_default()
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "inet", &self.table]);
    }
}
