//! `regions.toml`: the one topology file of a deployment. It names the app and, per region,
//! its residency policy, shard count, nodes and the places its archive and disaster-recovery
//! copies may go. Every node of every region loads the same file; [`RegionsFile::check`]
//! refuses one that breaks its own policy, and [`RegionsFile::digest`] lets two regions tell
//! when they were started on different files. Field by field in `docs/config.md`.

use std::collections::BTreeSet;
use std::fmt;

use meridian_domain::RegionCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Most shards a region may have.
pub const MAX_SHARDS: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionsFile {
    /// The app every region serves (tokens name it).
    pub app: String,
    /// The regions, each a Raft cluster of its own.
    #[serde(default, rename = "region")]
    pub regions: Vec<RegionSpec>,
}

/// Whether a region's residents' data may be stored abroad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Residency {
    /// Nothing of a resident's content is stored outside the region: conversations with a
    /// resident live here, archive and DR copies stay in the region's jurisdiction.
    Strict,
    /// Residents' conversations may live in another region by the deterministic rule.
    Open,
}

impl fmt::Display for Residency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Residency::Strict => "strict",
            Residency::Open => "open",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionSpec {
    /// The region code, e.g. `de` (2..=16 of `a-z`, `0-9`, `-`).
    pub code: String,
    pub residency: Residency,
    /// Shards of the region: a power of two in 1..=1024. Fixed at bootstrap.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Places the region's cold archive may be stored: `JURISDICTION[/SITE]`, e.g. `de` or
    /// `de/fra-2`. Empty: the region's own jurisdiction only.
    #[serde(default)]
    pub archive: Vec<String>,
    /// Places the region's standby and backups may run: same form as `archive`.
    #[serde(default)]
    pub dr: Vec<String>,
    /// The region's initial nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeSpec>,
    /// The region's standby (ADR 0005): nodes in one of its `dr` places that follow every
    /// shard as non-voting members and take over when the region is promoted there. Their
    /// ids are distinct from the nodes' ids. None: the region has no standby.
    #[serde(default, rename = "standby", skip_serializing_if = "Vec::is_empty")]
    pub standby: Vec<NodeSpec>,
}

impl RegionSpec {
    /// Every node of the region, the standby's included.
    pub fn all_nodes(&self) -> impl Iterator<Item = &NodeSpec> {
        self.nodes.iter().chain(&self.standby)
    }

    /// Whether node `id` is one of the region's standby nodes.
    pub fn is_standby(&self, id: u64) -> bool {
        self.standby.iter().any(|n| n.id == id)
    }
}

fn default_shards() -> u32 {
    8
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeSpec {
    /// Unique within the region, >= 1.
    pub id: u64,
    /// `host:port` of the node's client listener.
    pub addr: String,
    /// `host:port` of the node's peer listener (Raft, inside the region).
    pub peer_addr: String,
    /// `host:port` of the node's region-link listener (calls from other regions).
    #[serde(default)]
    pub link_addr: Option<String>,
    /// The availability zone the node runs in (free-form, e.g. `de-fra-a`).
    #[serde(default)]
    pub zone: String,
    /// Where a standby node runs: one of the region's `dr` places (required on a standby
    /// node, not allowed on the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
}

/// One thing wrong with a topology file: where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for TopologyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of a topology file, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct TopologyError(pub Vec<TopologyProblem>);

/// The jurisdiction of a place (`de/fra-2` → `de`), or why it is not a place.
pub fn place_jurisdiction(place: &str) -> Result<RegionCode, String> {
    let (jurisdiction, site) = match place.split_once('/') {
        Some((j, s)) => (j, Some(s)),
        None => (place, None),
    };
    if let Some(site) = site {
        let ok = !site.is_empty()
            && site.len() <= 64
            && site.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!("{place:?}: the site after `/` must be 1..=64 of a-z, 0-9, -"));
        }
    }
    RegionCode::parse(jurisdiction).map_err(|_| format!("{place:?} is not JURISDICTION[/SITE] (e.g. de or de/fra-2)"))
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

