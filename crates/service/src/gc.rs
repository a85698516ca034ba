//! Garbage collection of code: artifacts in the store, and this server's own caches (task
//! roots, compiled modules), once nothing references them.
//!
//! A background task, off the hot path: every [`GcConfig::interval`] it asks the store to
//! delete unreferenced code older than the grace ([`gust_store::Store::collect_code`], one
//! transaction with its reference check), then has the executor drop cached code the store no
//! longer references and nothing uses ([`Executor::collect_cache`]). Several servers may run
//! it at once (the store lets one collect at a time and the others skip the round); a kill in
//! the middle leaves either the reference or the code, never a reference without its code.
//! It logs what it freed (counts and bytes, never contents).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::{Service, ServiceError};

/// How often code is collected.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(600);
/// How long unreferenced code survives. It covers an upload between storing the artifact and
/// the config write that names it, and a sync invocation admitted against a `$LATEST` revision
/// just superseded (at most the longest function timeout, 900 s, plus its start).
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);
/// Most artifacts one collection deletes (the rest go in the next round).
pub const DEFAULT_GC_BATCH: usize = 1_000;

/// When and how much code is collected.
#[derive(Debug, Clone, Copy)]
pub struct GcConfig {
    pub interval: Duration,
    pub grace: Duration,
    pub batch: usize,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { interval: DEFAULT_GC_INTERVAL, grace: DEFAULT_GC_GRACE, batch: DEFAULT_GC_BATCH }
    }
}

/// What a node's code caches freed ([`Executor::collect_cache`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheCollected {
    pub task_roots: u64,
    pub modules: u64,
    pub bytes: u64,
}

/// What one collection freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// `$LATEST` revisions deleted.
    pub revisions: u64,
    pub artifacts: u64,
    pub artifact_bytes: u64,
    pub cache: CacheCollected,
}

impl Service {
    /// One collection: unreferenced code in the store, then this node's caches.
    pub async fn collect_code(&self, cfg: GcConfig) -> Result<GcReport, ServiceError> {
        let grace_ms = i64::try_from(cfg.grace.as_millis()).unwrap_or(i64::MAX);
        let collected = self.store.collect_code(self.clock.now().saturating_sub(grace_ms), cfg.batch).await?;
        // Read after the store's collection: what it kept is what the caches keep.
        let keep: HashSet<String> = self.store.referenced_code().await?.into_iter().collect();
        let cache = self.executor.collect_cache(keep, cfg.grace).await;
        Ok(GcReport {
            revisions: collected.revisions,
            artifacts: collected.artifacts.len() as u64,
            artifact_bytes: collected.bytes,
            cache,
        })
    }

    /// Collects code every `cfg.interval` until the task is dropped or the server shuts down.
    pub async fn collect_code_forever(self: Arc<Self>, cfg: GcConfig) {
        loop {
            tokio::time::sleep(cfg.interval).await;
            if self.is_shutting_down() {
                return;
            }
            match self.collect_code(cfg).await {
                Ok(r) if r == GcReport::default() => tracing::debug!("code collection: nothing to free"),
                Ok(r) => tracing::info!(
                    revisions = r.revisions,
                    artifacts = r.artifacts,
                    artifact_bytes = r.artifact_bytes,
                    task_roots = r.cache.task_roots,
                    modules = r.cache.modules,
                    cache_bytes = r.cache.bytes,
                    "code collection freed unreferenced code"
                ),
                Err(e) => tracing::warn!(error = %e, "code collection failed; retrying next round"),
            }
        }
    }
}
