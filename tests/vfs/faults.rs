//! Faults in the store, injected under the retry and timeout layers: what the vfs
//! answers, how long it takes, and what it leaves. Every read either returns the right
//! bytes or an errno; none returns bytes of another length or version.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use alluxio::config::WriteType;
use alluxio::fault::{Call, Fault, Rule};
use alluxio::fetch::FAILED_FETCH_TTL;

use alluxio::types::ROOT_INO;

use crate::harness::{Env, MIB, MetaOutage, Options, Store, data, eventually};

/// An env whose store holds `f` (`len` bytes) written by another client, and the bytes.
fn with_object(len: usize, o: Options) -> (Env, Vec<u8>) {
    let env = Env::with(o);
    let body = data(len, 7);
    env.put_underneath("f", &body);
    (env, body)
}

fn fail() -> Fault {
    Fault::Fail { temporary: false }
}

/// The third GET fails: that page answers EIO, every other page its own bytes.
#[test]
fn vfs_the_third_store_read_fails_and_only_its_page_is_eio() {
    let (env, body) = with_object(5 * MIB, Options::default());
    env.faults
        .inject(Rule::new(Call::Read, fail()).on_key("f").after(2).times(1));
    let fh = env.open(env.ino("f"), false, false).unwrap();
    let got: Vec<Result<bool, i32>> = (0..5)
        .map(|p| {
            env.read(fh, p * MIB, MIB)
                .map(|b| b == body[p * MIB..(p + 1) * MIB])
        })
        .collect();
    assert_eq!(
        got,
        [Ok(true), Ok(true), Err(libc::EIO), Ok(true), Ok(true)]
    );
    assert_eq!(env.faults.fired(), 1);
}

/// A temporary failure (a 503, a reset connection) is retried under the vfs: the reader
/// never sees it.
#[test]
fn vfs_a_temporary_store_failure_is_retried_unseen() {
    // The default ufs_timeout: two retries with jittered backoff can take over 5 s, and
    // the timeout bounds a call with its retries.
    let (env, body) = with_object(
        MIB + 5,
        Options {
            timeout: alluxio::ufs::DEFAULT_UFS_TIMEOUT,
            ..Default::default()
        },
    );
    env.faults.inject(
        Rule::new(Call::Read, Fault::Fail { temporary: true })
            .on_key("f")
            .times(2),
    );
    assert!(env.read_all(env.ino("f")).unwrap() == body);
    // Two pages: the first read twice failed and once went through.
    assert_eq!(env.faults.calls(Call::Read), 4);
}

/// A failed page answers the kernel's immediate retry with the same EIO without asking
/// the store again; once that window passes, the store is asked and the page is right.
#[test]
fn vfs_a_failed_page_is_not_fetched_again_at_once_then_recovers() {
    let (env, body) = with_object(MIB, Options::default());
    env.faults.inject(Rule::new(Call::Read, fail()).times(1));
    let fh = env.open(env.ino("f"), false, false).unwrap();
    assert_eq!(env.read(fh, 0, 4096), Err(libc::EIO));
    let calls = env.faults.calls(Call::Read);
    let t = Instant::now();
    assert_eq!(env.read(fh, 0, 4096), Err(libc::EIO));
    if t.elapsed() < FAILED_FETCH_TTL {
        assert_eq!(
            env.faults.calls(Call::Read),
            calls,
            "the store was asked again"
        );
    }
    assert!(eventually(FAILED_FETCH_TTL * 3, || env
        .read(fh, 0, MIB)
        .is_ok_and(|b| b == body)));
}

