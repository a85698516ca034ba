//! The SQLite store on a disk that fills up (a small tmpfs; needs root, skipped otherwise):
//! every write answered `Ok` is there afterwards and every refused one is absent (nothing is
//! half written or acknowledged without its commit), a full disk is `StoreError::Full`, new
//! work is refused below the reserve while finishing work may spend it, and writes succeed
//! again once space is freed.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use gust_core::{InvocationId, InvocationRequest, Lifecycle, Mode, Resolved, RetryPolicy, WorkerId};
use gust_store::{Inserted, NewInvocation, Store, StoreError};
use gust_store_sqlite::{SqliteOptions, SqliteStore};

/// A tmpfs mounted on a temp dir, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Appends to `filler` until the disk is full.
fn fill(filler: &Path) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(filler).unwrap();
    let chunk = vec![1u8; 4096];
    while f.write_all(&chunk).is_ok() {}
}

fn async_request(payload: Bytes) -> NewInvocation {
    NewInvocation {
        request: InvocationRequest {
            id: InvocationId(uuid::Uuid::now_v7().to_string()),
            function: "f".into(),
            qualifier: "$LATEST".into(),
            resolved: Resolved::Version(1),
            payload,
            mode: Mode::Async,
            idempotency_key: None,
            fingerprint: None,
            received_at: 1,
            retry: RetryPolicy::default(),
            client_context: None,
            trace_id: None,
        },
        lifecycle: Lifecycle::queued(),
    }
}

fn store_on(dir: &Path, reserve: u64) -> Arc<SqliteStore> {
    let opts = SqliteOptions { fsync_every_commit: false, disk_reserve_bytes: reserve };
    Arc::new(SqliteStore::open(dir, opts).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_on_a_filling_disk_are_all_or_nothing_and_resume_when_space_is_freed() {
    let Some(disk) = Tmpfs::mount("6m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    // No reserve: every write goes to the disk until it really is full.
    let store = store_on(&disk.0.path().join("store"), 0);
    let filler = disk.0.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        f.write_all(&vec![0u8; 3 << 20]).unwrap();
    }
    // Many concurrent inserts, grouped into shared transactions by the writer, with more
    // payload than the disk holds.
    let payload = Bytes::from(vec![b'p'; 48 << 10]);
    let tasks: Vec<_> = (0..160)
        .map(|_| {
            let (store, new) = (store.clone(), async_request(payload.clone()));
            tokio::spawn(async move {
                let id = new.request.id.clone();
                let answer = store.insert_invocations(vec![new]).await.map(|mut r| r.pop().unwrap());
                (id, answer)
            })
        })
        .collect();
    let (mut stored, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(Ok(Inserted::Created))) => stored.push(id),
            (id, Err(StoreError::Full(_))) => refused.push(id),
            (id, other) => panic!("{id}: expected Created or Full, got {other:?}"),
        }
    }
    // Usually part of them fit; on a loaded machine the writer may put all 160 in groups that
    // each meet the full disk, and then none does. Either way the disk did fill.
    assert!(!refused.is_empty(), "the disk filled: {} stored", stored.len());
    eprintln!("{} stored, {} refused", stored.len(), refused.len());
    for id in &stored {
        assert!(store.get_invocation(id).await.unwrap().is_some(), "acknowledged {id} is kept");
    }
    for id in &refused {
        assert!(store.get_invocation(id).await.unwrap().is_none(), "refused {id} left nothing");
    }
    // Space freed: the same writes go through, without reopening.
    std::fs::remove_file(&filler).unwrap();
    let again = store.insert_invocations(vec![async_request(payload.clone())]).await.unwrap();
    assert!(matches!(again[..], [Ok(Inserted::Created)]), "{again:?}");
}

#[tokio::test]
async fn below_the_reserve_new_work_is_refused_and_accepted_work_finishes() {
    let Some(disk) = Tmpfs::mount("8m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    // The reserve is capped at 2% of the disk (~160 KiB here).
    let store = store_on(&disk.0.path().join("store"), 64 << 20);
    let accepted = async_request(Bytes::from_static(b"{}"));
    let id = accepted.request.id.clone();
    store.insert_invocations(vec![accepted]).await.unwrap();
    store.check_space().unwrap();

    // Leave a little less than the reserve free.
    let filler = disk.0.path().join("filler");
    fill(&filler);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - (96 << 10)).unwrap();
    }
    tokio::time::sleep(gust_store::space::SPACE_CHECK_INTERVAL).await;
    assert!(matches!(store.check_space(), Err(StoreError::Full(_))));
    let refused = store.insert_invocations(vec![async_request(Bytes::from_static(b"{}"))]).await;
    assert!(matches!(refused, Err(StoreError::Full(ref m)) if m.contains("below")), "{refused:?}");
    let refused = store.put_function("g", Default::default(), None, 1).await;
    assert!(matches!(refused, Err(StoreError::Full(_))), "{refused:?}");
    let refused = store.put_artifact(Bytes::from_static(b"code")).await;
    assert!(matches!(refused, Err(StoreError::Full(_))), "{refused:?}");

    // The reserve is for this: the invocation accepted before is claimed and completed.
    let worker = WorkerId("w".into());
    let claimed = store.claim_queued(&worker, 10, 10_000, 2).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let done = store
        .complete(
            gust_store::Completion {
                id: id.clone(),
                worker,
                epoch: claimed[0].epoch,
                outcome: gust_core::AttemptOutcome::Succeeded,
                result: Some(Bytes::from_static(b"ok")),
                error: None,
                log: String::new(),
                report: None,
            },
            3,
        )
        .await
        .unwrap();
    assert_eq!(done.state, gust_core::State::Succeeded);

    std::fs::remove_file(&filler).unwrap();
    tokio::time::sleep(gust_store::space::SPACE_CHECK_INTERVAL).await;
    store.check_space().unwrap();
    store.put_function("g", Default::default(), None, 4).await.unwrap();
}
