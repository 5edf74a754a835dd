//! One long-lived stream per node pair for every shard's Raft traffic.
//!
//! AppendEntries, votes, forwarded proposals and read-index rounds of all shards travel as
//! [`peer::Frame`]s on one `Peer/Stream` call per peer address instead of one unary call
//! (one HTTP/2 stream, its headers and its tasks on both sides) each. A writer sends every
//! frame that queued while it was busy as one [`peer::Frames`] message (flushing when the
//! queue is empty or at [`FLUSH_BYTES`]); the other side answers each frame as soon as it is
//! handled and batches its replies the same way. A reply carries its request's id.
//!
//! The stream is opened lazily and reopened after it fails; calls in flight on a failed
//! stream fail `UNAVAILABLE` (openraft retries them), and a call that outlives its timeout
//! fails `CANCELLED` ("Timeout expired", what tonic returns for a unary deadline). Each
//! request frame carries that timeout, and the peer gives the request up at it ([`serve`]),
//! as tonic's server does a unary call at its `grpc-timeout`: requests whose callers stopped
//! waiting must not pile up on the peer, or one stuck shard fills the stream's places and
//! stops every shard's frames on it. A stream on which nothing at all comes back for
//! [`STREAM_SILENCE`] while calls time out is closed and reopened: HTTP/2 keep-alive finds a
//! dead connection, not a stream stuck on a live one. Against a
//! peer that does not serve `Peer/Stream` (an older version during a rolling upgrade) the
//! same calls go unary, and the stream is tried again after [`UNARY_RECHECK`]. Snapshot
//! chunks stay unary: a large transfer must not hold up the other shards' frames.
//!
//! The credential is checked once, when the stream opens ([`crate::credential`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Future, Stream, StreamExt};
use meridian_proto::peer::{self, frame::Body};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore, TryAcquireError};
use tonic::metadata::MetadataValue;
use tonic::Status;

use crate::network::{PeerClientT, PeerRpcStats};

/// A batch is flushed once it reaches this size even if more frames are queued.
pub const FLUSH_BYTES: usize = 1 << 20;

/// How long a node keeps calling a peer without `Peer/Stream` unary before trying again.
pub const UNARY_RECHECK: Duration = Duration::from_secs(30);

/// The longest a peer spends on one request frame: a frame's own timeout is capped at it,
/// and a frame without one (from an earlier version) gets it.
pub const FRAME_TIME_CAP: Duration = Duration::from_secs(30);

/// A stream from which nothing came back for this long, while calls on it timed out, is
/// closed and reopened. Longer than any call's timeout ([`crate::node`]'s forwards wait 5 s),
/// so that a peer slow to answer one kind of request is not mistaken for a stuck stream.
pub const STREAM_SILENCE: Duration = Duration::from_secs(10);

type Reply = Result<Body, Status>;

/// Every frame queued on `rx`, in batches: what queued while the consumer was busy goes out
/// together, up to [`FLUSH_BYTES`]. `stats`: counts the frames and batches (a caller's side).
pub(crate) fn batches(
    rx: mpsc::UnboundedReceiver<peer::Frame>,
    stats: Option<Arc<PeerRpcStats>>,
) -> impl Stream<Item = peer::Frames> + Send {
    futures::stream::unfold((rx, stats), |(mut rx, stats)| async move {
        let first = rx.recv().await?;
        let mut bytes = first.encoded_len();
        let mut frames = vec![first];
        while bytes < FLUSH_BYTES {
            match rx.try_recv() {
                Ok(f) => {
                    bytes += f.encoded_len();
                    frames.push(f);
                }
                Err(_) => break,
            }
        }
        if let Some(stats) = &stats {
            stats.stream_batches.fetch_add(1, Ordering::Relaxed);
            stats.stream_frames.fetch_add(frames.len() as u64, Ordering::Relaxed);
        }
        Some((peer::Frames { frames }, (rx, stats)))
    })
}

