//! Reserved concurrency: how many invocations of a function this server runs (or waits on, for
//! remote sync work) at once. A permit is taken before an attempt starts and given back when
//! it ends, on every path, by `Drop`.

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
