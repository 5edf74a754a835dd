//! A userspace TCP fault proxy in front of a node's peer port. This machine's kernel has no
//! `tc netem`, so delay, jitter and loss come from here: delay and jitter per forwarded
//! chunk (order within a connection is kept, as TCP would), loss as connection resets (a
//! byte stream cannot lose bytes and stay HTTP/2), and blocking by source address as a
//! fallback partition where the kernel firewall is not available.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The faults a proxy applies now; changes take effect on the next chunk.
#[derive(Debug, Clone, Default)]
pub struct LinkFaults {
    pub delay_ms: u64,
    pub jitter_ms: u64,
    /// Probability of resetting the connection at each forwarded chunk.
    pub reset_probability: f64,
    /// Connections from these addresses are refused and cut.
    pub blocked_sources: HashSet<IpAddr>,
}

#[derive(Debug)]
pub struct Proxy {
    faults: Arc<Mutex<LinkFaults>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let faults = Arc::new(Mutex::new(LinkFaults::default()));
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else { continue };
                let faults = shared.clone();
                tokio::spawn(async move {
                    if faults.lock().map(|f| f.blocked_sources.contains(&peer.ip())).unwrap_or(true) {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let a = tokio::spawn(pump(ri, wo, faults.clone(), peer.ip()));
                    let b = tokio::spawn(pump(ro, wi, faults, peer.ip()));
                    let _ = tokio::join!(a, b);
                });
            }
        });
        Ok(Self { faults, task })
    }

    pub fn set(&self, f: impl FnOnce(&mut LinkFaults)) {
        if let Ok(mut g) = self.faults.lock() {
            f(&mut g);
        }
    }

    pub fn heal(&self) {
        self.set(|f| *f = LinkFaults::default());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<Mutex<LinkFaults>>,
    source: IpAddr,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (delay, reset, blocked) = match faults.lock() {
            Ok(f) => {
                let mut rng = rand::thread_rng();
                let jitter = if f.jitter_ms > 0 { rng.gen_range(0..=f.jitter_ms) } else { 0 };
                let reset = f.reset_probability > 0.0 && rng.gen_bool(f.reset_probability.min(1.0));
                (f.delay_ms + jitter, reset, f.blocked_sources.contains(&source))
            }
            Err(_) => return,
        };
        if reset || blocked {
            return;
        }
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
