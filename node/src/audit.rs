//! The residency audit (`Admin/AuditResidency`, `meridian audit residency`): every node of
//! every region scans everything it stores — every column family, the Raft log, the snapshot
//! files — and reports each record whose subject's home region is a `strict` one other than
//! the node's own (`meridian_storage::audit` says what a record's subject is).
//!
//! Home regions come from the directory (never from the record itself, which is what is being
//! checked). A subject whose home cannot be looked up (its owner region is down) makes the
//! node's audit incomplete: reported as an error, never as clean.

use std::collections::BTreeSet;

use meridian_proto::api;
use meridian_regions::Residency;
use meridian_storage::audit::Subject;

use crate::api::error::ApiError;
use crate::api::Context;

/// Violations listed per node (all are counted).
const MAX_LISTED: usize = 100;

/// Audits this node's store.
pub async fn this_node(ctx: &Context) -> Result<api::NodeAudit, ApiError> {
    let db = ctx.node.db().clone();
    let snapshot_dir = ctx.snapshot_dir.clone();
    let region = ctx.topology.region().clone();
    let mut scan = tokio::task::spawn_blocking(move || meridian_storage::audit::scan(&db, &snapshot_dir, &region))
        .await
        .map_err(|e| ApiError::Internal(format!("audit task: {e}")))??;
    // The archive's segments: what the manifests name, read back from the store.
    for shard in ctx.node.shards() {
        for segment in shard.store.archived_segments()? {
            let archive = ctx.archive.as_deref().ok_or(crate::archive::ArchiveError::NotConfigured)?;
            let events = archive.segment_events(&segment, segment.first, usize::MAX).await?;
            scan.see_archived(&format!("archive {}", segment.key), &events);
        }
    }
    let region = ctx.topology.region();
    let mut audit = api::NodeAudit {
        region: region.to_string(),
        node_id: ctx.node.node_id,
        records_scanned: scan.records,
        ..Default::default()
    };
    let mut people = BTreeSet::new();
    let mut unresolved = 0u64;
    for (subject, sighting) in &scan.subjects {
        let users = match subject {
            Subject::User(user) => vec![user.clone()],
            Subject::Conversation(c) => c.c2c_members().map(|(a, b)| vec![a, b]).unwrap_or_default(),
        };
        for user in users {
            people.insert(user.clone());
            let Some(geo) = &ctx.geo else { continue };
            let home = match geo.directory_home(&user).await {
                Ok(Some(home)) => home,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(%user, error = %e, "residency audit: home region not found");
                    unresolved += 1;
                    continue;
                }
            };
            if &home == region || geo.policy(&home)? != Residency::Strict {
                continue;
            }
            audit.violation_count += sighting.records;
            if audit.violations.len() < MAX_LISTED {
                audit.violations.push(api::ResidencyViolation {
                    location: sighting.location.clone(),
                    key: sighting.key.clone(),
                    subject: user.to_string(),
                    subject_home: home.to_string(),
                    what: sighting.what.to_owned(),
                    records: sighting.records,
                });
            }
        }
    }
    audit.subjects_seen = people.len() as u64;
    if unresolved > 0 {
        audit.error = format!("incomplete: the home region of {unresolved} subject(s) could not be looked up");
    }
    if scan.unreadable > 0 {
        tracing::warn!(records = scan.unreadable, "residency audit: records that did not decode");
    }
    Ok(audit)
}

/// Audits every node of every region of the topology (this node alone without one).
pub async fn every_node(ctx: &Context) -> Result<Vec<api::NodeAudit>, ApiError> {
    let Some(geo) = &ctx.geo else {
        return Ok(vec![this_node(ctx).await?]);
    };
    let calls = geo.audit_targets().into_iter().map(|(region, node_id, addr, client)| async move {
        let failed = |error: String| api::NodeAudit {
            region: region.to_string(),
            node_id,
            addr: addr.clone(),
            error,
            ..Default::default()
        };
        let mut audit = match client {
            None => this_node(ctx).await.unwrap_or_else(|e| failed(e.to_string())),
            Some(mut client) => {
                let call = client.audit(meridian_proto::link::AuditRequest {});
                match tokio::time::timeout(std::time::Duration::from_secs(120), call).await {
                    Ok(Ok(r)) => r.into_inner().audit.unwrap_or_else(|| failed("empty answer".into())),
                    Ok(Err(status)) => failed(format!("not audited: {}", status.message())),
                    Err(_) => failed("not audited: no answer in 120 s".into()),
                }
            }
        };
        audit.addr = addr.clone();
        audit
    });
    Ok(futures::future::join_all(calls).await)
}