/// A store that stops answering: the read fails with EIO within `ufs_timeout` (1 s
/// here), retries included, not later and never with bytes; once it answers again, the
/// same handle reads the right bytes.
#[test]
fn vfs_a_stalled_store_gives_eio_within_the_timeout_and_recovers() {
    let (env, body) = with_object(
        2 * MIB,
        Options {
            timeout: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let fh = env.open(env.ino("f"), false, false).unwrap();
    env.faults.inject(Rule::new(Call::Read, Fault::Stall(None)));
    let t = Instant::now();
    assert_eq!(env.read(fh, MIB, MIB), Err(libc::EIO));
    let took = t.elapsed();
    // The bound is the timeout; the margin is for a loaded 2-core machine.
    assert!(took < Duration::from_secs(3), "EIO after {took:?}");
    env.faults.clear();
    assert!(eventually(FAILED_FETCH_TTL * 3, || env
        .read(fh, MIB, MIB)
        .is_ok_and(|b| b[..] == body[MIB..])));
}

/// A body cut short by the store is never served, neither as the page nor as part of
/// it; the next read of the page gets it whole.
#[test]
fn vfs_a_short_body_from_the_store_is_never_served() {
    let (env, body) = with_object(MIB, Options::default());
    env.faults
        .inject(Rule::new(Call::Read, Fault::Short(100)).times(1));
    let fh = env.open(env.ino("f"), false, false).unwrap();
    let r = env.read(fh, 0, MIB);
    assert!(
        matches!(r, Err(libc::ESTALE | libc::EIO)),
        "a short body was answered with {:?}",
        r.map(|b| b.len())
    );
    assert!(eventually(FAILED_FETCH_TTL * 3, || env
        .read(fh, 0, MIB)
        .is_ok_and(|b| b == body)));
}

/// The store says the version is gone (an If-Match that failed): ESTALE at once, with no
/// retry, since no retry can bring that version back. It is a refreshed data set, not a
/// fault: counted in `ufs_changed`, not `ufs_errors`, and the error says so in one line.
#[test]
fn vfs_a_changed_version_is_estale_without_retries() {
    let (env, _) = with_object(MIB, Options::default());
    env.faults.inject(Rule::new(Call::Read, Fault::Changed));
    let fh = env.open(env.ino("f"), false, false).unwrap();
    assert_eq!(env.read(fh, 0, 4096), Err(libc::ESTALE));
    assert_eq!(env.faults.calls(Call::Read), 1);
    let m = &env.metrics;
    assert_eq!(m.ufs_changed.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(m.ufs_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    let ino = env.ino("f");
    let e = env
        .rt
        .block_on(async {
            let mode = alluxio::vfs::OpenMode {
                write: false,
                truncate: false,
            };
            let (fh, _) = env.vfs.open(ino, mode).await?;
            env.vfs.read(fh, 0, 4096).await
        })
        .unwrap_err();
    assert_eq!(e.errno(), libc::ESTALE);
    assert_eq!(e.level(), tracing::Level::INFO, "not a failure: {e}");
    assert!(
        e.to_string().contains("changed in the store") && e.to_string().len() < 200,
        "one short line: {e}"
    );
}

/// CACHE_THROUGH: a close whose upload fails returns EIO and the namespace keeps the
/// previous size; after the last close the daemon tries the upload again, and when that
/// lands, the file has the new bytes (SEMANTICS, "What a close or fsync that returned EIO
/// leaves").
#[test]
fn vfs_a_failed_upload_is_eio_at_close_then_lands_in_the_background() {
    let env = Env::new();
    let ino = env.put("f", b"old");
    env.faults
        .inject(Rule::new(Call::Write, fail()).on_key("f").times(1));
    let fh = env.open(ino, true, true).unwrap();
    let body = data(3 * MIB, 9);
    env.write(fh, 0, &body).unwrap();
    assert_eq!(env.close(fh), Err(libc::EIO));
    assert!(eventually(Duration::from_secs(20), || {
        env.faults.calls(Call::Write) >= 3
            && env
                .rt
                .block_on(env.store.read("f"))
                .is_ok_and(|b| b.to_vec() == body)
    }));
    assert!(env.read_all(ino).unwrap() == body);
}

/// CACHE_THROUGH: when the background retries keep failing for as long as they are made
/// (`last_close_retry`), the new bytes are dropped (and logged): the file keeps its
/// previous content, in the namespace and in the store.
#[test]
fn vfs_an_upload_that_keeps_failing_leaves_the_previous_file() {
    let env = Env::with(Options {
        last_close_retry: Duration::from_secs(2),
        ..Default::default()
    });
    let ino = env.put("f", b"old");
    env.faults
        .inject(Rule::new(Call::Write, fail()).on_key("f").times(1000));
    let fh = env.open(ino, true, true).unwrap();
    env.write(fh, 0, &data(MIB, 9)).unwrap();
    assert_eq!(env.close(fh), Err(libc::EIO));
    assert!(eventually(Duration::from_secs(20), || env
        .metrics
        .uploads_lost
        .load(Relaxed)
        == 1));
    assert_eq!(env.read_all(ino).unwrap(), b"old");
    assert_eq!(
        env.rt.block_on(env.store.read("f")).unwrap().to_vec(),
        b"old"
    );
}

/// ASYNC_THROUGH: close does not wait for the store; the uploader retries with backoff
/// until the store takes the upload.
#[test]
fn vfs_async_through_uploads_after_the_store_recovers() {
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        ..Default::default()
    });
    env.faults
        .inject(Rule::new(Call::Write, fail()).on_key("f").times(2));
    let body = data(2 * MIB + 1, 4);
    let ino = env.put("f", &body);
    assert!(env.read_all(ino).unwrap() == body, "read before the upload");
    assert!(eventually(Duration::from_secs(30), || env
        .rt
        .block_on(env.store.read("f"))
        .is_ok_and(|b| b.to_vec() == body)));
    assert_eq!(env.faults.fired(), 2);
    assert!(env.metrics.ufs_writes.load(Relaxed) >= 3);
}

/// ASYNC_THROUGH: a directory renamed while the upload of a file in it is stalled waits
/// for that upload, so the object never lands under the directory's old prefix after the
/// directory moved. Found by the kill -9 campaign: on a local directory, where the upload
/// writes the file itself and the fault layer cannot stall it, the object landed in the
/// old directory after the move, made it again, and the next listing showed both.
#[test]
fn vfs_a_directory_rename_waits_for_an_upload_below_it() {
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        ..Default::default()
    });
    let vfs = env.vfs.clone();
    let d = env
        .rt
        .block_on(vfs.mkdir(ROOT_INO, b"d", 0o755, env.uid, env.gid))
        .unwrap()
        .ino;
    env.faults
        .inject(Rule::new(Call::Write, Fault::Stall(None)).on_key("d/f"));
    let (rec, fh) = env
        .rt
        .block_on(vfs.create(d, b"f", 0o644, env.uid, env.gid))
        .unwrap();
    let body = data(MIB, 6);
    env.write(fh, 0, &body).unwrap();
    env.close(fh).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || env.faults.fired() == 1),
        "the upload reached the store"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let v = vfs.clone();
    env.rt.spawn(async move {
        let _ = tx.send(v.rename(ROOT_INO, b"d", ROOT_INO, b"e", false, false).await);
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the rename went ahead of the upload below it"
    );
    env.faults.clear();
    rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
    assert!(eventually(Duration::from_secs(20), || env
        .rt
        .block_on(env.store.read("e/f"))
        .is_ok_and(|b| b.to_vec() == body)));
    assert!(env.rt.block_on(env.store.read("d/f")).is_err());
    assert_eq!(env.ino("e/f"), rec.ino);
    assert!(env.read_all(rec.ino).unwrap() == body);
}

