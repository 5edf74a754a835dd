//! `[callbacks]` and `[push]`: the app's webhooks (DLV-03, DLV-04). See docs/webhooks.md.

use serde::{Deserialize, Serialize};

use super::Problems;

/// Longest accepted webhook timeout, in milliseconds.
pub const MAX_HOOK_TIMEOUT_MS: u64 = 60_000;

/// What a before-callback does: not asked, or asked with the request allowed (`fail-open`)
/// or refused (`fail-closed`) when the app does not answer in time or answers nonsense.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BeforeMode {
    #[default]
    Off,
    FailOpen,
    FailClosed,
}

/// The app's callbacks (`[callbacks]`): one endpoint, told which callback a request is by
/// its `command` field (and the `x-meridian-command` header).
///
/// Before-callbacks run at the accepting node before anything is proposed: the app may refuse
/// the request (`CALLBACK_REJECTED`, with its reason) or, for a send, rewrite the message.
/// After-callbacks are sent from the event log by the shard's leader, at least once and in
/// log order (so in order per conversation and per group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CallbacksConfig {
    /// The app's endpoint, `http://host:port/path`; unset = no callbacks. Every node of the
    /// region should carry the same `[callbacks]`.
    pub url: Option<String>,
    /// Key of the HMAC-SHA256 signature of each request's body (`x-meridian-signature:
    /// sha256=HEX`); unset = unsigned.
    pub secret: Option<String>,
    /// How long a callback may take, in milliseconds. Default 2000.
    pub timeout_ms: u64,
    /// One-to-one, group and topic sends (may reject or rewrite).
    pub before_send: BeforeMode,
    /// Group creation.
    pub before_create_group: BeforeMode,
    /// Joining a group: a join, an invitation, an application.
    pub before_join_group: BeforeMode,
    /// A friend request or direct add.
    pub before_add_friend: BeforeMode,
    /// Every accepted message (one-to-one, group, topic).
    pub after_send: bool,
    /// Every created group.
    pub after_create_group: bool,
    /// Every member who joined a group.
    pub after_join_group: bool,
    /// Every new friendship.
    pub after_add_friend: bool,
    /// Attempts of one after-callback before it is given up (logged and counted in
    /// `meridian_webhook_dropped_total`), with backoff from 100 ms doubling to 5 s. Default 8.
    pub max_attempts: u32,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            timeout_ms: 2000,
            before_send: BeforeMode::Off,
            before_create_group: BeforeMode::Off,
            before_join_group: BeforeMode::Off,
            before_add_friend: BeforeMode::Off,
            after_send: false,
            after_create_group: false,
            after_join_group: false,
            after_add_friend: false,
            max_attempts: 8,
        }
    }
}

impl CallbacksConfig {
    /// Whether any after-callback is on (the shard leaders then send from the log).
    pub fn any_after(&self) -> bool {
        self.url.is_some()
            && (self.after_send || self.after_create_group || self.after_join_group || self.after_add_friend)
    }

    pub(super) fn validate(&self, p: &mut Problems) {
        validate_url(p, "callbacks.url", self.url.as_deref());
        validate_timeout(p, "callbacks.timeout-ms", self.timeout_ms);
        p.check((1..=100).contains(&self.max_attempts), "callbacks.max-attempts", || {
            format!("{} is out of range: use 1..=100 (default 8)", self.max_attempts)
        });
        let any = [self.before_send, self.before_create_group, self.before_join_group, self.before_add_friend]
            .iter()
            .any(|m| *m != BeforeMode::Off)
            || self.after_send
            || self.after_create_group
            || self.after_join_group
            || self.after_add_friend;
        p.check(!any || self.url.is_some(), "callbacks.url", || {
            "missing: a callback is switched on, so set the app's endpoint (http://host:port/path)".into()
        });
    }
}

/// What an offline push shows of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PreviewMode {
    /// The sender and the start of the text (or the kind: `[image]`, `[file]`, ...).
    #[default]
    Text,
    /// Neither sender nor content: "a new message" only.
    Hidden,
}

/// Offline push (`[push]`): a message for a member with no live stream anywhere in the
/// region goes, batched, to the app's push endpoint, which hands it to APNs, FCM and the
/// like. Sent from the event log by the shard's leader, at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PushConfig {
    /// The push endpoint, `http://host:port/path`; unset = no offline push.
    pub url: Option<String>,
    /// Key of the HMAC-SHA256 signature of each request's body; unset = unsigned.
    pub secret: Option<String>,
    /// How long one push request may take, in milliseconds. Default 2000.
    pub timeout_ms: u64,
    /// Most pushes one request carries. Default 100.
    pub batch: usize,
    /// How long a batch waits for more pushes before it goes, in milliseconds. Default 100.
    pub linger_ms: u64,
    /// Attempts of one request before it is given up (logged and counted), with backoff
    /// from 100 ms doubling to 5 s. Default 8.
    pub max_attempts: u32,
    /// What a push shows of the message; a conversation the recipient set to do-not-disturb
    /// is pushed silent, without preview, whatever this says. Default `text`.
    pub preview: PreviewMode,
    /// Members of a group past which a group message is not pushed (a live broadcast to a
    /// huge group goes to the app's own channels). Default 10000.
    pub max_group_members: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            timeout_ms: 2000,
            batch: 100,
            linger_ms: 100,
            max_attempts: 8,
            preview: PreviewMode::Text,
            max_group_members: 10_000,
        }
    }
}

impl PushConfig {
    pub(super) fn validate(&self, p: &mut Problems) {
        validate_url(p, "push.url", self.url.as_deref());
        validate_timeout(p, "push.timeout-ms", self.timeout_ms);
        p.check((1..=1000).contains(&self.batch), "push.batch", || {
            format!("{} is out of range: use 1..=1000 pushes a request (default 100)", self.batch)
        });
        p.check(self.linger_ms <= 10_000, "push.linger-ms", || {
            format!("{} is out of range: use 0..=10000 ms (default 100)", self.linger_ms)
        });
        p.check((1..=100).contains(&self.max_attempts), "push.max-attempts", || {
            format!("{} is out of range: use 1..=100 (default 8)", self.max_attempts)
        });
        p.check((1..=10_000_000).contains(&self.max_group_members), "push.max-group-members", || {
            format!("{} is out of range: use 1..=10000000 (default 10000)", self.max_group_members)
        });
    }
}

fn validate_url(p: &mut Problems, field: &str, url: Option<&str>) {
    if let Some(url) = url {
        if let Err(e) = crate::hooks::http::HookUrl::parse(url) {
            p.check(false, field, || e);
        }
    }
}

fn validate_timeout(p: &mut Problems, field: &str, ms: u64) {
    p.check((1..=MAX_HOOK_TIMEOUT_MS).contains(&ms), field, || {
        format!("{ms} is out of range: use 1..={MAX_HOOK_TIMEOUT_MS} ms (default 2000)")
    });
}
