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
        for (chain, hook) in [("cut_out", "output"), ("cut_in", "input")] {
            let cmd = format!(
                "add chain inet {} {chain} {{ type filter hook {hook} priority 0 ; policy accept ; }}",
                fw.table
            );
            run("nft", &cmd.split_whitespace().collect::<Vec<_>>())?;
        }
        Ok(fw)
    }

    /// Drops packets matching `expr` (nft syntax, e.g. `ip saddr A ip daddr B`) in `chain`
    /// (`cut_out`: the output hook; `cut_in`: the input hook).
    pub fn drop_matching(&self, chain: &str, expr: &str) -> anyhow::Result<()> {
        let rule = format!("add rule inet {} {chain} {expr} drop", self.table);
        run("nft", &rule.split_whitespace().collect::<Vec<_>>()).map(|_| ())
    }

    /// Drops every packet from `from` to `to`.
    pub fn drop_link(&self, from: Ipv4Addr, to: Ipv4Addr) -> anyhow::Result<()> {
        self.drop_matching("cut_out", &format!("ip saddr {from} ip daddr {to}"))
    }

    /// Removes every cut.
    pub fn heal(&self) -> anyhow::Result<()> {
        for chain in ["cut_out", "cut_in"] {
            run("nft", &["flush", "chain", "inet", &self.table, chain])?;
        }
        Ok(())
    }

    /// The rules in force, as nft prints them.
    pub fn rules(&self) -> String {
        run("nft", &["list", "table", "inet", &self.table]).unwrap_or_default()
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "inet", &self.table]);
    }
}