/// ASYNC_THROUGH: an unlink waits for no store round trip (the store's DELETE is stalled
/// here); the name is gone at once, the object goes in the background once the store
/// answers, and a file made at the same name meanwhile keeps its own object.
#[test]
fn vfs_async_through_unlink_does_not_wait_for_the_store() {
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        ..Default::default()
    });
    let vfs = env.vfs.clone();
    let old = data(MIB, 31);
    env.put("f", &old);
    env.put("g", b"g");
    let uploaded = |k: &str, want: &[u8]| {
        eventually(Duration::from_secs(20), || {
            env.rt
                .block_on(env.store.read(k))
                .is_ok_and(|b| b.to_vec() == want)
        })
    };
    assert!(uploaded("f", &old) && uploaded("g", b"g"));
    env.faults
        .inject(Rule::new(Call::Delete, Fault::Stall(None)));
    let t = Instant::now();
    env.rt.block_on(vfs.unlink(ROOT_INO, b"f")).unwrap();
    env.rt.block_on(vfs.unlink(ROOT_INO, b"g")).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the unlinks waited for the store: {:?}",
        t.elapsed()
    );
    assert_eq!(env.resolve("f"), Err(libc::ENOENT));
    // A listing while the deletes wait does not bring the files back.
    env.rt.block_on(vfs.load_metadata("", false)).unwrap();
    assert_eq!(env.resolve("g"), Err(libc::ENOENT));
    // A new file at f before its delete ran: its upload replaces the old object.
    let new = data(MIB + 1, 32);
    env.put("f", &new);
    assert!(
        eventually(Duration::from_secs(10), || env.faults.calls(Call::Delete)
            >= 1),
        "the delete was sent"
    );
    env.faults.clear();
    assert!(uploaded("f", &new), "the new file's object");
    assert!(
        eventually(Duration::from_secs(20), || env
            .rt
            .block_on(env.store.read("g"))
            .is_err()),
        "g's object was deleted in the background"
    );
    assert!(env.read_all(env.ino("f")).unwrap() == new);
}

/// ASYNC_THROUGH: an unlink does not wait for an upload of the same file that the store
/// has stalled; once the upload lands, the delete queued behind it removes the object.
#[test]
fn vfs_async_through_unlink_does_not_wait_for_its_upload() {
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        ..Default::default()
    });
    env.faults
        .inject(Rule::new(Call::Write, Fault::Stall(None)).on_key("f"));
    env.put("f", &data(MIB, 33));
    assert!(
        eventually(Duration::from_secs(10), || env.faults.fired() == 1),
        "the upload reached the store"
    );
    let t = Instant::now();
    env.rt.block_on(env.vfs.unlink(ROOT_INO, b"f")).unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the unlink waited for the upload: {:?}",
        t.elapsed()
    );
    env.faults.clear();
    assert!(
        eventually(Duration::from_secs(20), || env
            .metrics
            .ufs_deletes
            .load(Relaxed)
            >= 1
            && env.rt.block_on(env.store.read("f")).is_err()),
        "the object is gone once the upload landed"
    );
    assert_eq!(env.resolve("f"), Err(libc::ENOENT));
}

