//! The control-plane cache that keeps store reads off the invocation hot path.
//!
//! Entries are valid for one control-plane snapshot. This server's own writes invalidate the
//! cache immediately (read-your-writes); other servers' writes are noticed when the snapshot
//! poller sees the store's snapshot version move (bounded staleness, as DESIGN.md allows).
//! A generation number stops a read that began before an invalidation from re-inserting what
//! it read.

use std::collections::HashMap;
use std::sync::Arc;

use gust_core::{Alias, Deployment, FunctionConfig, Resolved};
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
    aliases: HashMap<(String, String), Arc<Alias>>,
    deployments: HashMap<(String, Resolved), Arc<Deployment>>,
}

/// Bounds the cache: past this many entries of a kind it is cleared rather than grown.
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
        self.inner.lock().aliases.get(&(function.to_string(), alias.to_string())).cloned()
    }

    pub(crate) fn deployment(&self, function: &str, resolved: Resolved) -> Option<Arc<Deployment>> {
        self.inner.lock().deployments.get(&(function.to_string(), resolved)).cloned()
    }

    pub(crate) fn insert_function(&self, generation: u64, f: Arc<FunctionConfig>) {
        let mut inner = self.inner.lock();
        if inner.generation == generation {
            if inner.functions.len() >= MAX_ENTRIES {
                inner.functions.clear();
            }
            inner.functions.insert(f.name.clone(), f);
        }
    }

    pub(crate) fn insert_alias(&self, generation: u64, a: Arc<Alias>) {
        let mut inner = self.inner.lock();
        if inner.generation == generation {
            if inner.aliases.len() >= MAX_ENTRIES {
                inner.aliases.clear();
            }
            inner.aliases.insert((a.function.clone(), a.name.clone()), a);
        }
    }

    pub(crate) fn insert_deployment(&self, generation: u64, d: Arc<Deployment>) {
        let mut inner = self.inner.lock();
        if inner.generation == generation {
            if inner.deployments.len() >= MAX_ENTRIES {
                inner.deployments.clear();
            }
            inner.deployments.insert((d.function.clone(), d.resolved), d);
        }
    }
}
