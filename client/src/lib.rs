//! The Rust client of Meridian: calls a region's nodes over gRPC as one identity, fails over
//! between nodes, and retries what is safe to retry. Used by the `meridian` command line, the
//! chaos suite and the benches.
//!
//! Module map:
//! - [`Client`] (`client.rs`): the calls of the chat and admin APIs; authentication
//!   (`authorization: Bearer`, `x-meridian-as`), endpoint failover, retries of
//!   `NOT_LEADER`-style refusals, request ids that make retried sends take effect once.
//! - [`ClientConfig`] (`config.rs`): endpoints, token, timeouts; reading them from
//!   `MERIDIAN_ENDPOINT`, `MERIDIAN_TOKEN`, `MERIDIAN_ADMIN_TOKEN`.
//! - [`ClientError`] (`error.rs`): a server error (gRPC code, stable reason from
//!   `x-meridian-reason`, message) or a transport failure.
//! - `endpoint.rs`, `backoff.rs`: one node's lazily opened connection; retry pauses.
//! - [`cli`]: the client half of the `meridian` command line (`send`, `history`, `status`…),
//!   which the node binary flattens into its own.
//!
//! Depends only on `meridian-proto`, never on the server crates (domain, storage, raft,
//! regions, node): a client sees Meridian through its API, as any app does.

mod backoff;
pub mod cli;
mod client;
mod config;
pub mod dr;
mod endpoint;
mod error;
mod routes;

pub use client::{
    decode_sync_token, encode_sync_token, is_group_notice, message_text, new_request_id, Client, EndpointState, Stream,
    Subscription,
};
pub use config::{
    normalize_endpoint, normalize_endpoint_with, split_endpoints, ClientConfig, TokenKind, ADMIN_TOKEN_ENV, CA_ENV,
    ENDPOINT_ENV, TOKEN_ENV,
};
pub use error::{code_name, ClientError};
/// The API's wire types, so that users of this crate need not depend on `meridian-proto`.
pub use meridian_proto::api;