/// A rename over an existing file whose namespace step fails because the namespace is out
/// of reach (a metaserver that dies under it and comes back) is finished forward once it
/// answers: the target holds the renamed file's bytes, in the store and through the vfs,
/// and the old name is gone. Moving the store back instead left the target's name with no
/// object (its bytes were replaced by the store step): acknowledged data lost, which the
/// metaserver kill campaign found. The same when the namespace made the rename and only
/// its answer was lost. Under every write type that moves objects.
#[test]
fn vfs_a_rename_cut_by_a_namespace_outage_is_finished_not_lost() {
    use std::sync::atomic::Ordering::SeqCst;
    for wt in [WriteType::CacheThrough, WriteType::Through] {
        for how in ["outage", "lost answer", "new epoch"] {
            let outage = crate::harness::MetaOutage::default();
            let env = Env::with(Options {
                write_type: wt,
                meta_outage: Some(outage.clone()),
                ..Default::default()
            });
            let (src, dst) = (data(MIB + 5, 1), data(2 * MIB, 2));
            env.put("src", &src);
            env.put("dst", &dst);
            let back = {
                let o = outage.clone();
                std::thread::spawn(move || {
                    // The metaserver comes back after a while.
                    std::thread::sleep(Duration::from_millis(400));
                    o.down.store(false, SeqCst);
                })
            };
            match how {
                "lost answer" => outage.renames_lost.store(1, SeqCst),
                "new epoch" => outage.rename_unloaded.store(true, SeqCst),
                _ => outage.down_at_next_rename.store(true, SeqCst),
            }
            let t = Instant::now();
            let r = env.rt.block_on(
                env.vfs
                    .rename(ROOT_INO, b"src", ROOT_INO, b"dst", false, false),
            );
            back.join().unwrap();
            assert!(r.is_ok(), "{wt:?} {how}: {r:?}");
            assert!(t.elapsed() < Duration::from_secs(10), "bounded");
            let got = env.read_all(env.ino("dst")).unwrap();
            assert!(got == src, "{wt:?}: the target has the renamed bytes");
            assert_eq!(env.resolve("src").unwrap_err(), libc::ENOENT);
            let stored = env.rt.block_on(env.store.read("dst")).unwrap().to_vec();
            assert!(stored == src, "{wt:?}: the store holds them at the target");
            assert!(
                env.rt.block_on(env.store.read("src")).is_err(),
                "nothing left behind"
            );
        }
    }
}

/// Descriptors this process holds on files in `dir` (the env's staging directory).
fn fds_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(dir))
        .count()
}

/// An unlink that finds the file open keeps a local copy of its bytes until the last
/// close; when that close comes while the copy is being made (the kernel sends RELEASE
/// after close returns, so an unlink right after a close races it), the copy is let go
/// all the same. It was kept for the life of the daemon: the soak's descriptors grew by
/// one staging file per such unlink.
#[test]
fn vfs_an_unlink_racing_the_last_close_keeps_no_copy() {
    let env = Env::with(Options {
        store: crate::harness::Store::Dir,
        ..Default::default()
    });
    let body = data(2 * MIB, 7);
    env.put_underneath("f", &body);
    let ino = env.ino("f");
    let staging = env.dir().join("staging");
    let before = fds_under(&staging);
    let fh = env.open(ino, false, false).unwrap();
    // The copy the unlink makes reads the store, slowly.
    env.faults.inject(Rule::new(
        Call::Read,
        Fault::Stall(Some(Duration::from_millis(300))),
    ));
    let vfs = env.vfs.clone();
    let unlink = env
        .rt
        .spawn(async move { vfs.unlink(ROOT_INO, b"f").await });
    std::thread::sleep(Duration::from_millis(100));
    env.vfs.release(fh); // the last close, while the unlink copies
    env.rt.block_on(unlink).unwrap().unwrap();
    env.faults.clear();
    assert!(
        eventually(Duration::from_secs(5), || fds_under(&staging) == before),
        "a staging file is still open: {} descriptors under {}",
        fds_under(&staging),
        staging.display()
    );
    assert_eq!(env.resolve("f").unwrap_err(), libc::ENOENT);
}

