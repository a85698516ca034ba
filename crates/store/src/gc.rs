//! Which code is garbage: the rules of [`crate::Store::collect_code`], written once for both
//! backends, which load the rows, call these inside their transaction and delete the answer.
//!
//! What keeps code: a function's `$LATEST`, a published version, and a `$LATEST` revision that
//! is still needed. A revision is needed while it is current, while it was superseded less
//! than the grace ago (a sync invocation admitted against it may still be starting), and while
//! an unfinished invocation resolved to it (queued, placed, running or waiting for a retry).

use std::collections::{HashMap, HashSet};

use gust_core::{Millis, Resolved};

/// `(function, resolved)` of every unfinished invocation. Each branch is answered by a partial
/// index that holds live work only (QUEUED: `invocations_queue`; PLACED, RUNNING and
/// RETRY_WAIT carry a `due_at`: `invocations_due`), so this never scans ended records.
pub const LIVE_RESOLVED_SQL: &str = "SELECT function, resolved FROM invocations WHERE state = 'QUEUED' \
     UNION SELECT function, resolved FROM invocations \
     WHERE due_at IS NOT NULL AND state IN ('PLACED', 'RUNNING', 'RETRY_WAIT')";

/// Every sha256 named by a function's `$LATEST`, a kept revision or a published version.
pub const REFERENCED_SQL: &str = "SELECT code_sha256 FROM functions WHERE code_sha256 IS NOT NULL \
     UNION SELECT code_sha256 FROM versions \
     UNION SELECT code_sha256 FROM function_revisions WHERE code_sha256 IS NOT NULL";

/// Every `$LATEST` revision row, without its spec.
pub const REVISIONS_SQL: &str = "SELECT function, revision, created_at FROM function_revisions";

/// Every function's current revision.
pub const CURRENT_SQL: &str = "SELECT name, revision FROM functions";

/// One `$LATEST` revision, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionRow {
    pub function: String,
    pub revision: u64,
    /// When the revision was written (0 if unknown: written before revisions had a time).
    pub created_at: Millis,
}

/// The `$LATEST` revisions unfinished invocations resolved to, from [`LIVE_RESOLVED_SQL`]'s
/// rows (versions are kept anyway; an undecodable `resolved` keeps nothing extra).
pub fn live_revisions(rows: impl IntoIterator<Item = (String, String)>) -> HashSet<(String, u64)> {
    rows.into_iter()
        .filter_map(|(function, resolved)| match Resolved::decode(&resolved)? {
            Resolved::Latest { revision } => Some((function, revision)),
            Resolved::Version(_) => None,
        })
        .collect()
}

/// The revisions to delete: superseded before `older_than` (a newer revision of the same
/// function was written before it), not current, and not the target of unfinished work.
pub fn prunable_revisions(
    rows: &[RevisionRow], current: &HashMap<String, u64>, live: &HashSet<(String, u64)>, older_than: Millis,
) -> Vec<(String, u64)> {
    // Per function, the newest revision written before the cutoff: everything below it was
    // superseded before the cutoff.
    let mut superseded_below: HashMap<&str, u64> = HashMap::new();
    for row in rows.iter().filter(|r| r.created_at < older_than) {
        let newest = superseded_below.entry(row.function.as_str()).or_insert(0);
        *newest = (*newest).max(row.revision);
    }
    let mut prune: Vec<(String, u64)> = rows
        .iter()
        .filter(|r| superseded_below.get(r.function.as_str()).is_some_and(|&below| r.revision < below))
        .filter(|r| current.get(&r.function) != Some(&r.revision))
        .filter(|r| !live.contains(&(r.function.clone(), r.revision)))
        .map(|r| (r.function.clone(), r.revision))
        .collect();
    prune.sort();
    prune
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(function: &str, revision: u64, created_at: Millis) -> RevisionRow {
        RevisionRow { function: function.into(), revision, created_at }
    }

    #[test]
    fn only_revisions_superseded_before_the_cutoff_and_not_needed_go() {
        let rows = vec![row("f", 1, 10), row("f", 3, 20), row("f", 5, 30), row("f", 7, 100), row("g", 2, 10)];
        let current = HashMap::from([("f".to_string(), 7), ("g".to_string(), 2)]);
        // Cutoff 50: revision 5 is the newest written before it, so 1 and 3 were superseded
        // before it; 5 was superseded by 7 only after it (still in its grace).
        assert_eq!(
            prunable_revisions(&rows, &current, &HashSet::new(), 50),
            vec![("f".to_string(), 1), ("f".to_string(), 3)]
        );
        // Unfinished work on revision 3 keeps it.
        let live = HashSet::from([("f".to_string(), 3)]);
        assert_eq!(prunable_revisions(&rows, &current, &live, 50), vec![("f".to_string(), 1)]);
        // Long after: everything but the current revisions and live work.
        assert_eq!(
            prunable_revisions(&rows, &current, &live, 1_000),
            vec![("f".to_string(), 1), ("f".to_string(), 5)]
        );
        // Nothing written before the cutoff: nothing superseded before it.
        assert!(prunable_revisions(&rows, &current, &HashSet::new(), 5).is_empty());
    }

    #[test]
    fn the_current_revision_stays_even_if_a_stale_row_is_newer() {
        // A current revision is never deleted, whatever the rows say.
        let rows = vec![row("f", 1, 10), row("f", 2, 10)];
        let current = HashMap::from([("f".to_string(), 1)]);
        assert!(prunable_revisions(&rows, &current, &HashSet::new(), 100).is_empty());
    }

    #[test]
    fn live_work_is_read_from_resolved_labels() {
        let live = live_revisions([
            ("f".to_string(), "$LATEST@4".to_string()),
            ("f".to_string(), "2".to_string()),
            ("g".to_string(), "garbage".to_string()),
        ]);
        assert_eq!(live, HashSet::from([("f".to_string(), 4)]));
    }
}
