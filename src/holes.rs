//! Reads of local files that may hold holes. A staging file is sparse wherever its writer
//! extended it without writing (fallocate, an extending truncate: fio lays out a file that
//! way, and a copy-on-open staging file is extended to the old size before any old byte
//! is fetched). Reading a hole makes the kernel zero fresh page-cache folios and copy
//! them out; measured, the commit of a 1 GiB fallocated file cost the daemon more CPU in
//! that zeroing than in the upload itself. A range that is all hole is answered here
//! with zeros that cost no read.
//!
//! Invariant: a range is answered with zeros only when the filesystem reports no data in
//! it (`SEEK_DATA`, which counts written bytes still in the page cache as data) and it
//! lies within the file's size. Anything else, including a filesystem that does not
//! report holes (it reports the whole file as data), is read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

/// Shared zeros handed out for hole ranges up to this size (in `.bss`: it costs memory
/// only for pages actually read, and every reader maps the kernel's zero page).
const ZEROS_LEN: usize = 8 << 20;
static ZEROS: [u8; ZEROS_LEN] = [0; ZEROS_LEN];

/// `len` zero bytes: shared when short enough, else freshly (lazily) allocated.
pub fn zeros(len: usize) -> Bytes {
    if len <= ZEROS_LEN {
        Bytes::from_static(&ZEROS[..len])
    } else {
        Bytes::from(vec![0u8; len])
    }
}

/// Whether bytes `off..off + len` of `file` are all hole (see the module invariant).
pub fn is_hole(file: &File, off: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let Some(end) = off.checked_add(len) else {
        return false;
    };
    if len == 0 || file.metadata().map_or(true, |m| m.len() < end) {
        return false;
    }
    let Ok(at) = libc::off_t::try_from(off) else {
        return false;
    };
    // SAFETY: a plain lseek on a descriptor we hold; it moves only this descriptor's offset,
    // which no code here uses (every read and write is positional).
    let data = unsafe { libc::lseek(file.as_raw_fd(), at, libc::SEEK_DATA) };
    if data < 0 {
        // ENXIO: no data at or after `off` (within the size, checked above).
        return io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    data as u64 >= end
}

/// Bytes `off..off + len` of `file`, all of them or an error (as `read_exact_at`); a range
/// that is all hole costs no read.
pub fn read_at(file: &File, off: u64, len: usize) -> io::Result<Bytes> {
    if is_hole(file, off, len as u64) {
        return Ok(zeros(len));
    }
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, off)?;
    Ok(Bytes::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// A file of data, a hole, data, then a hole to its end (8 MiB each part).
    fn sparse() -> (tempfile::TempDir, File, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let part = 8usize << 20;
        let mut want = vec![0u8; 4 * part];
        for (i, b) in want[..part].iter_mut().enumerate() {
            *b = (i % 251) as u8 + 1;
        }
        for (i, b) in want[2 * part..3 * part].iter_mut().enumerate() {
            *b = (i % 241) as u8 + 1;
        }
        f.set_len(want.len() as u64).unwrap();
        f.write_all_at(&want[..part], 0).unwrap();
        f.write_all_at(&want[2 * part..3 * part], 2 * part as u64)
            .unwrap();
        (dir, f, want)
    }

    #[test]
    fn every_range_reads_what_the_file_holds() {
        let (_d, f, want) = sparse();
        let step = 3usize << 20;
        for off in (0..want.len()).step_by(step / 2) {
            for len in [1usize, 4096, step, 8 << 20, 9 << 20] {
                let len = len.min(want.len() - off);
                let got = read_at(&f, off as u64, len).unwrap();
                assert!(got[..] == want[off..off + len], "off {off} len {len}");
            }
        }
        // Past the end is an error, as with a plain read, hole or not.
        let e = read_at(&f, want.len() as u64 - 10, 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn only_ranges_without_data_are_holes() {
        let (_d, f, want) = sparse();
        let part = 8u64 << 20;
        // Written bytes, even only in the page cache, are data.
        assert!(!is_hole(&f, 0, part));
        assert!(!is_hole(&f, part - 1, 2));
        assert!(!is_hole(&f, 2 * part, 1));
        assert!(!is_hole(&f, part, part + 1));
        // What the filesystem reports as holes: either they are (most filesystems), or
        // it reports none and everything is read.
        let reports = is_hole(&f, part, part);
        assert_eq!(is_hole(&f, 3 * part, part), reports);
        // Beyond the size is never a hole.
        assert!(!is_hole(&f, 3 * part, part + 1));
        assert!(!is_hole(&f, want.len() as u64, 1));
        assert!(!is_hole(&f, 0, 0));
    }
}