/// An ASYNC_THROUGH close whose namespace change was made but whose answer was lost (a
/// metaserver killed between its commit and its reply) fails, and the file reads back
/// as the version the namespace took, never ESTALE: the journal entry it names is kept and
/// uploaded. It was removed at once, so the version named an entry that was gone; with the
/// last close's own commit failing too (the metaserver still down), the file read ESTALE
/// for ever (the metaserver kill campaign found it twice in 100 points).
#[test]
fn vfs_an_async_close_whose_answer_was_lost_keeps_its_entry() {
    use std::sync::atomic::Ordering::SeqCst;
    let outage = crate::harness::MetaOutage::default();
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        meta_outage: Some(outage.clone()),
        ..Default::default()
    });
    let (old, new) = (data(MIB + 3, 4), data(2 * MIB + 1, 5));
    let ino = env.put("f", &old);
    // The first version's upload is over (its attribute change made, its journal entry
    // gone) before the outage, which would otherwise lose that change's answer instead.
    let journal = env.dir().join("journal");
    let journal_empty = || std::fs::read_dir(&journal).unwrap().count() == 0;
    assert!(eventually(Duration::from_secs(10), journal_empty));
    let fh = env.open(ino, true, true).unwrap();
    env.write(fh, 0, &new).unwrap();
    outage.set_attrs_lost.store(1, SeqCst);
    let r = env.rt.block_on(env.vfs.flush(fh));
    assert!(r.is_err(), "the close whose answer was lost fails");
    assert_eq!(outage.set_attrs_lost.load(SeqCst), 0, "the change was made");
    // The metaserver is down for the last close's own commit, which fails and waits to
    // be tried again.
    outage.down.store(true, SeqCst);
    env.vfs.release(fh);
    assert!(eventually(Duration::from_secs(10), || {
        env.metrics.close_commit_retries.load(Relaxed) >= 1
    }));
    outage.down.store(false, SeqCst);
    // Back: the entry the namespace names is uploaded, and the file reads as it.
    assert!(
        eventually(Duration::from_secs(30), journal_empty),
        "the uploads finish"
    );
    let got = env.read_all(ino);
    assert!(
        got == Ok(new.clone()),
        "read {:?}",
        got.as_ref().map(|b| b.len())
    );
    assert!(env.rt.block_on(env.store.read("f")).unwrap().to_vec() == new);
    assert_eq!(env.metrics.uploads_lost.load(Relaxed), 0);
}

/// Bytes a close could not commit (the namespace out of reach: close fails, and so does
/// the commit at the last close) are not dropped: that commit is tried again once the
/// namespace is back, under every write type, and the file holds them, in the store
/// too.
#[test]
fn vfs_a_last_close_cut_by_a_namespace_outage_is_committed_when_it_is_back() {
    use std::sync::atomic::Ordering::SeqCst;
    for wt in [
        WriteType::CacheThrough,
        WriteType::Through,
        WriteType::AsyncThrough,
    ] {
        let outage = crate::harness::MetaOutage::default();
        let env = Env::with(Options {
            write_type: wt,
            meta_outage: Some(outage.clone()),
            ..Default::default()
        });
        let (old, new) = (data(MIB + 3, 4), data(2 * MIB + 1, 5));
        let ino = env.put("f", &old);
        let fh = env.open(ino, true, true).unwrap();
        env.write(fh, 0, &new).unwrap();
        outage.down.store(true, SeqCst);
        assert_eq!(
            env.rt.block_on(env.vfs.flush(fh)).map_err(|e| e.errno()),
            Err(libc::EIO),
            "{wt:?}: close fails"
        );
        env.vfs.release(fh);
        assert!(
            eventually(Duration::from_secs(10), || {
                env.metrics.close_commit_retries.load(Relaxed) >= 1
            }),
            "{wt:?}: the commit waits to be tried again"
        );
        outage.down.store(false, SeqCst);
        let landed = || {
            env.rt
                .block_on(env.store.read("f"))
                .is_ok_and(|b| b.to_vec() == new)
        };
        assert!(
            eventually(Duration::from_secs(30), landed),
            "{wt:?}: in the store"
        );
        assert!(
            eventually(Duration::from_secs(10), || {
                env.metrics.close_commits_waiting.load(Relaxed) == 0
            }),
            "{wt:?}: none waiting"
        );
        assert!(env.read_all(ino) == Ok(new.clone()), "{wt:?}: read back");
        assert_eq!(env.metrics.uploads_lost.load(Relaxed), 0, "{wt:?}");
    }
}

/// Unmount and the commits after a last close: one waiting to be tried again is tried
/// once more at once, and the unmount waits for it. With the namespace back, the bytes
/// are in the store when the unmount returns; with it still down, that last try fails,
/// the bytes are counted lost, and the unmount returns without waiting out its bound.
#[test]
fn vfs_an_unmount_tries_a_waiting_last_close_once_more_and_waits_for_it() {
    use std::sync::atomic::Ordering::SeqCst;
    for back in [true, false] {
        let outage = crate::harness::MetaOutage::default();
        let env = Env::with(Options {
            meta_outage: Some(outage.clone()),
            ..Default::default()
        });
        let (old, new) = (data(MIB, 6), data(MIB + 5, 7));
        let ino = env.put("f", &old);
        let fh = env.open(ino, true, true).unwrap();
        env.write(fh, 0, &new).unwrap();
        outage.down.store(true, SeqCst);
        assert!(env.rt.block_on(env.vfs.flush(fh)).is_err());
        env.vfs.release(fh);
        assert!(
            eventually(Duration::from_secs(10), || {
                env.metrics.close_commit_retries.load(Relaxed) >= 1
            }),
            "the commit waits to be tried again"
        );
        outage.down.store(!back, SeqCst);
        let left = env.rt.block_on(env.vfs.shutdown(Duration::from_secs(60)));
        assert_eq!(left, 0, "back {back}: nothing left running");
        assert_eq!(env.metrics.close_commits_waiting.load(Relaxed), 0);
        let stored = env.rt.block_on(env.store.read("f")).unwrap().to_vec();
        if back {
            assert!(stored == new, "in the store when the unmount returns");
            assert_eq!(env.metrics.uploads_lost.load(Relaxed), 0);
        } else {
            assert!(stored == old, "the store keeps the previous bytes");
            assert_eq!(env.metrics.uploads_lost.load(Relaxed), 1, "counted lost");
        }
    }
}

