//! [`CpuMeter`]: CPU seconds used by the load generator and by the server nodes, read from
//! `/proc/<pid>/stat` (Linux; elsewhere the figures are unknown).

use std::path::{Path, PathBuf};

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`). It is 100 on every
/// Linux ABI in use, and reading it from `sysconf` would need unsafe code; the peer's
/// `etcd-load` assumes the same.
const TICKS_PER_SECOND: f64 = 100.0;

/// The name of the server binary, as the first word of its command line ends.
const SERVER_BINARY: &str = "meridian";
/// The subcommand that runs a node.
const SERVER_SUBCOMMAND: &str = "node";

/// Samples the CPU time of this process and of the server processes.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    server_pids: Vec<u32>,
}

/// CPU seconds at one instant; `None` where a process could not be read.
#[derive(Debug, Clone)]
pub struct CpuSample {
    own: Option<f64>,
    servers: Vec<Option<f64>>,
}

impl CpuMeter {
    /// Measures the given server processes.
    pub fn new(server_pids: Vec<u32>) -> Self {
        CpuMeter { server_pids }
    }

    /// Measures the `meridian node` processes found in `/proc`. Of those, the ones whose
    /// `--config` file names the port of one of `endpoints` are kept (other regions, e.g. a
    /// test's, may run on the same machine); if none does, all of them are, with a warning.
    pub fn discover(endpoints: &[String]) -> Self {
        let own = std::process::id();
        let candidates: Vec<(u32, Vec<String>)> = list_pids()
            .into_iter()
            .filter(|&pid| pid != own)
            .filter_map(|pid| {
                let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let argv = split_cmdline(&bytes);
                is_server_node(&argv).then_some((pid, argv))
            })
            .collect();
        let ports: Vec<&str> = endpoints.iter().filter_map(|e| endpoint_port(e)).collect();
        let serving: Vec<u32> = candidates
            .iter()
            .filter(|(pid, argv)| {
                config_path(*pid, argv)
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .is_some_and(|config| names_a_port(&config, &ports))
            })
            .map(|(pid, _)| *pid)
            .collect();
        let mut server_pids = if serving.is_empty() {
            let all: Vec<u32> = candidates.iter().map(|(pid, _)| *pid).collect();
            if all.is_empty() {
                tracing::warn!("no `meridian node` process found: server CPU is unknown (pass --server-pids)");
            } else {
                tracing::warn!(
                    pids = ?all,
                    "no `meridian node` process is configured with the endpoints' ports: measuring all of them \
                     (pass --server-pids to choose)"
                );
            }
            all
        } else {
            serving
        };
        server_pids.sort_unstable();
        CpuMeter { server_pids }
    }

    /// The server processes measured.
    pub fn server_pids(&self) -> &[u32] {
        &self.server_pids
    }

    /// The CPU seconds used so far by this process and by each server process.
    pub fn sample(&self) -> CpuSample {
        CpuSample {
            own: process_cpu_seconds("self"),
            servers: self.server_pids.iter().map(|pid| process_cpu_seconds(&pid.to_string())).collect(),
        }
    }
}

impl CpuSample {
    /// CPU seconds this process used between `self` and the later sample `end`.
    pub fn own_since(&self, end: &CpuSample) -> Option<f64> {
        Some(end.own? - self.own?)
    }

    /// CPU seconds the server processes used between `self` and `end`, summed over the
    /// processes readable at both; `None` when there is none.
    pub fn servers_since(&self, end: &CpuSample) -> Option<f64> {
        let deltas: Vec<f64> = self
            .servers
            .iter()
            .zip(&end.servers)
            .filter_map(|(start, end)| Some(end.as_ref()? - start.as_ref()?))
            .collect();
        if deltas.len() < self.servers.len() {
            tracing::warn!(
                readable = deltas.len(),
                of = self.servers.len(),
                "some server processes could not be read at both ends of the window"
            );
        }
        (!deltas.is_empty()).then(|| deltas.iter().sum())
    }
}

/// utime + stime of a process (`self` or a pid), in seconds.
fn process_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat).map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'; the fields
    // after the last ')' start with field 3 (state). utime and stime are fields 14 and 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn list_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    bytes.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// A `meridian node ...` command line: the binary itself, not a build of it
/// (`rustc --crate-name meridian_node`) or a tool that mentions it.
fn is_server_node(argv: &[String]) -> bool {
    let Some(program) = argv.first() else {
        return false;
    };
    let name = Path::new(program).file_name().and_then(|n| n.to_str());
    name == Some(SERVER_BINARY) && argv[1..].iter().any(|a| a == SERVER_SUBCOMMAND)
}

/// The node's `--config PATH` (or `--config=PATH`), resolved against its working directory.
fn config_path(pid: u32, argv: &[String]) -> Option<PathBuf> {
    let path = argv.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            argv.get(i + 1).cloned()
        } else {
            a.strip_prefix("--config=").map(str::to_owned)
        }
    })?;
    let path = PathBuf::from(path);
    if path.is_absolute() {
        Some(path)
    } else {
        Some(PathBuf::from(format!("/proc/{pid}/cwd")).join(path))
    }
}

/// The port of `host:port` or `http://host:port`.
fn endpoint_port(endpoint: &str) -> Option<&str> {
    let port = endpoint.trim().trim_end_matches('/').rsplit_once(':')?.1;
    (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())).then_some(port)
}

