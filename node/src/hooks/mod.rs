//! The app's webhooks: before- and after-callbacks (DLV-04) and offline push (DLV-03).
//!
//! A before-callback runs at the node that accepted the request, before anything is proposed:
//! the app answers `{"action": "allow"}` (a send may add `"elements": [...]` to rewrite the
//! message) or `{"action": "reject", "reason": "..."}`, which refuses the call with
//! `CALLBACK_REJECTED` and the app's reason. A callback that fails (no answer within the
//! timeout, a non-2xx status, an answer that is not one of those) lets the request through
//! when the callback is `fail-open` and refuses it with `CALLBACK_FAILED` when `fail-closed`.
//!
//! After-callbacks and pushes are sent from the event log by each shard's leader
//! ([`sender`]): in log order, retried with backoff, and at least once — the shard records
//! how far they went with a `HooksSent` command, and a new leader resumes from there.

pub mod elements;
pub mod http;
pub mod sender;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_domain::element::Element;
use meridian_domain::{Reason, Rejection};
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::config::{BeforeMode, CallbacksConfig, NodeConfig, PushConfig};
use http::{HookClient, HookUrl};

/// Counters for `/metrics` (one node per process).
#[derive(Debug, Default)]
pub struct HookMetrics {
    pub callbacks_sent: AtomicU64,
    pub callbacks_failed: AtomicU64,
    pub callbacks_rejected: AtomicU64,
    pub pushes_sent: AtomicU64,
    /// After-callbacks and push requests given up after their last attempt.
    pub dropped: AtomicU64,
}

pub static METRICS: HookMetrics = HookMetrics {
    callbacks_sent: AtomicU64::new(0),
    callbacks_failed: AtomicU64::new(0),
    callbacks_rejected: AtomicU64::new(0),
    pushes_sent: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
};

/// Which before-callback a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    Send,
    CreateGroup,
    JoinGroup,
    AddFriend,
}

impl Before {
    pub fn command(self) -> &'static str {
        match self {
            Before::Send => "before-send",
            Before::CreateGroup => "before-create-group",
            Before::JoinGroup => "before-join-group",
            Before::AddFriend => "before-add-friend",
        }
    }
}

/// The node's webhooks, as configured.
#[derive(Debug)]
pub struct Hooks {
    callbacks: Option<HookClient>,
    config: CallbacksConfig,
    push: Option<HookClient>,
    push_config: PushConfig,
    app_id: String,
    region: String,
}

impl Hooks {
    /// The webhooks of `config` (validated: its URLs parse).
    pub fn new(config: &NodeConfig) -> Hooks {
        let client = |url: &Option<String>, secret: &Option<String>, timeout_ms: u64| {
            url.as_deref()
                .and_then(|u| HookUrl::parse(u).ok())
                .map(|url| HookClient::new(url, secret.clone(), Duration::from_millis(timeout_ms)))
        };
        Hooks {
            callbacks: client(&config.callbacks.url, &config.callbacks.secret, config.callbacks.timeout_ms),
            config: config.callbacks.clone(),
            push: client(&config.push.url, &config.push.secret, config.push.timeout_ms),
            push_config: config.push.clone(),
            app_id: config.auth.app_id.clone(),
            region: config.region.clone(),
        }
    }

    fn mode(&self, which: Before) -> BeforeMode {
        if self.callbacks.is_none() {
            return BeforeMode::Off;
        }
        match which {
            Before::Send => self.config.before_send,
            Before::CreateGroup => self.config.before_create_group,
            Before::JoinGroup => self.config.before_join_group,
            Before::AddFriend => self.config.before_add_friend,
        }
    }

    /// Whether the shard leaders send anything from the log.
    pub fn sends_from_log(&self) -> bool {
        self.config.any_after() || self.push.is_some()
    }

    /// Asks the app's before-callback `which` about `fields` (an object); `Ok(None)` when the
    /// callback is off or the request may go on unchanged, `Ok(Some(answer))` when the app
    /// allowed it with an answer to read (a rewrite).
    pub async fn before(&self, which: Before, fields: Value) -> Result<Option<Value>, ApiError> {
        let mode = self.mode(which);
        let Some(client) = self.callbacks.as_ref().filter(|_| mode != BeforeMode::Off) else { return Ok(None) };
        let mut body = json!({"command": which.command(), "app_id": self.app_id, "region": self.region});
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        let failed = |why: String| -> Result<Option<Value>, ApiError> {
            METRICS.callbacks_failed.fetch_add(1, Ordering::Relaxed);
            match mode {
                BeforeMode::FailClosed => {
                    tracing::warn!(callback = which.command(), error = %why, "a fail-closed callback failed: refused");
                    Err(Rejection::new(
                        Reason::CallbackFailed,
                        format!("the app's {} callback failed ({why}); nothing was done", which.command()),
                    )
                    .into())
                }
                _ => {
                    tracing::warn!(callback = which.command(), error = %why, "a fail-open callback failed: allowed");
                    Ok(None)
                }
            }
        };
        let answer = match client.post(which.command(), &body).await {
            Ok(answer) => answer,
            Err(e) => return failed(e.to_string()),
        };
        METRICS.callbacks_sent.fetch_add(1, Ordering::Relaxed);
        let action = match &answer {
            Value::Null => "allow",
            Value::Object(o) => match o.get("action").and_then(Value::as_str) {
                Some(a) => a,
                None => return failed("the answer has no `action`".into()),
            },
            _ => return failed("the answer is not a JSON object".into()),
        };
        match action {
            "allow" => Ok(Some(answer)),
            "reject" => {
                METRICS.callbacks_rejected.fetch_add(1, Ordering::Relaxed);
                let reason = answer.get("reason").and_then(Value::as_str).unwrap_or("no reason given");
                let reason: String = reason.chars().take(512).collect();
                Err(Rejection::new(Reason::CallbackRejected, format!("the app refused it: {reason}")).into())
            }
            other => failed(format!("the answer's action {other:?} is neither allow nor reject")),
        }
    }

    /// The before-send callback: the body to send (the app's rewrite, or `elements`).
    pub async fn before_send(&self, fields: Value, elements: Vec<Element>) -> Result<Vec<Element>, ApiError> {
        if self.mode(Before::Send) == BeforeMode::Off {
            return Ok(elements);
        }
        let mut fields = fields;
        if let Some(o) = fields.as_object_mut() {
            o.insert("elements".into(), elements::body_to_json(&elements));
        }
        let Some(answer) = self.before(Before::Send, fields).await? else { return Ok(elements) };
        let Some(rewrite) = answer.get("elements").filter(|e| !e.is_null()) else { return Ok(elements) };
        match elements::body_from_json(rewrite) {
            Ok(rewritten) => Ok(rewritten),
            Err(why) => {
                METRICS.callbacks_failed.fetch_add(1, Ordering::Relaxed);
                if self.mode(Before::Send) == BeforeMode::FailClosed {
                    return Err(Rejection::new(
                        Reason::CallbackFailed,
                        format!("the app's before-send rewrite is invalid ({why}); nothing was sent"),
                    )
                    .into());
                }
                tracing::warn!(error = %why, "a before-send rewrite is invalid: the message goes as sent (fail-open)");
                Ok(elements)
            }
        }
    }
}
