//! The control-plane cache that keeps store reads off the invocation hot path.
//!
//! Entries are valid for one control-plane snapshot. This server's own writes invalidate the
//! cache immediately (read-your-writes); other servers' writes are noticed when the snapshot
//! poller sees the store's snapshot version move (bounded staleness, as DESIGN.md allows).
//! A generation number stops a read that began before an invalidation from re-inserting what
//! it read.

use std::collections::HashMap;
use std::sync::Arc;

use gust_core::{Alias, Deployment, FunctionConfig, FunctionUrl, Resolved};
use parking_lot::Mutex;

#[derive(Default)]
pub(crate) struct ControlCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    snapshot: u64,
    functions: HashMap<String, Arc<FunctionConfig>>,
    /// function → alias → alias (nested so lookups by `&str` allocate nothing).
    aliases: HashMap<String, HashMap<String, Arc<Alias>>>,
    deployments: HashMap<String, HashMap<Resolved, Arc<Deployment>>>,
    /// Every function URL by id, loaded whole (so an unknown id costs no store read).
    urls: Option<Arc<UrlTable>>,
    entries: usize,
}

/// Function URLs by id.
pub(crate) type UrlTable = HashMap<String, Arc<FunctionUrl>>;

/// Bounds the cache: past this many entries it is cleared rather than grown.
const MAX_ENTRIES: usize = 100_000;

impl ControlCache {
    pub(crate) fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    pub(crate) fn invalidate(&self) {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        inner.functions.clear();
        inner.aliases.clear();
        inner.deployments.clear();
        inner.urls = None;
        inner.entries = 0;
    }

    /// Records the store's snapshot version; a change invalidates everything cached.
    pub(crate) fn observe_snapshot(&self, snapshot: u64) {
        let changed = {
            let mut inner = self.inner.lock();
            let changed = inner.snapshot != snapshot;
            inner.snapshot = snapshot;
            changed
        };
        if changed {
            self.invalidate();
        }
    }

    pub(crate) fn function(&self, name: &str) -> Option<Arc<FunctionConfig>> {
        self.inner.lock().functions.get(name).cloned()
    }

    pub(crate) fn alias(&self, function: &str, alias: &str) -> Option<Arc<Alias>> {
        self.inner.lock().aliases.get(function).and_then(|m| m.get(alias)).cloned()
    }

    pub(crate) fn deployment(&self, function: &str, resolved: Resolved) -> Option<Arc<Deployment>> {
        self.inner.lock().deployments.get(function).and_then(|m| m.get(&resolved)).cloned()
    }

    pub(crate) fn urls(&self) -> Option<Arc<UrlTable>> {
        self.inner.lock().urls.clone()
    }

    pub(crate) fn insert_urls(&self, generation: u64, urls: Arc<UrlTable>) {
        let mut inner = self.inner.lock();
        if inner.generation == generation {
            inner.urls = Some(urls);
        }
    }

    /// Locks the cache for an insert if nothing was invalidated since `generation`; makes room
    /// by clearing everything when the bound is reached.
    fn for_insert(&self, generation: u64) -> Option<parking_lot::MutexGuard<'_, Inner>> {
        let mut inner = self.inner.lock();
        if inner.generation != generation {
            return None;
        }
        if inner.entries >= MAX_ENTRIES {
            inner.functions.clear();
            inner.aliases.clear();
            inner.deployments.clear();
            inner.entries = 0;
        }
        inner.entries += 1;
        Some(inner)
    }

    pub(crate) fn insert_function(&self, generation: u64, f: Arc<FunctionConfig>) {
        if let Some(mut inner) = self.for_insert(generation) {
            inner.functions.insert(f.name.clone(), f);
        }
    }

    pub(crate) fn insert_alias(&self, generation: u64, a: Arc<Alias>) {
        if let Some(mut inner) = self.for_insert(generation) {
            inner.aliases.entry(a.function.clone()).or_default().insert(a.name.clone(), a);
        }
    }

    pub(crate) fn insert_deployment(&self, generation: u64, d: Arc<Deployment>) {
        if let Some(mut inner) = self.for_insert(generation) {
            inner.deployments.entry(d.function.clone()).or_default().insert(d.resolved, d);
        }
    }
}