/// Whether a node config names one of `ports` in an address (`"host:PORT"`): its own listen
/// address or a peer's, so every node of the region matches.
fn names_a_port(config: &str, ports: &[&str]) -> bool {
    ports.iter().any(|port| config.contains(&format!(":{port}\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn stat_times_are_read_after_the_command_name() {
        // A command name with a space and a ')' must not shift the fields.
        let stat = "4242 (meridian) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 75 0 0 20 0 9 0 123 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let seconds = process_cpu_seconds("self").expect("/proc/self/stat is readable on Linux");
        assert!(seconds >= 0.0);
    }

    #[test]
    fn only_the_node_binary_counts_as_a_server() {
        assert!(is_server_node(&argv(&["/work/main/target/debug/meridian", "node", "--config", "/d/node-1.toml"])));
        assert!(!is_server_node(&argv(&["/x/meridian", "dev", "--dir", "/tmp/d"])));
        assert!(!is_server_node(&argv(&["rustc", "--crate-name", "meridian_node"])));
        assert!(!is_server_node(&argv(&["cargo", "test", "-p", "meridian-node"])));
        assert!(!is_server_node(&argv(&["/x/meridian-bench", "send", "--label", "node"])));
        assert!(!is_server_node(&[]));
    }

    #[test]
    fn config_paths_and_ports_are_found() {
        let node = argv(&["meridian", "node", "--config", "/d/node-1.toml"]);
        assert_eq!(config_path(1, &node), Some(PathBuf::from("/d/node-1.toml")));
        let relative = argv(&["meridian", "node", "--config=node-2.toml"]);
        assert_eq!(config_path(7, &relative), Some(PathBuf::from("/proc/7/cwd/node-2.toml")));
        assert_eq!(endpoint_port("127.0.0.1:27100"), Some("27100"));
        assert_eq!(endpoint_port("http://localhost:7001/"), Some("7001"));
        assert_eq!(endpoint_port("localhost"), None);
        let config = "listen = \"127.0.0.1:27100\"\n[[peers]]\naddr = \"127.0.0.1:27101\"\n";
        assert!(names_a_port(config, &["27101"]));
        assert!(!names_a_port(config, &["2710"]), "a prefix of a port is not the port");
    }

    #[test]
    fn deltas_cover_the_processes_read_at_both_ends() {
        let start = CpuSample { own: Some(1.0), servers: vec![Some(10.0), None, Some(5.0)] };
        let end = CpuSample { own: Some(1.5), servers: vec![Some(12.5), Some(3.0), Some(6.0)] };
        assert_eq!(start.own_since(&end), Some(0.5));
        assert_eq!(start.servers_since(&end), Some(3.5));
        let nothing = CpuSample { own: None, servers: vec![] };
        assert_eq!(nothing.own_since(&end), None);
        assert_eq!(nothing.servers_since(&nothing), None);
    }
}