/// A last close's commit waiting to be tried again does not overwrite a newer change
/// another client made meanwhile: once the namespace is back and shows content newer than
/// the waiting bytes, they are dropped (counted in `uploads_lost`) and the other
/// client's bytes stay.
#[test]
fn vfs_a_retried_last_close_never_overwrites_a_newer_close_elsewhere() {
    use std::sync::atomic::Ordering::SeqCst;
    let outage = crate::harness::MetaOutage::default();
    let env = Env::with(Options {
        meta_outage: Some(outage.clone()),
        ..Default::default()
    });
    let (old, ours, theirs) = (data(MIB, 1), data(MIB, 2), data(MIB + 7, 3));
    let ino = env.put("f", &old);
    let fh = env.open(ino, true, true).unwrap();
    env.write(fh, 0, &ours).unwrap();
    outage.down.store(true, SeqCst);
    assert!(env.rt.block_on(env.vfs.flush(fh)).is_err());
    env.vfs.release(fh);
    assert!(eventually(Duration::from_secs(10), || {
        env.metrics.close_commit_retries.load(Relaxed) >= 1
    }));
    assert_eq!(env.metrics.close_commits_waiting.load(Relaxed), 1);
    // Another client, which reaches the namespace, closes newer bytes: its object and
    // its namespace change (a later mtime), made straight through the namespace.
    std::thread::sleep(Duration::from_millis(20));
    env.put_underneath("f", &theirs);
    let other = outage.direct();
    let info = env.rt.block_on(env.store.stat("f")).unwrap();
    let later = alluxio_metaserver::SetAttr {
        size: Some(theirs.len() as u64),
        version: Some(info.etag().map(String::from)),
        mtime_ns: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64,
        ),
        ..Default::default()
    };
    env.rt.block_on(other.set_attr(ino, later)).unwrap();
    outage.down.store(false, SeqCst);
    assert!(
        eventually(Duration::from_secs(30), || {
            env.metrics.uploads_lost.load(Relaxed) == 1
        }),
        "the waiting bytes are dropped"
    );
    assert_eq!(env.metrics.close_commits_waiting.load(Relaxed), 0);
    assert!(env.rt.block_on(env.store.read("f")).unwrap().to_vec() == theirs);
}

/// An ASYNC_THROUGH unlink whose namespace step fails with the namespace out of reach: the
/// name may be gone with only the answer lost (a metaserver killed between its commit and
/// its reply), or still there (one down before it). Either way the logged delete is
/// settled by the uploader, which asks the namespace first: the object goes with the
/// name, or stays with it, and no delete is left pending until the next start (the
/// metaserver-kill campaign found objects no name showed, their deletes never queued).
#[test]
fn vfs_an_async_unlink_cut_by_a_namespace_outage_is_settled() {
    use std::sync::atomic::Ordering::SeqCst;
    let outage = crate::harness::MetaOutage::default();
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        meta_outage: Some(outage.clone()),
        ..Default::default()
    });
    let journal = env.dir().join("journal");
    let deletes = env.dir().join("deletes.log");
    let settled = || {
        std::fs::read_dir(&journal).unwrap().count() == 0
            && std::fs::metadata(&deletes).map_or(0, |m| m.len()) == 0
    };
    let (f, g) = (data(MIB + 5, 6), data(3000, 7));
    env.put("f", &f);
    let g_ino = env.put("g", &g);
    assert!(eventually(Duration::from_secs(10), settled), "uploaded");

    // The answer lost: the name is gone, and so is the object, without a restart.
    outage.unlinks_lost.store(1, SeqCst);
    assert!(env.rt.block_on(env.vfs.unlink(ROOT_INO, b"f")).is_err());
    assert_eq!(outage.unlinks_lost.load(SeqCst), 0, "the unlink was made");
    assert_eq!(env.resolve("f"), Err(libc::ENOENT));
    assert!(
        eventually(Duration::from_secs(20), || settled()
            && env.rt.block_on(env.store.read("f")).is_err()),
        "the object of the unlinked name is deleted and nothing stays pending"
    );

    // Down before the unlink: the name stays, with its object and its bytes.
    outage.down.store(true, SeqCst);
    assert!(env.rt.block_on(env.vfs.unlink(ROOT_INO, b"g")).is_err());
    outage.down.store(false, SeqCst);
    assert!(
        eventually(Duration::from_secs(20), settled),
        "the delete is settled without a restart"
    );
    assert_eq!(env.resolve("g"), Ok(g_ino));
    assert!(env.rt.block_on(env.store.read("g")).unwrap().to_vec() == g);
    assert!(env.read_all(g_ino) == Ok(g.clone()));
}

