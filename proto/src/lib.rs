//! Meridian's protobuf schemas and their generated Rust code.
//!
//! - [`api`]: the client and admin gRPC API (`meridian.v1`): lenient wire types, converted
//!   once into strict domain types at the node's boundary.
//! - [`durable`]: what goes to disk and into the Raft log (`meridian.durable.v1`). Versioned,
//!   and never used on the API.
//! - [`peer`]: node-to-node RPCs inside a region (`meridian.peer.v1`).
//! - [`link`]: region-to-region RPCs, the region link (`meridian.link.v1`).
//! - [`codec`]: the gRPC codec of every service (prost, with typed decode errors).
//! - [`reasons`]: every reason code the server sends, shared with the SDK.
//! - [`sync_token`]: the encoding of a `Subscribe` sync token, shared with the SDK.
//!
//! This crate holds no logic beyond those shared encodings and depends on nothing of
//! Meridian's.

#![allow(clippy::all, missing_docs)]

pub mod codec;
pub mod reasons;
pub mod sync_token;

/// Generated modules, nested as the protobuf packages are (cross-package references rely on it).
pub mod meridian {
    pub mod v1 {
        tonic::include_proto!("meridian.v1");
    }
    pub mod durable {
        pub mod v1 {
            tonic::include_proto!("meridian.durable.v1");
        }
    }
    pub mod peer {
        pub mod v1 {
            tonic::include_proto!("meridian.peer.v1");
        }
    }
    pub mod link {
        pub mod v1 {
            tonic::include_proto!("meridian.link.v1");
        }
    }
}

pub use meridian::durable::v1 as durable;
pub use meridian::link::v1 as link;
pub use meridian::peer::v1 as peer;
pub use meridian::v1 as api;

/// The encoded file descriptor set of every schema.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meridian_descriptor");
/// The encoded file descriptor set of the client API alone: what server reflection serves
/// (the peer and durable schemas are no business of a client).
pub const API_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meridian_api_descriptor");

/// The metadata key that carries an error's stable reason code.
pub const REASON_METADATA_KEY: &str = "x-meridian-reason";
/// The metadata key of a `NOT_LEADER` refusal's hint: the client address (`host:port`) of
/// the node that leads the shard, for the caller to try next.
pub const LEADER_METADATA_KEY: &str = "x-meridian-leader";
/// The metadata key with which an admin token acts as a user.
/// Response metadata: the home region of what a request was about (the conversation's, or
/// the user's for a list), for clients to call that region directly next time.
pub const HOME_REGION_METADATA_KEY: &str = "x-meridian-home-region";
pub const ACT_AS_METADATA_KEY: &str = "x-meridian-as";
