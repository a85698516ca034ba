use gust_core::Millis;

/// Where the service reads the time: injected, so tests can drive leases and retries.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or_default()
    }
}

/// A clock that moves only when told to: tests set or advance it to expire leases, make
/// retries due and age events without sleeping. Clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl ManualClock {
    /// A clock that reads `start` until it is moved.
    pub fn at(start: Millis) -> Self {
        ManualClock { now: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(start)) }
    }

    pub fn set(&self, now: Millis) {
        self.now.store(now, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the clock forward by `by` and answers the new time.
    pub fn advance(&self, by: std::time::Duration) -> Millis {
        let by = by.as_millis() as Millis;
        self.now.fetch_add(by, std::sync::atomic::Ordering::SeqCst) + by
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}
