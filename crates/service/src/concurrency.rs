//! Reserved concurrency: how many invocations of a function this server runs (or waits on, for
//! remote sync work) at once, and, where servers share the store, how many run across all of
//! them (a slot in the store per invocation). A permit or slot is taken before an attempt
//! starts and given back when it ends, on every path, by `Drop`.

use std::collections::HashMap;

use parking_lot::Mutex;

#[derive(Default)]
pub(crate) struct Limiter {
    running: Mutex<HashMap<String, u32>>,
}

/// One running invocation of `function`, counted until dropped.
pub(crate) struct Permit<'a> {
    limiter: &'a Limiter,
    function: String,
}

impl Limiter {
    /// A permit if fewer than `limit` invocations of `function` run; `None` means throttled.
    pub(crate) fn try_acquire(&self, function: &str, limit: Option<u32>) -> Option<Option<Permit<'_>>> {
        let Some(limit) = limit else { return Some(None) };
        let mut running = self.running.lock();
        let n = running.entry(function.to_string()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Some(Permit { limiter: self, function: function.to_string() }))
    }

    #[cfg(test)]
    fn running(&self, function: &str) -> u32 {
        self.running.lock().get(function).copied().unwrap_or(0)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut running = self.limiter.running.lock();
        if let Some(n) = running.get_mut(&self.function) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.function);
            }
        }
    }
}

/// One of a function's reserved-concurrency slots in a shared store, held by this server
/// process for one running invocation; given back when dropped.
pub(crate) struct Slot {
    store: std::sync::Arc<dyn gust_store::Store>,
    function: String,
    slot: u32,
    holder: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (store, function, holder, slot) = (
            self.store.clone(),
            std::mem::take(&mut self.function),
            std::mem::take(&mut self.holder),
            self.slot,
        );
        // A release that fails (or never runs: the process ends) leaves the slot to expire.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.release_slot(&function, slot, &holder).await {
                    tracing::warn!(%function, slot, error = %e, "releasing a concurrency slot failed");
                }
            });
        }
    }
}

impl crate::Service {
    /// Reserved concurrency across every server sharing the store: a slot of `function`'s
    /// `limit`, held while the invocation runs here. `Ok(None)`: nothing to count (no limit,
    /// or a store this process owns, where [`Limiter`] alone is exact); `Err(())`: throttled.
    pub(crate) async fn cluster_slot(
        &self, function: &str, limit: Option<u32>,
    ) -> Result<Result<Option<Slot>, ()>, crate::ServiceError> {
        let Some(limit) = limit else { return Ok(Ok(None)) };
        if !self.store.shared() {
            return Ok(Ok(None));
        }
        let now = self.clock.now();
        let until = now + self.cfg.lease.as_millis() as i64;
        let holder = self.cfg.worker_id.0.clone();
        Ok(match self.store.acquire_slot(function, limit, &holder, until, now).await? {
            Some(slot) => {
                Ok(Some(Slot { store: self.store.clone(), function: function.to_string(), slot, holder }))
            }
            None => Err(()),
        })
    }

    /// Keeps this server's concurrency slots held while their invocations run (a server that
    /// stops renewing loses them after a lease: see ARCHITECTURE.md for the bound).
    pub(crate) async fn slot_renewer(self: std::sync::Arc<Self>) {
        let every = self.cfg.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let until = self.clock.now() + self.cfg.lease.as_millis() as i64;
            self.remote_slots.drop_silent(self.cfg.lease);
            if let Err(e) = self.store.renew_slots(&self.cfg.worker_id.0, until).await {
                tracing::warn!(error = %e, "renewing concurrency slots failed");
            }
        }
    }
}

/// The error an attempt handed back at its function's reserved concurrency carries.
pub(crate) fn throttled(function: &str) -> gust_core::FunctionErrorBody {
    gust_core::FunctionErrorBody::new(
        gust_core::ErrorKind::FunctionError,
        format!("throttled: {function} is at its reserved concurrency"),
    )
}

/// Slots this server holds for async attempts running on its remote workers, by invocation,
/// with when their worker last renewed the attempt: given back when the attempt completes or
/// is handed back, or once its worker has been silent for a lease (its lease has expired, so
/// the attempt is recovered elsewhere).
#[derive(Default)]
pub(crate) struct RemoteSlots(Mutex<HashMap<gust_core::InvocationId, (Slot, std::time::Instant)>>);

impl RemoteSlots {
    pub(crate) fn hold(&self, id: gust_core::InvocationId, slot: Slot) {
        self.0.lock().insert(id, (slot, std::time::Instant::now()));
    }

    pub(crate) fn renewed<'a>(&self, ids: impl Iterator<Item = &'a gust_core::InvocationId>) {
        let mut held = self.0.lock();
        for id in ids {
            if let Some((_, at)) = held.get_mut(id) {
                *at = std::time::Instant::now();
            }
        }
    }

    pub(crate) fn end(&self, id: &gust_core::InvocationId) {
        self.0.lock().remove(id);
    }

    fn drop_silent(&self, lease: std::time::Duration) {
        self.0.lock().retain(|_, (_, at)| at.elapsed() <= lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_per_function_and_returned_on_drop() {
        let l = Limiter::default();
        assert!(matches!(l.try_acquire("f", None), Some(None)), "no limit, nothing counted");
        let a = l.try_acquire("f", Some(2)).unwrap();
        let b = l.try_acquire("f", Some(2)).unwrap();
        assert!(l.try_acquire("f", Some(2)).is_none(), "a third is throttled");
        assert!(l.try_acquire("g", Some(1)).is_some(), "other functions are independent");
        assert!(l.try_acquire("z", Some(0)).is_none(), "zero throttles everything");
        drop(a);
        assert_eq!(l.running("f"), 1);
        assert!(l.try_acquire("f", Some(2)).is_some());
        drop(b);
        assert_eq!(l.running("f"), 0);
    }
}