/// A refusal as a frame: the status code, message and reason code of a unary call.
pub(crate) fn status_frame(id: u64, status: &Status) -> peer::Frame {
    let reason = status
        .metadata()
        .get(meridian_proto::REASON_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    peer::Frame {
        id,
        body: Some(Body::Status(peer::FrameStatus {
            code: status.code() as i32,
            message: status.message().to_owned(),
            reason,
        })),
        timeout_ms: 0,
    }
}

/// The peer's side of a stream: every frame of `inbound` handled by `answer` on a task of its
/// own (at most `in_flight` at once: reading waits beyond that) and given up at its caller's
/// timeout (at most [`FRAME_TIME_CAP`]) with `DEADLINE_EXCEEDED`; the replies, batched. The
/// stream ends when `inbound` does or `stop` turns true. `stats` counts the frames given up.
pub(crate) fn serve<F, Fut>(
    mut inbound: impl Stream<Item = Result<peer::Frames, Status>> + Send + Unpin + 'static,
    in_flight: usize,
    mut stop: watch::Receiver<bool>,
    stats: Arc<PeerRpcStats>,
    answer: F,
) -> impl Stream<Item = peer::Frames> + Send
where
    F: Fn(peer::Frame) -> Fut + Send + 'static,
    Fut: Future<Output = peer::Frame> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let limit = Arc::new(Semaphore::new(in_flight));
    tokio::spawn(async move {
        let mut saturated = false;
        loop {
            let batch = tokio::select! {
                m = inbound.next() => match m {
                    Some(Ok(batch)) => batch,
                    _ => break,
                },
                _ = stop.wait_for(|s| *s) => break,
            };
            for frame in batch.frames {
                let permit = match limit.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(TryAcquireError::Closed) => return,
                    Err(TryAcquireError::NoPermits) => {
                        if !saturated {
                            tracing::warn!(in_flight, "a peer stream's frames are all in handling: reading it waits");
                            saturated = true;
                        }
                        let Ok(p) = limit.clone().acquire_owned().await else { return };
                        p
                    }
                };
                let id = frame.id;
                let deadline = match frame.timeout_ms {
                    0 => FRAME_TIME_CAP,
                    ms => Duration::from_millis(ms.into()).min(FRAME_TIME_CAP),
                };
                let (tx, stats, handling) = (tx.clone(), stats.clone(), answer(frame));
                tokio::spawn(async move {
                    let reply = match tokio::time::timeout(deadline, handling).await {
                        Ok(reply) => reply,
                        Err(_) => {
                            stats.stream_frames_expired.fetch_add(1, Ordering::Relaxed);
                            status_frame(id, &Status::deadline_exceeded("not handled within the caller's timeout"))
                        }
                    };
                    let _ = tx.send(reply);
                    drop(permit);
                });
            }
            if limit.available_permits() > 0 {
                saturated = false;
            }
        }
    });
    batches(rx, None)
}

fn status_from_frame(s: peer::FrameStatus) -> Status {
    let mut status = Status::new(tonic::Code::from_i32(s.code), s.message);
    if let Ok(v) = MetadataValue::try_from(s.reason.as_str()) {
        if !s.reason.is_empty() {
            status.metadata_mut().insert(meridian_proto::REASON_METADATA_KEY, v);
        }
    }
    status
}

/// One open stream to one peer address: the writer's queue and the calls awaiting replies.
#[derive(Debug)]
struct Mux {
    out: mpsc::UnboundedSender<peer::Frame>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// When the stream opened: the clock of the two fields below (milliseconds since).
    opened: Instant,
    /// When the last message of replies came in.
    heard_ms: AtomicU64,
    /// Since when calls have timed out with nothing heard (sent before it, plus one; 0: none).
    silent_since_ms: AtomicU64,
    /// Ends the stream's task (the stream is closed as stuck).
    reset: Notify,
}

impl Mux {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Reply>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn complete(&self, frame: peer::Frame) {
        let Some(waiter) = self.pending().remove(&frame.id) else { return };
        let reply = match frame.body {
            Some(Body::Status(s)) => Err(status_from_frame(s)),
            Some(body) => Ok(body),
            None => Err(Status::internal("peer sent an empty reply frame")),
        };
        let _ = waiter.send(reply);
    }

