//! Namespace records and their on-disk encoding.
//!
//! Encoding invariant: every record starts with a format version byte; decoders reject
//! unknown versions and truncated input with a [`DecodeError`] (which the namespace reports
//! as `MetaError::Corrupt`) and never panic.
//! Integers are little-endian fixed width; byte strings are u32 length + bytes.

/// A record that cannot be decoded: what is wrong with its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// An inode number. Allocated from a persistent counter and never reused, so it is stable
/// across remounts and unique without a generation number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct InodeNo(pub u64);

impl std::fmt::Display for InodeNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The root directory's inode number (the FUSE convention).
pub const ROOT_INO: InodeNo = InodeNo(1);

/// Kind of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    /// A regular file, backed 1:1 by a UFS object at its primary link's path.
    File,
    /// A directory, backed by a UFS prefix (and a directory marker where the store needs one).
    Dir,
    /// A symbolic link; lives in the namespace only.
    Symlink,
    /// A named pipe; lives in the namespace only.
    Fifo,
    /// A character device node; lives in the namespace only.
    CharDevice,
    /// A block device node; lives in the namespace only.
    BlockDevice,
    /// A Unix socket node; lives in the namespace only.
    Socket,
}

impl FileKind {
    /// Whether the UFS holds an object for this kind (regular files only).
    pub fn has_object(self) -> bool {
        self == FileKind::File
    }

    fn code(self) -> u8 {
        match self {
            FileKind::File => 1,
            FileKind::Dir => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::CharDevice => 5,
            FileKind::BlockDevice => 6,
            FileKind::Socket => 7,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => FileKind::File,
            2 => FileKind::Dir,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::CharDevice,
            6 => FileKind::BlockDevice,
            7 => FileKind::Socket,
            _ => return None,
        })
    }
}

/// Owner and permission bits given to objects that other tools wrote to the UFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ownership {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits for files (never 0).
    pub file_mode: u32,
    /// Permission bits for directories (never 0).
    pub dir_mode: u32,
}

/// One inode.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InodeRecord {
    /// Inode number.
    pub ino: InodeNo,
    /// File or directory.
    pub kind: FileKind,
    /// Parent of the primary link (the root is its own parent).
    pub parent: InodeNo,
    /// Name of the primary link, used to derive the UFS key (1:1 layout).
    pub name: Vec<u8>,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Permission bits (no file-type bits).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Access time, nanoseconds since the Unix epoch.
    pub atime_ns: i64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
    /// Link count.
    pub nlink: u32,
    /// UFS version of the object's content (ETag, version id, or size+mtime). `None` for a
    /// file that has no object in the UFS yet (created, not yet flushed) and for directories.
    pub version: Option<String>,
    /// For directories: the mount epoch in which the children were last loaded from the UFS.
    /// A directory whose `loaded_epoch` differs from the namespace's current epoch is listed
    /// again on next access.
    pub loaded_epoch: u64,
    /// Device number for device nodes (0 otherwise).
    pub rdev: u32,
    /// Target of a symlink (empty otherwise).
    pub target: Vec<u8>,
    /// Hard links besides the primary one, as (parent, name). The UFS object of a file
    /// lives at the primary link's path only; these names exist in the namespace alone.
    pub links: Vec<(InodeNo, Vec<u8>)>,
}

/// One directory entry as returned by listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirEntry {
    /// Entry name.
    pub name: Vec<u8>,
    /// Child inode.
    pub ino: InodeNo,
    /// Child kind.
    pub kind: FileKind,
}

const RECORD_FORMAT: u8 = 2;

