//! [`DevRegion`]: a real `meridian dev` region in a temporary directory, for tests that
//! drive the dev command as a user would. Shared by the node and bench test suites (the
//! bench includes this file by path).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng as _;

/// How long the dev region may take to elect its leaders (a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the dev region gets to stop after SIGTERM (it gives its nodes 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A `meridian dev` region in a temporary directory, stopped (SIGTERM, then wait) on drop,
/// panics included.
pub struct DevRegion {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `MERIDIAN_ENDPOINT` of its dev.env: every node's client address, comma-separated.
    pub endpoint: String,
    pub admin_token: String,
    /// Every `export NAME=value` of its dev.env.
    pub env: Vec<(String, String)>,
}

impl DevRegion {
    /// Starts the region on a random free-looking base port; tries another port if the
    /// region dies before it is ready (e.g. a port was taken).
    pub fn start(meridian: &Path) -> DevRegion {
        Self::start_with(meridian, &[])
    }

    /// Starts `meridian dev` with extra arguments (e.g. `--regions sg,kr`).
    pub fn start_with(meridian: &Path, extra: &[&str]) -> DevRegion {
        assert!(meridian.exists(), "{} is missing: build it first: cargo build -p meridian-node", meridian.display());
        let mut last_failure = String::new();
        for _ in 0..3 {
            let base_port = 27100 + rand::thread_rng().gen_range(0..150u16) * 50;
            let dir = tempfile::tempdir().unwrap();
            let log = std::fs::File::create(dir.path().join("dev.log")).unwrap();
            let child = Command::new(meridian)
                .arg("dev")
                .arg("--dir")
                .arg(dir.path())
                .arg("--base-port")
                .arg(base_port.to_string())
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .unwrap();
            let mut region = DevRegion { child, dir, endpoint: String::new(), admin_token: String::new(), env: vec![] };
            match region.wait_ready() {
                Ok(()) => return region,
                Err(why) => last_failure = format!("base port {base_port}: {why}\n{}", region.log()),
            }
        }
        panic!("the dev region did not start: {last_failure}");
    }

    /// Waits for `dev.env` and reads the endpoints and the admin token from it.
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let env_path = self.dir.path().join("dev.env");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("meridian dev exited: {status}"));
            }
            let env = std::fs::read_to_string(&env_path).unwrap_or_default();
            let var =
                |name: &str| env.lines().find_map(|l| l.strip_prefix(&format!("export {name}=")).map(str::to_owned));
            if let (Some(endpoint), Some(token)) = (var("MERIDIAN_ENDPOINT"), var("MERIDIAN_ADMIN_TOKEN")) {
                eprintln!("dev region ready after {:?}: {endpoint}", started.elapsed());
                (self.endpoint, self.admin_token) = (endpoint, token);
                self.env = env
                    .lines()
                    .filter_map(|l| l.strip_prefix("export")?.trim().split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("no {} after {READY_TIMEOUT:?}", env_path.display()))
    }

    /// The pids of the three nodes, from their pid files.
    pub fn node_pids(&self) -> Vec<u32> {
        (1..=3)
            .map(|n| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("node-{n}.pid"))).unwrap();
                text.trim().parse().unwrap()
            })
            .collect()
    }

    /// The pid of node `name` (e.g. `node-1`, `kr-node-1`), from its pid file.
    #[allow(dead_code)] // not every suite that includes this file uses every helper
    pub fn pid_of(&self, name: &str) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.pid"))).unwrap();
        text.trim().parse().unwrap()
    }

    /// A variable of dev.env.
    #[allow(dead_code)]
    pub fn var(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in dev.env"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dev.log")).unwrap_or_default()
    }
}

impl Drop for DevRegion {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SIGTERM lets `meridian dev` stop its nodes; SIGKILL would orphan them.
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            let started = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && started.elapsed() < STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("meridian dev did not stop within {STOP_TIMEOUT:?}: killing it");
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}