impl RegionsFile {
    /// Parses and checks a topology file's text.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        let file: RegionsFile = toml::from_str(text).map_err(|e| {
            TopologyError(vec![TopologyProblem { field: "regions.toml".into(), message: e.to_string() }])
        })?;
        file.check()?;
        Ok(file)
    }

    /// The region with code `code`.
    pub fn region(&self, code: &str) -> Option<&RegionSpec> {
        self.regions.iter().find(|r| r.code == code)
    }

    /// Every rule a topology must meet, each problem named with its field.
    pub fn check(&self) -> Result<(), TopologyError> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| problems.push(TopologyProblem { field, message });
        if self.app.trim().is_empty() {
            problem("app".into(), "missing: name the app every region serves".into());
        }
        if self.regions.is_empty() {
            problem("region".into(), "no region: add at least one [[region]] table".into());
        }
        let mut codes = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for (i, r) in self.regions.iter().enumerate() {
            let at = format!("region[{i}] ({})", r.code);
            if RegionCode::parse(&r.code).is_err() {
                problem(format!("{at}.code"), format!("{:?} is not a region code (2..=16 of a-z, 0-9, -)", r.code));
            } else if !codes.insert(r.code.clone()) {
                problem(format!("{at}.code"), format!("region {} is listed twice", r.code));
            }
            if !(r.shards.is_power_of_two() && r.shards <= MAX_SHARDS) {
                problem(format!("{at}.shards"), format!("{} is not a power of two in 1..={MAX_SHARDS}", r.shards));
            }
            if r.nodes.is_empty() {
                problem(format!("{at}.node"), "no node: add at least one [[region.node]] table".into());
            }
            let mut ids = BTreeSet::new();
            for (n, standby) in r.nodes.iter().map(|n| (n, false)).chain(r.standby.iter().map(|n| (n, true))) {
                let node = format!("{at}.{}[id {}]", if standby { "standby" } else { "node" }, n.id);
                match (&n.place, standby) {
                    (Some(_), false) => problem(format!("{node}.place"), "only a standby node names a place".into()),
                    (None, true) => problem(
                        format!("{node}.place"),
                        format!("missing: a standby node names its place, one of the region's dr places {:?}", r.dr),
                    ),
                    (Some(place), true) => {
                        let allowed = if r.dr.is_empty() {
                            place_jurisdiction(place).is_ok_and(|j| j.as_str() == r.code)
                        } else {
                            r.dr.contains(place)
                        };
                        if !allowed {
                            problem(
                                format!("{node}.place"),
                                format!(
                                    "{place} is not one of region {}'s dr places {:?} (none listed: its own \
                                     jurisdiction only)",
                                    r.code, r.dr
                                ),
                            );
                        }
                    }
                    (None, false) => {}
                }
                if n.id == 0 {
                    problem(format!("{node}.id"), "node ids start at 1".into());
                } else if !ids.insert(n.id) {
                    problem(format!("{node}.id"), format!("node id {} is used twice in region {}", n.id, r.code));
                }
                let addrs =
                    [("addr", Some(&n.addr)), ("peer-addr", Some(&n.peer_addr)), ("link-addr", n.link_addr.as_ref())];
                for (key, addr) in addrs {
                    let Some(addr) = addr else { continue };
                    if !is_host_port(addr) {
                        problem(format!("{node}.{key}"), format!("{addr:?} is not host:port"));
                    } else if !addresses.insert(addr.clone()) {
                        problem(format!("{node}.{key}"), format!("{addr} is used by two listeners"));
                    }
                }
            }
            for (key, places) in [("archive", &r.archive), ("dr", &r.dr)] {
                for place in places {
                    match place_jurisdiction(place) {
                        Err(e) => problem(format!("{at}.{key}"), e),
                        Ok(j) if r.residency == Residency::Strict && j.as_str() != r.code => problem(
                            format!("{at}.{key}"),
                            format!(
                                "region {} is strict: its {key} copies must stay in its jurisdiction, and {place} \
                                 is in {j}",
                                r.code
                            ),
                        ),
                        Ok(_) => {}
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TopologyError(problems))
        }
    }

    /// A digest of the topology's meaning (hex SHA-256 of its canonical TOML): two regions
    /// started on files that differ in anything but layout and comments have different
    /// digests.
    pub fn digest(&self) -> String {
        let canonical = toml::to_string(self).unwrap_or_default();
        let hash = Sha256::digest(canonical.as_bytes());
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR: &str = r#"
app = "chat"

[[region]]
code = "sg"
residency = "open"
archive = ["sg", "kr/backup"]
dr = ["kr"]
[[region.node]]
id = 1
addr = "10.0.1.1:7001"
peer-addr = "10.0.1.1:7101"
link-addr = "10.0.1.1:7201"
zone = "sg-a"

[[region]]
code = "de"
residency = "strict"
shards = 4
dr = ["de/fra-2"]
[[region.node]]
id = 1
addr = "10.0.2.1:7001"
peer-addr = "10.0.2.1:7101"
"#;

    fn problems(text: &str) -> Vec<String> {
        match RegionsFile::from_toml(text) {
            Ok(_) => vec![],
            Err(e) => e.0.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_valid_file_parses_with_defaults() {
        let file = RegionsFile::from_toml(FOUR).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(file.regions.len(), 2);
        let sg = file.region("sg").unwrap_or_else(|| panic!("sg"));
        assert_eq!((sg.shards, sg.residency), (8, Residency::Open));
        assert_eq!(file.region("de").map(|d| (d.shards, d.residency)), Some((4, Residency::Strict)));
        assert_eq!(sg.nodes[0].link_addr.as_deref(), Some("10.0.1.1:7201"));
    }

    #[test]
    fn a_strict_region_may_not_send_copies_abroad() {
        let abroad = FOUR.replace(r#"dr = ["de/fra-2"]"#, r#"dr = ["sg"]"#);
        let found = problems(&abroad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("region de is strict") && found[0].contains("sg is in sg"), "{found:?}");
        // An open region may.
        assert!(problems(FOUR).is_empty());
    }

    #[test]
    fn every_problem_is_named() {
        let bad = FOUR
            .replace(r#"code = "de""#, r#"code = "sg""#)
            .replace("shards = 4", "shards = 6")
            .replace(r#"addr = "10.0.2.1:7001""#, r#"addr = "10.0.1.1:7001""#)
            .replace(r#"archive = ["sg", "kr/backup"]"#, r#"archive = ["SG"]"#);
        let found = problems(&bad);
        for expected in ["listed twice", "not a power of two", "used by two listeners", "JURISDICTION[/SITE]"] {
            assert!(found.iter().any(|p| p.contains(expected)), "{expected:?} not in {found:?}");
        }
        assert!(!problems("app = \"x\"\n").is_empty(), "no region at all");
        assert!(!problems("app = \"x\"\nbogus = 1\n").is_empty(), "unknown keys are refused");
    }

    #[test]
    fn a_standby_runs_in_a_dr_place_with_its_own_ids() {
        let standby = format!(
            "{FOUR}[[region.standby]]\nid = 11\naddr = \"10.0.3.1:7001\"\npeer-addr = \"10.0.3.1:7101\"\nplace = \"de/fra-2\"\n"
        );
        let file = RegionsFile::from_toml(&standby).unwrap_or_else(|e| panic!("{e}"));
        let de = file.region("de").unwrap_or_else(|| panic!("de"));
        assert!(de.is_standby(11) && !de.is_standby(1));
        assert_eq!(de.all_nodes().map(|n| n.id).collect::<Vec<_>>(), vec![1, 11]);
        let elsewhere = problems(&standby.replace(r#"place = "de/fra-2""#, r#"place = "de/ber-1""#));
        assert!(elsewhere.len() == 1 && elsewhere[0].contains("not one of region de's dr places"), "{elsewhere:?}");
        let same_id = problems(&standby.replace("id = 11", "id = 1"));
        assert!(same_id.iter().any(|p| p.contains("used twice")), "{same_id:?}");
        let no_place = problems(&standby.replace("place = \"de/fra-2\"\n", ""));
        assert!(no_place.iter().any(|p| p.contains("names its place")), "{no_place:?}");
    }

    #[test]
    fn the_digest_follows_meaning_not_layout() {
        let a = RegionsFile::from_toml(FOUR).unwrap_or_else(|e| panic!("{e}"));
        let b = RegionsFile::from_toml(&format!("# a comment\n{FOUR}\n\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.digest(), b.digest());
        let c = RegionsFile::from_toml(&FOUR.replace("shards = 4", "shards = 2")).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a.digest(), c.digest());
    }
}