impl InodeRecord {
    /// Encode into the versioned binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96 + self.name.len());
        b.push(RECORD_FORMAT);
        b.extend_from_slice(&self.ino.0.to_le_bytes());
        b.push(self.kind.code());
        b.extend_from_slice(&self.parent.0.to_le_bytes());
        put_bytes(&mut b, &self.name);
        b.extend_from_slice(&self.size.to_le_bytes());
        b.extend_from_slice(&self.mode.to_le_bytes());
        b.extend_from_slice(&self.uid.to_le_bytes());
        b.extend_from_slice(&self.gid.to_le_bytes());
        b.extend_from_slice(&self.atime_ns.to_le_bytes());
        b.extend_from_slice(&self.mtime_ns.to_le_bytes());
        b.extend_from_slice(&self.ctime_ns.to_le_bytes());
        b.extend_from_slice(&self.nlink.to_le_bytes());
        match &self.version {
            None => b.push(0),
            Some(v) => {
                b.push(1);
                put_bytes(&mut b, v.as_bytes());
            }
        }
        b.extend_from_slice(&self.loaded_epoch.to_le_bytes());
        b.extend_from_slice(&self.rdev.to_le_bytes());
        put_bytes(&mut b, &self.target);
        b.extend_from_slice(&(self.links.len() as u32).to_le_bytes());
        for (p, n) in &self.links {
            b.extend_from_slice(&p.0.to_le_bytes());
            put_bytes(&mut b, n);
        }
        b
    }

    /// Decode a record; never panics on arbitrary input.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let format = r.u8()?;
        if format != RECORD_FORMAT {
            return Err(DecodeError(format!("unknown record format {format}")));
        }
        let ino = InodeNo(r.u64()?);
        let code = r.u8()?;
        let kind =
            FileKind::from_code(code).ok_or_else(|| DecodeError(format!("unknown kind {code}")))?;
        let parent = InodeNo(r.u64()?);
        let name = r.bytes()?.to_vec();
        let size = r.u64()?;
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let atime_ns = r.u64()? as i64;
        let mtime_ns = r.u64()? as i64;
        let ctime_ns = r.u64()? as i64;
        let nlink = r.u32()?;
        let version = match r.u8()? {
            0 => None,
            1 => Some(
                String::from_utf8(r.bytes()?.to_vec())
                    .map_err(|_| DecodeError("version is not UTF-8".into()))?,
            ),
            t => return Err(DecodeError(format!("unknown version tag {t}"))),
        };
        let loaded_epoch = r.u64()?;
        let rdev = r.u32()?;
        let target = r.bytes()?.to_vec();
        let nlinks = r.u32()? as usize;
        // Each link takes at least 12 bytes: refuse counts the input cannot hold.
        if nlinks > buf.len() / 12 {
            return Err(DecodeError("link count exceeds record".into()));
        }
        let mut links = Vec::with_capacity(nlinks);
        for _ in 0..nlinks {
            let p = InodeNo(r.u64()?);
            links.push((p, r.bytes()?.to_vec()));
        }
        if r.pos != buf.len() {
            return Err(DecodeError("trailing bytes".into()));
        }
        Ok(InodeRecord {
            ino,
            kind,
            parent,
            name,
            size,
            mode,
            uid,
            gid,
            atime_ns,
            mtime_ns,
            ctime_ns,
            nlink,
            version,
            loaded_epoch,
            rdev,
            target,
            links,
        })
    }
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    // Names are at most 255 bytes and versions are short; a u32 length cannot overflow.
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| DecodeError("truncated record".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> InodeRecord {
        InodeRecord {
            ino: InodeNo(7),
            kind: FileKind::File,
            parent: InodeNo(1),
            name: b"a.txt".to_vec(),
            size: 12,
            mode: 0o644,
            uid: 1,
            gid: 2,
            atime_ns: -5,
            mtime_ns: 1_700_000_000_000_000_000,
            ctime_ns: 3,
            nlink: 1,
            version: Some("etag-1".into()),
            loaded_epoch: 0,
            rdev: 0,
            target: Vec::new(),
            links: vec![(InodeNo(3), b"other".to_vec())],
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        assert_eq!(InodeRecord::decode(&r.encode()).unwrap(), r);
        let mut d = sample();
        d.kind = FileKind::Dir;
        d.version = None;
        d.loaded_epoch = 9;
        assert_eq!(InodeRecord::decode(&d.encode()).unwrap(), d);
        let mut l = sample();
        l.kind = FileKind::Symlink;
        l.target = b"../x/y".to_vec();
        l.rdev = 0x0801;
        l.links.clear();
        assert_eq!(InodeRecord::decode(&l.encode()).unwrap(), l);
    }

    #[test]
    fn truncated_and_unknown_format_are_corrupt() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(matches!(
                InodeRecord::decode(&enc[..n]),
                Err(DecodeError(_))
            ));
        }
        let mut bad = enc.clone();
        bad[0] = 99;
        assert!(matches!(InodeRecord::decode(&bad), Err(DecodeError(_))));
    }

    proptest! {
        #[test]
        fn proptest_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = InodeRecord::decode(&bytes);
        }

        #[test]
        fn proptest_round_trip(name in proptest::collection::vec(any::<u8>(), 0..255),
                               size in any::<u64>(), mtime in any::<i64>(),
                               version in proptest::option::of("[a-z0-9-]{0,40}")) {
            let mut r = sample();
            r.name = name;
            r.size = size;
            r.mtime_ns = mtime;
            r.version = version;
            prop_assert_eq!(InodeRecord::decode(&r.encode()).unwrap(), r);
        }
    }
}