    /// Marks the stream closed, then fails every call still waiting on it. A call registered
    /// after the drain sees `closed` and fails itself (both under the `pending` lock).
    /// Whether this call closed it (not an earlier one).
    fn close(&self, why: &str) -> bool {
        let first = !self.closed.swap(true, Ordering::SeqCst);
        let waiters: Vec<_> = self.pending().drain().map(|(_, w)| w).collect();
        for w in waiters {
            let _ = w.send(Err(Status::unavailable(format!("peer stream closed: {why}"))));
        }
        first
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn heard(&self) {
        self.heard_ms.store(self.now_ms(), Ordering::Relaxed);
        self.silent_since_ms.store(0, Ordering::Relaxed);
    }

    /// A call sent at `sent_ms` timed out: whether nothing has come back on the stream for
    /// `silence` while calls kept timing out.
    fn stuck(&self, sent_ms: u64, silence: Duration) -> bool {
        if self.heard_ms.load(Ordering::Relaxed) > sent_ms {
            return false;
        }
        let since = match self.silent_since_ms.compare_exchange(0, sent_ms + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => sent_ms,
            Err(earlier) => earlier - 1,
        };
        self.now_ms().saturating_sub(since) >= u64::try_from(silence.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The streams of one node to its peers, by address.
#[derive(Debug)]
pub(crate) struct Streams {
    open: Mutex<HashMap<String, Arc<Mux>>>,
    /// Peers that answered `UNIMPLEMENTED` to `Peer/Stream`, and since when.
    unary: Mutex<HashMap<String, Instant>>,
    stats: Arc<PeerRpcStats>,
    /// [`STREAM_SILENCE`], shorter in tests.
    silence: Duration,
}

/// What became of a call on the stream.
pub(crate) enum Sent {
    Reply(Reply),
    /// The peer has no `Peer/Stream`: call it unary (the request, not sent).
    Unary(Body),
}

impl Streams {
    pub(crate) fn new(stats: Arc<PeerRpcStats>, silence: Duration) -> Self {
        Self { open: Mutex::default(), unary: Mutex::default(), stats, silence }
    }

    /// Sends `body` on the stream to `addr` (opening it with `client` if need be) and waits
    /// up to `timeout` for the reply.
    pub(crate) async fn call(
        self: &Arc<Self>,
        addr: &str,
        client: impl FnOnce() -> Result<PeerClientT, Status>,
        body: Body,
        timeout: Duration,
    ) -> Sent {
        if self.is_unary(addr) {
            return Sent::Unary(body);
        }
        let mux = match self.mux(addr, client) {
            Ok(m) => m,
            Err(s) => return Sent::Reply(Err(s)),
        };
        let id = mux.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = mux.pending();
            if mux.closed.load(Ordering::SeqCst) {
                drop(pending);
                return Sent::Reply(Err(Status::unavailable("peer stream closed")));
            }
            pending.insert(id, tx);
        }
        // Calls in flight when the stream fails (the first ones against a peer without it
        // included) fail UNAVAILABLE; their callers retry, and the next call picks the way.
        let sent_ms = mux.now_ms();
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        if mux.out.send(peer::Frame { id, body: Some(body), timeout_ms }).is_err() {
            mux.pending().remove(&id);
            return Sent::Reply(Err(Status::unavailable("peer stream closed")));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Sent::Reply(reply),
            Ok(Err(_)) => Sent::Reply(Err(Status::unavailable("peer stream closed"))),
            Err(_) => {
                mux.pending().remove(&id);
                if mux.stuck(sent_ms, self.silence) && mux.close("nothing came back on it while calls timed out") {
                    self.stats.stream_resets.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %addr, silent_ms = self.silence.as_millis() as u64, "peer stream stuck: reopening it");
                    mux.reset.notify_one();
                }
                Sent::Reply(Err(Status::cancelled("Timeout expired")))
            }
        }
    }

    fn is_unary(&self, addr: &str) -> bool {
        let mut unary = self.unary.lock().unwrap_or_else(|p| p.into_inner());
        match unary.get(addr) {
            Some(since) if since.elapsed() < UNARY_RECHECK => true,
            Some(_) => {
                unary.remove(addr);
                false
            }
            None => false,
        }
    }

    /// The open stream to `addr`, or a new one.
    fn mux(
        self: &Arc<Self>,
        addr: &str,
        client: impl FnOnce() -> Result<PeerClientT, Status>,
    ) -> Result<Arc<Mux>, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = open.get(addr) {
            if !m.closed.load(Ordering::SeqCst) {
                return Ok(m.clone());
            }
        }
        let client = client()?;
        let (out, rx) = mpsc::unbounded_channel();
        let mux = Arc::new(Mux {
            out,
            pending: Mutex::default(),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            opened: Instant::now(),
            heard_ms: AtomicU64::new(0),
            silent_since_ms: AtomicU64::new(0),
            reset: Notify::new(),
        });
        open.insert(addr.to_owned(), mux.clone());
        self.stats.stream_opens.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(run(self.clone(), addr.to_owned(), mux.clone(), client, rx));
        Ok(mux)
    }
}

/// Opens the stream and hands every reply to its caller until the stream ends.
async fn run(
    streams: Arc<Streams>,
    addr: String,
    mux: Arc<Mux>,
    mut client: PeerClientT,
    rx: mpsc::UnboundedReceiver<peer::Frame>,
) {
    let why = match client.stream(batches(rx, Some(streams.stats.clone()))).await {
        Ok(response) => {
            let mut inbound = response.into_inner();
            loop {
                let message = tokio::select! {
                    m = inbound.message() => m,
                    _ = mux.reset.notified() => break "stuck".to_owned(),
                };
                match message {
                    Ok(Some(batch)) => {
                        mux.heard();
                        batch.frames.into_iter().for_each(|f| mux.complete(f));
                    }
                    Ok(None) => break "ended by the peer".to_owned(),
                    Err(s) => break s.to_string(),
                }
            }
        }
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            tracing::info!(peer = %addr, "peer has no Peer/Stream: calling it unary");
            streams.unary.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.clone(), Instant::now());
            "the peer has no Peer/Stream".to_owned()
        }
        Err(s) => s.to_string(),
    };
    tracing::debug!(peer = %addr, reason = %why, "peer stream closed");
    mux.close(&why);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(id: u64, bytes: usize) -> peer::Frame {
        let status = peer::FrameStatus { code: 0, message: "x".repeat(bytes), reason: String::new() };
        peer::Frame { id, body: Some(Body::Status(status)), timeout_ms: 0 }
    }

    #[tokio::test]
    async fn what_queued_goes_out_together_up_to_the_flush_size() {
        let (tx, rx) = mpsc::unbounded_channel();
        for id in 0..5 {
            tx.send(frame(id, 10)).unwrap();
        }
        let big = FLUSH_BYTES / 2 + 1;
        for id in 5..8 {
            tx.send(frame(id, big)).unwrap();
        }
        drop(tx);
        let sizes: Vec<Vec<u64>> =
            batches(rx, None).map(|b| b.frames.iter().map(|f| f.id).collect()).collect::<Vec<_>>().await;
        // A batch takes frames until it reaches the cap: the five small ones and two big
        // ones (the second passes it), then the last alone.
        assert_eq!(sizes, vec![vec![0, 1, 2, 3, 4, 5, 6], vec![7]]);
    }

    /// A peer with the unary calls and either no `Peer/Stream` (`earlier`: a peer of an
    /// earlier version, whose router answers `UNIMPLEMENTED` for a method it does not know),
    /// or one that takes frames and never answers (a stream stuck on a live connection).
    struct TestPeer {
        earlier: bool,
    }

    #[tonic::async_trait]
    impl peer::peer_server::Peer for TestPeer {
        async fn append_entries(
            &self,
            _: tonic::Request<peer::AppendEntriesRequest>,
        ) -> Result<tonic::Response<peer::AppendEntriesResponse>, Status> {
            use peer::append_entries_response::Result as R;
            Ok(tonic::Response::new(peer::AppendEntriesResponse {
                result: Some(R::Conflict(Default::default())),
                error: None,
            }))
        }
        async fn install_snapshot(
            &self,
            _: tonic::Request<peer::InstallSnapshotRequest>,
        ) -> Result<tonic::Response<peer::InstallSnapshotResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn vote(
            &self,
            _: tonic::Request<peer::VoteRequest>,
        ) -> Result<tonic::Response<peer::VoteResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn propose(
            &self,
            _: tonic::Request<peer::ProposeRequest>,
        ) -> Result<tonic::Response<peer::ProposeResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn read_index(
            &self,
            _: tonic::Request<peer::ReadIndexRequest>,
        ) -> Result<tonic::Response<peer::ReadIndexResponse>, Status> {
            Ok(tonic::Response::new(peer::ReadIndexResponse { read_index: 42, ..Default::default() }))
        }
        async fn change_membership(
            &self,
            _: tonic::Request<peer::ChangeMembershipRequest>,
        ) -> Result<tonic::Response<peer::ChangeMembershipResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn node_info(
            &self,
            _: tonic::Request<peer::NodeInfoRequest>,
        ) -> Result<tonic::Response<peer::NodeInfoResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn signal(
            &self,
            _: tonic::Request<peer::SignalRequest>,
        ) -> Result<tonic::Response<peer::SignalResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn presence(
            &self,
            _: tonic::Request<peer::PresenceRequest>,
        ) -> Result<tonic::Response<peer::PresenceResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        type StreamStream = std::pin::Pin<Box<dyn Stream<Item = Result<peer::Frames, Status>> + Send>>;
        async fn stream(
            &self,
            request: tonic::Request<tonic::Streaming<peer::Frames>>,
        ) -> Result<tonic::Response<Self::StreamStream>, Status> {
            if self.earlier {
                return Err(Status::unimplemented("Peer/Stream is not a method of this version"));
            }
            // Holds the frames coming in, unread, and never answers.
            let inbound = request.into_inner();
            let silent = futures::stream::unfold(inbound, |inbound| async move {
                futures::future::pending::<()>().await;
                Some((Ok(peer::Frames::default()), inbound))
            });
            Ok(tonic::Response::new(Box::pin(silent)))
        }
    }

    /// The address of a [`TestPeer`] served on a socket.
    async fn serve_test_peer(earlier: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let server = tonic::transport::Server::builder()
            .add_service(peer::peer_server::PeerServer::new(TestPeer { earlier }))
            .serve_with_incoming(incoming);
        tokio::spawn(server);
        addr
    }

    fn dialing() -> crate::network::PeerDialing {
        crate::network::PeerDialing {
            credential: crate::credential::ClusterCredential::from_secret(b"test"),
            tls: None,
            source_ip: None,
        }
    }

    #[tokio::test]
    async fn against_a_peer_without_the_stream_the_calls_go_unary() {
        let addr = serve_test_peer(true).await;
        let connections = crate::network::Connections::new(dialing());
        let append = || Body::AppendEntries(peer::AppendEntriesRequest { shard: 1, ..Default::default() });
        let timeout = Duration::from_secs(5);

        // The first call went out on a stream the peer refused: it fails UNAVAILABLE (Raft
        // retries), and the peer is remembered as one without the stream.
        let first = connections.call(&addr, append(), timeout).await.unwrap_err();
        assert_eq!(first.code(), tonic::Code::Unavailable, "{first}");
        // Every call after it goes unary, and gets the peer's own reply.
        for _ in 0..3 {
            let reply = connections.call(&addr, append(), timeout).await.unwrap();
            let Body::AppendEntriesReply(r) = reply else { panic!("{reply:?}") };
            assert!(matches!(r.result, Some(peer::append_entries_response::Result::Conflict(_))), "{r:?}");
        }
        let reply = connections.call(&addr, Body::ReadIndex(peer::ReadIndexRequest { shard: 1 }), timeout).await;
        assert!(matches!(reply, Ok(Body::ReadIndexReply(r)) if r.read_index == 42));
        assert_eq!(
            connections.stats.stream_opens.load(Ordering::Relaxed),
            1,
            "no stream tried again within the recheck"
        );
    }

    #[tokio::test]
    async fn a_stream_on_which_nothing_comes_back_is_reopened_after_the_silence() {
        let addr = serve_test_peer(false).await;
        let silence = Duration::from_millis(1000);
        let connections = crate::network::Connections::with_stream_silence(dialing(), silence);
        let append = || Body::AppendEntries(peer::AppendEntriesRequest { shard: 1, ..Default::default() });
        let timeout = Duration::from_millis(300);
        let resets = || connections.stats.stream_resets.load(Ordering::Relaxed);

        // Calls time out, and the stream stays while the silence is shorter than the window.
        for _ in 0..2 {
            let status = connections.call(&addr, append(), timeout).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Cancelled, "{status}");
        }
        assert_eq!(resets(), 0, "reset after 600 ms of a 1 s window");
        // Past the window, the timed-out call closes the stream ...
        let mut calls = 2;
        while resets() == 0 && calls < 10 {
            let status = connections.call(&addr, append(), timeout).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::Cancelled, "{status}");
            calls += 1;
        }
        assert_eq!(resets(), 1, "not reset after {calls} silent calls");
        assert!(calls >= 4, "reset after {calls} calls of 300 ms: before the 1 s window");
        assert_eq!(connections.stats.stream_opens.load(Ordering::Relaxed), 1);
        // ... and the next call opens another.
        let status = connections.call(&addr, append(), timeout).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status}");
        assert_eq!(connections.stats.stream_opens.load(Ordering::Relaxed), 2);
    }

    fn request(id: u64, timeout_ms: u32) -> peer::Frame {
        peer::Frame { id, body: Some(Body::ReadIndex(peer::ReadIndexRequest { shard: 0 })), timeout_ms }
    }

    #[tokio::test]
    async fn a_frame_is_given_up_at_its_callers_timeout_and_frees_its_place() {
        // One place: frame 1 never finishes; frame 2 is handled only once frame 1 is given
        // up at its 100 ms; frame 3 names no timeout and gets the cap.
        let frames = peer::Frames { frames: vec![request(1, 100), request(2, 60_000), request(3, 0)] };
        let inbound = futures::stream::iter([Ok(frames)]).chain(futures::stream::pending());
        let (_stop, stop) = watch::channel(false);
        let stats = Arc::<PeerRpcStats>::default();
        let replies = serve(inbound, 1, stop, stats.clone(), |frame: peer::Frame| async move {
            if frame.id == 1 {
                futures::future::pending::<()>().await;
            }
            peer::Frame { id: frame.id, body: Some(Body::ReadIndexReply(Default::default())), timeout_ms: 0 }
        });
        let replies = replies.flat_map(|b| futures::stream::iter(b.frames)).take(3).collect::<Vec<_>>();
        let replies = tokio::time::timeout(Duration::from_secs(10), replies).await.expect("frame 1 held its place");

        let ids: Vec<u64> = replies.iter().map(|f| f.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let Some(Body::Status(s)) = &replies[0].body else { panic!("{:?}", replies[0]) };
        assert_eq!(s.code, tonic::Code::DeadlineExceeded as i32, "{s:?}");
        assert!(matches!(replies[1].body, Some(Body::ReadIndexReply(_))), "{:?}", replies[1]);
        assert!(matches!(replies[2].body, Some(Body::ReadIndexReply(_))), "{:?}", replies[2]);
        assert_eq!(stats.stream_frames_expired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_refusal_keeps_its_code_and_reason_across_the_stream() {
        let mut status = Status::failed_precondition("fenced");
        status.metadata_mut().insert(
            meridian_proto::REASON_METADATA_KEY,
            MetadataValue::from_static(meridian_proto::reasons::REGION_FENCED),
        );
        let Some(Body::Status(s)) = status_frame(7, &status).body else { panic!("not a status frame") };
        let back = status_from_frame(s);
        assert_eq!(back.code(), tonic::Code::FailedPrecondition);
        assert_eq!(back.message(), "fenced");
        assert_eq!(
            back.metadata().get(meridian_proto::REASON_METADATA_KEY).and_then(|v| v.to_str().ok()),
            Some(meridian_proto::reasons::REGION_FENCED)
        );
    }
}
