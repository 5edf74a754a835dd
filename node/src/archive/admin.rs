//! `Admin/Archive`: status, verify and gc of the region's archive, as this node sees it.

use std::collections::HashSet;

use meridian_proto::api;

use super::ArchiveError;
use crate::api::error::ApiError;
use crate::api::Context;

/// Answers one `Admin/Archive` call.
pub async fn answer(ctx: &Context, req: &api::ArchiveRequest) -> Result<api::ArchiveResponse, ApiError> {
    let mut response = api::ArchiveResponse { node_id: ctx.node.node_id, ..Default::default() };
    let mut named = HashSet::new();
    let mut segments = Vec::new();
    for shard in ctx.node.shards() {
        // The manifest as committed, not as this replica last applied it (gc must not take
        // a segment for garbage because this node is behind).
        if req.action() == api::ArchiveAction::ArchiveGc {
            ctx.node.read_barrier(shard.id).await?;
        }
        let manifest = shard.store.archived_segments()?;
        let first_hot = shard.store.first_hot_event()?;
        response.shards.push(api::ShardArchive {
            shard: shard.id.0,
            segments: manifest.len() as u64,
            bytes: manifest.iter().map(|s| s.bytes).sum(),
            events: manifest.iter().map(|s| s.events).sum(),
            cold_up_to: manifest.last().map(|s| s.last.to_string()).unwrap_or_default(),
            first_hot: first_hot.map(|o| o.to_string()).unwrap_or_default(),
            last_sealed_ms: manifest.last().map_or(0, |s| s.sealed_at.0),
            keys: manifest.iter().map(|s| s.key.clone()).collect(),
        });
        named.extend(manifest.iter().map(|s| s.key.clone()));
        segments.extend(manifest);
    }
    let Some(archive) = ctx.archive.as_deref() else {
        if !segments.is_empty() && req.action() != api::ArchiveAction::ArchiveStatus {
            return Err(ArchiveError::NotConfigured.into());
        }
        return Ok(response);
    };
    response.enabled = true;
    response.root = archive.root().to_owned();
    response.hot_window_seconds = archive.config.hot_window_seconds;
    match req.action() {
        api::ArchiveAction::ArchiveStatus => {}
        api::ArchiveAction::ArchiveVerify => {
            for segment in &segments {
                match archive.verify_segment(segment).await {
                    Ok(_) => response.verified_segments += 1,
                    Err(e @ ArchiveError::Unavailable(_)) => return Err(e.into()),
                    Err(e) => response.problems.push(format!("{}: {e}", segment.key)),
                }
            }
        }
        api::ArchiveAction::ArchiveGc => {
            let grace = chrono::Duration::seconds(i64::try_from(req.gc_grace_seconds).unwrap_or(i64::MAX));
            let now = chrono::Utc::now();
            let objects = archive.list().await?;
            response.objects_listed = objects.len() as u64;
            for (key, modified) in objects {
                if named.contains(&key) || now.signed_duration_since(modified) < grace {
                    continue;
                }
                archive.delete(&key).await?;
                tracing::info!(key, "archive gc: removed an object no manifest names");
                response.removed.push(key);
            }
        }
    }
    Ok(response)
}