/// A rename over an existing file whose store step fails leaves the target whole: the
/// target's object goes only in the step that replaces it with the source's (or once the
/// namespace has renamed), never before a step that may still fail. (It was deleted
/// first, so a store or namespace failure after that left the target's name with no
/// bytes: the metaserver-kill campaign lost replaced targets that way.)
#[test]
fn vfs_a_failed_rename_keeps_the_target_it_would_have_replaced() {
    for wt in [WriteType::CacheThrough, WriteType::Through] {
        let env = Env::with(Options {
            write_type: wt,
            ..Default::default()
        });
        let (src, dst) = (data(MIB + 5, 11), data(2 * MIB, 12));
        env.put("src", &src);
        env.put("dst", &dst);
        // The source's bytes cannot be written at the target's key.
        env.faults
            .inject(Rule::new(Call::Write, fail()).on_key("dst"));
        let r = env.rt.block_on(
            env.vfs
                .rename(ROOT_INO, b"src", ROOT_INO, b"dst", false, false),
        );
        assert!(r.is_err(), "{wt:?}: the rename fails");
        env.faults.clear();
        assert!(
            env.rt
                .block_on(env.store.read("dst"))
                .map(|b| b.to_vec())
                .ok()
                == Some(dst.clone()),
            "{wt:?}: the target's object is still in the store"
        );
        assert!(
            env.read_all(env.ino("dst")) == Ok(dst.clone()),
            "{wt:?}: target"
        );
        assert!(
            env.read_all(env.ino("src")) == Ok(src.clone()),
            "{wt:?}: source"
        );
    }
}

/// ASYNC_THROUGH: a file whose upload is pending renamed over a file the store holds,
/// then renamed on before its upload lands: the replaced file's object does not stay
/// behind at the first name (the rename's store step moved nothing onto it), where a
/// listing would show it as a file again.
#[test]
fn vfs_a_pending_file_renamed_over_another_leaves_no_object_behind() {
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        ..Default::default()
    });
    let journal = env.dir().join("journal");
    let settled = || std::fs::read_dir(&journal).unwrap().count() == 0;
    let (old, new) = (data(MIB + 3, 21), data(2 * MIB + 1, 22));
    env.put("dst", &old);
    assert!(eventually(Duration::from_secs(10), settled), "uploaded");
    // Uploads stall from here: "src" stays pending through both renames.
    env.faults
        .inject(Rule::new(Call::Write, Fault::Stall(None)));
    let ino = env.put("src", &new);
    let rename = |a: &[u8], b: &[u8]| {
        env.rt
            .block_on(env.vfs.rename(ROOT_INO, a, ROOT_INO, b, false, false))
    };
    rename(b"src", b"dst").unwrap();
    rename(b"dst", b"last").unwrap();
    env.faults.clear();
    assert!(eventually(Duration::from_secs(30), settled), "uploaded");
    assert!(
        env.rt.block_on(env.store.read("dst")).is_err(),
        "the replaced file's object stayed at the first name"
    );
    assert_eq!(env.resolve("dst"), Err(libc::ENOENT));
    assert_eq!(env.resolve("last"), Ok(ino));
    assert!(env.read_all(ino) == Ok(new.clone()));
    assert!(env.rt.block_on(env.store.read("last")).unwrap().to_vec() == new);
}

