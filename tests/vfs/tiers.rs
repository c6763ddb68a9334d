//! What the tiers keep after reads that missed: a page read whole once leaves the memory
//! tier (it stays on disk), whether read-ahead or the read's own miss fetched it, so a
//! data set of small files read once per epoch does not fill memory with pages nobody
//! reads from there; a page read only in part stays in memory for the rest of it.

use std::sync::atomic::Ordering::Relaxed;

use crate::harness::{Env, MIB, Options, Store, data};

#[test]
fn vfs_a_small_file_read_whole_leaves_memory_and_one_read_in_part_stays() {
    let env = Env::with(Options {
        store: Store::Dir,
        disk_cache: 64 * MIB as u64,
        prefetch_pages: 0,
        ..Default::default()
    });
    let body = data(300 << 10, 31);
    env.put_underneath("whole", &body);
    env.put_underneath("part", &body);
    let m = &env.metrics;
    assert!(env.read_all(env.ino("whole")).unwrap() == body);
    assert_eq!(m.ufs_reads.load(Relaxed), 1);
    assert_eq!(
        m.mem_cache_bytes.load(Relaxed),
        0,
        "a page read whole left the memory tier"
    );
    assert_eq!(m.readahead_released.load(Relaxed), 1);
    assert!(
        m.disk_cache_bytes.load(Relaxed) >= body.len() as u64,
        "it is on disk"
    );

    let fh = env.open(env.ino("part"), false, false).unwrap();
    assert!(env.read(fh, 0, 64 << 10).unwrap() == body[..64 << 10]);
    assert!(
        m.mem_cache_bytes.load(Relaxed) >= body.len() as u64,
        "a page read in part stays in memory"
    );
    let hits = m.cache_hits_mem.load(Relaxed);
    assert!(env.read(fh, 64 << 10, 1 << 20).unwrap() == body[64 << 10..]);
    assert_eq!(
        m.cache_hits_mem.load(Relaxed),
        hits + 1,
        "its rest came from memory"
    );
    assert_eq!(m.mem_cache_bytes.load(Relaxed), 0, "and then it left");
    env.vfs.release(fh);

    // Read again: from the disk tier, right, with no store read.
    assert!(env.read_all(env.ino("whole")).unwrap() == body);
    assert_eq!(m.ufs_reads.load(Relaxed), 2, "one per file, never again");
    assert!(m.cache_hits_disk.load(Relaxed) >= 1);
}

/// Directory-level prefetch: once readers open two small files of a directory cold, its
/// other small files are fetched in the background (a shuffled epoch then overlaps the
/// store's latency across files); a large file there is left to read-ahead. Reading them
/// all afterwards reads nothing more from the store, and every byte is right. Off, the
/// same two reads fetch two files.
#[test]
fn vfs_two_cold_small_files_prefetch_their_directory() {
    use crate::harness::eventually;
    use std::time::Duration;
    for on in [true, false] {
        let env = Env::with(Options {
            store: Store::Dir,
            disk_cache: 64 * MIB as u64,
            dir_prefetch: if on { 256 * MIB as u64 } else { 0 },
            ..Default::default()
        });
        let bodies: Vec<Vec<u8>> = (0..20).map(|i| data(100 << 10, 40 + i)).collect();
        for (i, b) in bodies.iter().enumerate() {
            env.put_underneath(&format!("ds/f{i:02}"), b);
        }
        env.put_underneath("ds/big", &data(8 * MIB, 39));
        let m = &env.metrics;
        for i in [7, 13] {
            assert!(env.read_all(env.ino(&format!("ds/f{i:02}"))).unwrap() == bodies[i]);
        }
        if on {
            assert!(
                eventually(Duration::from_secs(10), || m.ufs_reads.load(Relaxed) == 20),
                "the directory's small files were fetched: {} reads",
                m.ufs_reads.load(Relaxed)
            );
            assert_eq!(m.dir_prefetch_files.load(Relaxed), 18);
        } else {
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(m.ufs_reads.load(Relaxed), 2, "off: only what was read");
        }
        for (i, b) in bodies.iter().enumerate() {
            assert!(
                env.read_all(env.ino(&format!("ds/f{i:02}"))).unwrap() == *b,
                "f{i}"
            );
        }
        assert_eq!(
            m.ufs_reads.load(Relaxed),
            20,
            "every small file read from the store once"
        );
    }
}

/// The first small read of a large cold file is answered by a ranged GET of just its
/// bytes while the page is fetched whole behind it (the time to the first byte); what
/// follows is read from the pages. Small files, and mounts without read-ahead, read
/// pages only.
#[test]
fn vfs_the_first_read_of_a_large_cold_file_gets_only_its_bytes_first() {
    use crate::harness::{eventually, settled};
    use std::time::Duration;
    let env = Env::with(Options {
        store: Store::Dir,
        disk_cache: 64 * MIB as u64,
        prefetch_pages: 4,
        ..Default::default()
    });
    let big = data(16 * MIB, 51);
    let small = data(MIB, 52);
    env.put_underneath("big", &big);
    env.put_underneath("small", &small);
    let m = &env.metrics;
    let fh = env.open(env.ino("big"), false, false).unwrap();
    assert!(env.read(fh, 0, 4096).unwrap() == big[..4096]);
    assert_eq!(m.first_byte_reads.load(Relaxed), 1);
    assert!(
        eventually(Duration::from_secs(10), || m.bytes_from_ufs.load(Relaxed)
            >= 4096 + 5 * MIB as u64),
        "the page and the read-ahead behind it were fetched whole"
    );
    // The read-ahead window goes on past what was waited for; let it finish so that
    // what the next read does is its own.
    assert!(settled(
        Duration::from_secs(10),
        Duration::from_millis(300),
        || { m.bytes_from_ufs.load(Relaxed) }
    ));
    let (cached, fetched) = (
        m.bytes_from_cache.load(Relaxed),
        m.bytes_from_ufs.load(Relaxed),
    );
    assert!(env.read(fh, 4096, 128 << 10).unwrap() == big[4096..4096 + (128 << 10)]);
    assert_eq!(
        m.bytes_from_cache.load(Relaxed) - cached,
        128 << 10,
        "the rest came from the pages"
    );
    // Whatever the store gave after the first GET was whole pages (read-ahead), never
    // another ranged GET for a read.
    assert!(settled(
        Duration::from_secs(10),
        Duration::from_millis(300),
        || { m.bytes_from_ufs.load(Relaxed) }
    ));
    let after = m.bytes_from_ufs.load(Relaxed);
    assert!(after >= fetched);
    assert_eq!(
        (after - 4096) % MIB as u64,
        0,
        "only whole pages after the first GET"
    );
    assert_eq!(m.first_byte_reads.load(Relaxed), 1, "only the first read");
    env.vfs.release(fh);
    assert!(env.read_all(env.ino("small")).unwrap() == small);
    assert_eq!(
        m.first_byte_reads.load(Relaxed),
        1,
        "a small file reads pages only"
    );
    assert!(env.read_all(env.ino("big")).unwrap() == big);
}
