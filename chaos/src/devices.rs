//! Subscribed devices: live streams (`Chat/Subscribe`) held through the whole campaign by
//! users of the workload, each through the SDK's [`Subscription`], which resubscribes with
//! its sync token when its node dies or its connection breaks. A device follows `fetch`
//! hints with history reads, as an app does. After healing, each device's arrivals go to the
//! history as `Delivered` records for the checker's delivery rules.
//!
//! [`Subscription`]: meridian_client::Subscription

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::api::{Direction, ReadConsistency, SubscribeEvent};
use meridian_client::{Client, Stream};
use tokio::sync::watch;

use crate::history::DeliveredRecord;

/// What one device has received so far.
#[derive(Debug, Default)]
struct Arrivals {
    /// Per conversation, (seq, message id) in arrival order.
    messages: BTreeMap<String, Vec<(u64, String)>>,
    /// Streams opened, over every subscription the device made.
    connects: u64,
}

impl Arrivals {
    fn newest(&self, conversation: &str) -> u64 {
        self.messages.get(conversation).and_then(|m| m.iter().map(|(s, _)| *s).max()).unwrap_or(0)
    }
}

struct Device {
    name: String,
    user: String,
    arrivals: Arc<Mutex<Arrivals>>,
    task: tokio::task::JoinHandle<()>,
}

/// The campaign's devices.
pub struct Devices {
    devices: Vec<Device>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices").field("devices", &self.devices.len()).finish()
    }
}

impl Devices {
    /// Subscribes one device per `(user, client)`; each client should list every node, the
    /// first one to try first. Waits for each stream's first event (its catch-up marker).
    pub async fn start(devices: Vec<(String, Client)>) -> anyhow::Result<Devices> {
        let (stop, stop_rx) = watch::channel(false);
        let mut started = vec![];
        for (i, (user, client)) in devices.into_iter().enumerate() {
            let mut subscription = client.subscribe(None).await?;
            let first = subscription.next().await?;
            anyhow::ensure!(first.r#type == "caught_up", "a new device's first event is {first:?}");
            let arrivals = Arc::new(Mutex::new(Arrivals { connects: 1, ..Arrivals::default() }));
            let task = tokio::spawn(follow(client, subscription, arrivals.clone(), stop_rx.clone()));
            started.push(Device { name: format!("d{i}"), user, arrivals, task });
        }
        Ok(Devices { devices: started, stop })
    }

    /// Waits (at most `patience`) until every device has the last seq `expected` names for
    /// each of its user's one-to-one conversations, stops the devices and returns one record
    /// per device and conversation (those in `conversations_of` for its user included, even
    /// when nothing arrived).
    pub async fn finish(
        self,
        expected: &BTreeMap<String, u64>,
        conversations_of: impl Fn(&str) -> Vec<String>,
        patience: Duration,
    ) -> Vec<DeliveredRecord> {
        let deadline = Instant::now() + patience;
        let behind = |d: &Device| {
            let arrivals = d.arrivals.lock().unwrap_or_else(|p| p.into_inner());
            conversations_of(&d.user)
                .iter()
                .any(|c| arrivals.newest(c) < expected.get(c.as_str()).copied().unwrap_or(0))
        };
        while self.devices.iter().any(behind) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let caught_up: Vec<bool> = self.devices.iter().map(|d| !behind(d)).collect();
        let _ = self.stop.send(true);
        let mut records = vec![];
        for (device, caught_up) in self.devices.into_iter().zip(caught_up) {
            let _ = tokio::time::timeout(Duration::from_secs(10), device.task).await;
            let arrivals = device.arrivals.lock().unwrap_or_else(|p| p.into_inner());
            let mut conversations: Vec<String> = arrivals.messages.keys().cloned().collect();
            conversations.extend(conversations_of(&device.user));
            conversations.sort();
            conversations.dedup();
            for conversation in conversations {
                records.push(DeliveredRecord {
                    device: device.name.clone(),
                    user: device.user.clone(),
                    messages: arrivals.messages.get(&conversation).cloned().unwrap_or_default(),
                    conversation,
                    connects: arrivals.connects,
                    caught_up,
                });
            }
        }
        records
    }
}

/// One device: hands every message event (and every message a `fetch` hint names) to
/// `arrivals`; when the subscription gives up (an outage longer than the client's retry
/// budget) subscribes again with its token.
async fn follow(
    client: Client,
    mut subscription: meridian_client::Subscription,
    arrivals: Arc<Mutex<Arrivals>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut counted = subscription.connects();
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            event = subscription.next() => event,
        };
        {
            let mut a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
            a.connects += subscription.connects().saturating_sub(counted);
        }
        counted = subscription.connects();
        match event {
            Ok(event) if event.r#type == "message" => {
                let id = event.message.as_ref().map(|m| m.message_id.clone()).unwrap_or_default();
                let mut a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                a.messages.entry(event.conversation_id.clone()).or_default().push((event.seq, id));
            }
            Ok(event) if event.r#type == "fetch" => {
                if !fetch(&client, &event, &arrivals, &mut stop).await {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "device: the subscription gave up; subscribing again with its token");
                let token = subscription.token();
                loop {
                    if *stop.borrow() {
                        return;
                    }
                    match client.subscribe(Some(&token)).await {
                        Ok(s) => {
                            subscription = s;
                            counted = 0;
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        }
    }
}

/// Reads `fetch_from..=fetch_to` of the hint's conversation into `arrivals`, retrying until
/// it is read; false when the device was stopped first.
async fn fetch(
    client: &Client,
    event: &SubscribeEvent,
    arrivals: &Mutex<Arrivals>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let stream = if event.group_id.is_empty() {
        Stream::Peer(event.peer.clone())
    } else {
        Stream::Group(event.group_id.clone())
    };
    let mut from = event.fetch_from;
    while from <= event.fetch_to {
        if *stop.borrow() {
            return false;
        }
        let limit = u32::try_from((event.fetch_to - from + 1).min(100)).unwrap_or(100);
        match client.stream_history(&stream, from, limit, Direction::Forward, ReadConsistency::Linearizable).await {
            Ok(page) => {
                let mut a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                let list = a.messages.entry(event.conversation_id.clone()).or_default();
                let mut advanced = false;
                let start = from;
                for m in page.messages.iter().filter(|m| m.seq >= start && m.seq <= event.fetch_to) {
                    list.push((m.seq, m.message_id.clone()));
                    from = m.seq + 1;
                    advanced = true;
                }
                if !advanced {
                    // Nothing at or past `from` (cleared or hidden for this user): move on.
                    return true;
                }
            }
            // Retried while the region is unreachable or the node refuses for now; any other
            // refusal (say, a group the user has since left) ends the hint.
            Err(e) if e.is_unreachable() || e.is_retryable_refusal() || e.is_node_fault() => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => {
                tracing::debug!(error = %e, "device: a fetch hint could not be read; moving on");
                return true;
            }
        }
    }
    true
}