/// A daemon killed after a rename was logged and before its store step, with a source
/// whose ASYNC_THROUGH upload is pending (no object to move) and a target with a second
/// name: the next start finishes the rename, and the target's bytes go to that other
/// name, as the rename would have moved them. Before, they stayed at the renamed-over
/// key (the other name read ENOENT) until the source's upload overwrote them.
#[test]
fn vfs_a_rename_cut_before_its_store_step_keeps_the_replaced_files_other_name() {
    let opts = || Options {
        store: Store::Dir,
        write_type: WriteType::AsyncThrough,
        restartable: true,
        ..Default::default()
    };
    let env = Env::with(opts());
    let journal = env.dir().join("journal");
    let settled = move || std::fs::read_dir(&journal).unwrap().count() == 0;
    let (old, new) = (data(MIB + 3, 31), data(2 * MIB + 1, 32));
    let target = env.put("dst", &old);
    assert!(eventually(Duration::from_secs(10), &settled), "uploaded");
    env.rt
        .block_on(env.vfs.link(target, ROOT_INO, b"other"))
        .unwrap();
    // Uploads stall from here: "src" is pending when the daemon dies.
    env.faults
        .inject(Rule::new(Call::Write, Fault::Stall(None)));
    let src = env.put("src", &new);
    // The rename's intent is logged and nothing else of it happens: the kill.
    let intent = format!(
        "{{\"Begin\":{{\"id\":1,\"intent\":{{\"ino\":{},\"parent\":{},\"name\":{:?},\"newparent\":{},\"newname\":{:?}}}}}}}\n",
        src.0,
        ROOT_INO.0,
        b"src".to_vec(),
        ROOT_INO.0,
        b"dst".to_vec()
    );
    std::fs::write(env.dir().join("renames.log"), intent).unwrap();
    let env = env.restart(opts());
    assert_eq!(
        env.resolve("src"),
        Err(libc::ENOENT),
        "the rename is finished"
    );
    assert_eq!(env.resolve("dst"), Ok(src));
    assert_eq!(env.resolve("other"), Ok(target));
    assert!(
        env.read_all(target) == Ok(old.clone()),
        "the other name's bytes"
    );
    assert!(eventually(Duration::from_secs(30), settled), "uploaded");
    assert!(env.read_all(src) == Ok(new.clone()));
    assert!(env.rt.block_on(env.store.read("dst")).unwrap().to_vec() == new);
    assert!(env.rt.block_on(env.store.read("other")).unwrap().to_vec() == old);
}

/// ASYNC_THROUGH: the journal entries of many uploads are dropped after one durable
/// namespace commit each batch, not one each: a durable commit holds every namespace
/// writer back for its fsync, and one per upload stalled the creates and unlinks the
/// uploads were behind. Every entry still goes, and every file reads back.
#[test]
fn vfs_async_uploads_share_their_durable_namespace_commits() {
    let outage = MetaOutage::default();
    let env = Env::with(Options {
        write_type: WriteType::AsyncThrough,
        meta_outage: Some(outage.clone()),
        ..Default::default()
    });
    let journal = env.dir().join("journal");
    let settled = || std::fs::read_dir(&journal).unwrap().count() == 0;
    let files: Vec<_> = (0..40u64)
        .map(|i| env.put(&format!("f{i}"), &data(1000 + i as usize, i)))
        .collect();
    assert!(eventually(Duration::from_secs(30), settled), "uploaded");
    let syncs = outage.syncs.load(Relaxed);
    assert!(syncs < 20, "{syncs} durable commits for 40 uploads");
    for (i, ino) in files.into_iter().enumerate() {
        assert!(env.read_all(ino) == Ok(data(1000 + i, i as u64)));
        let stored = env.rt.block_on(env.store.read(&format!("f{i}"))).unwrap();
        assert!(stored.to_vec() == data(1000 + i, i as u64));
    }
}

/// ASYNC_THROUGH: the journal entry of an empty file is a line in `journal-empty.log`, not
/// a file on the cache disk (making an inode there was most of a create's cost on a disk
/// that allocates them slowly). It is kept as a file entry is: through an fsync and a kill
/// before its upload, after which the next start uploads it as an empty object and the
/// log empties.
#[test]
fn vfs_async_empty_files_are_journaled_without_a_file_and_survive_a_kill() {
    let opts = |upload_delay| Options {
        store: Store::Dir,
        write_type: WriteType::AsyncThrough,
        restartable: true,
        upload_delay,
        ..Default::default()
    };
    let env = Env::with(opts(Duration::from_secs(3600)));
    let a = env.put("a", b"");
    let (b, fh) = env
        .rt
        .block_on(env.vfs.create(ROOT_INO, b"b", 0o600, env.uid, env.gid))
        .unwrap();
    env.rt.block_on(env.vfs.fsync(fh)).unwrap();
    env.close(fh).unwrap();
    let c = env.put("c", b"x");
    let journal = env.dir().join("journal");
    let files: Vec<_> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "only the one-byte file's entry is a file: {files:?}"
    );
    let log = env.dir().join("journal-empty.log");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    assert!(env.read_all(a) == Ok(Vec::new()));
    let env = env.restart(opts(Duration::ZERO));
    let stored = |k: &str| env.rt.block_on(env.store.read(k)).ok().map(|b| b.to_vec());
    assert!(
        eventually(Duration::from_secs(30), || {
            stored("a") == Some(Vec::new())
                && stored("b") == Some(Vec::new())
                && stored("c") == Some(b"x".to_vec())
                && std::fs::metadata(&log).unwrap().len() == 0
                && std::fs::read_dir(&journal).unwrap().count() == 0
        }),
        "uploaded after the restart"
    );
    assert!(env.read_all(a) == Ok(Vec::new()));
    assert!(env.read_all(b.ino) == Ok(Vec::new()));
    assert!(env.read_all(c) == Ok(b"x".to_vec()));
}
