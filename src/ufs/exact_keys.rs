//! Keys reach the store byte for byte.
//!
//! OpenDAL's `Operator` normalizes every path before its layers see it: it trims leading
//! and trailing whitespace, drops a leading `/` and collapses empty components. So the
//! names `a `, ` a` and `a` would all be the object `a`, `unlink(" ")` would aim at the
//! store's root, and `dir//x` (written by another tool) could not be read or moved. A
//! POSIX name may hold any byte but `/` and NUL, and each must map to exactly its own key.
//!
//! [`encode`] turns a key into a path normalization leaves alone: a marker, the key's
//! bytes in hex, and the key's trailing `/` kept outside (the operator tells directories
//! from files by it). [`ExactKeysLayer`], the innermost layer of the stack, turns it back
//! before OpenDAL's own inner layers and the service see it. Paths that do not start with
//! the marker (`/`, the root) pass unchanged.
//!
//! Paths OpenDAL hands out (listing entries) come from the service as they are; they are
//! encoded again before they go back in. Not covered: a writer's `copy_from` and a
//! composer's sources, which normalize their own paths and which this crate never uses.

use std::sync::Arc;

use opendal::raw::*;
use opendal::*;

/// Starts every encoded path: a Unicode noncharacter (reserved for internal use), never
/// whitespace, so normalization keeps it.
const MARK: char = '\u{FDD0}';

/// The path to hand to the operator for the exact key `key`.
pub(crate) fn encode(key: &str) -> String {
    if key.is_empty() || key == "/" {
        return key.to_string();
    }
    let (body, slash) = match key.strip_suffix('/') {
        Some(b) => (b, "/"),
        None => (key, ""),
    };
    let mut out = String::with_capacity(MARK.len_utf8() + 2 * body.len() + 1);
    out.push(MARK);
    for b in body.bytes() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out.push_str(slash);
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The exact key an [`encode`]d path stands for; other paths are returned as they are.
fn decode(path: &str) -> Result<String> {
    let Some(rest) = path.strip_prefix(MARK) else {
        return Ok(path.to_string());
    };
    let (body, slash) = match rest.strip_suffix('/') {
        Some(b) => (b, "/"),
        None => (rest, ""),
    };
    let bad = || Error::new(ErrorKind::Unexpected, "malformed encoded key");
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(bad()),
    };
    let hex = body.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return Err(bad());
    }
    let mut bytes = Vec::with_capacity(hex.len() / 2 + 1);
    for pair in hex.chunks_exact(2) {
        bytes.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    bytes.extend_from_slice(slash.as_bytes());
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The layer that decodes [`encode`]d paths (see the module comment).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExactKeysLayer;

impl Layer for ExactKeysLayer {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        Arc::new(ExactKeys { inner })
    }
}

#[derive(Debug)]
struct ExactKeys {
    inner: Servicer,
}

impl Service for ExactKeys {
    type Reader = oio::Reader;
    type Writer = oio::Writer;
    type Lister = oio::Lister;
    type Deleter = ExactDeleter;
    type Copier = oio::Copier;
    type Composer = oio::Composer;

    fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> Capability {
        self.inner.capability()
    }

    async fn create_dir(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpCreateDir,
    ) -> Result<RpCreateDir> {
        self.inner.create_dir(ctx, &decode(path)?, args).await
    }

    async fn stat(&self, ctx: &OperationContext, path: &str, args: OpStat) -> Result<RpStat> {
        self.inner.stat(ctx, &decode(path)?, args).await
    }

    fn read(&self, ctx: &OperationContext, path: &str, args: OpRead) -> Result<Self::Reader> {
        self.inner.read(ctx, &decode(path)?, args)
    }

    fn write(&self, ctx: &OperationContext, path: &str, args: OpWrite) -> Result<Self::Writer> {
        self.inner.write(ctx, &decode(path)?, args)
    }

    fn delete(&self, ctx: &OperationContext) -> Result<Self::Deleter> {
        Ok(ExactDeleter(self.inner.delete(ctx)?))
    }

    fn list(&self, ctx: &OperationContext, path: &str, args: OpList) -> Result<Self::Lister> {
        self.inner.list(ctx, &decode(path)?, args)
    }

    fn copy(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpCopy,
    ) -> Result<Self::Copier> {
        self.inner.copy(ctx, &decode(from)?, &decode(to)?, args)
    }

    fn compose(&self, ctx: &OperationContext, to: &str, args: OpCompose) -> Result<Self::Composer> {
        self.inner.compose(ctx, &decode(to)?, args)
    }

    async fn rename(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpRename,
    ) -> Result<RpRename> {
        self.inner
            .rename(ctx, &decode(from)?, &decode(to)?, args)
            .await
    }

    async fn restore(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpRestore,
    ) -> Result<RpRestore> {
        self.inner.restore(ctx, &decode(path)?, args).await
    }

    async fn presign(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpPresign,
    ) -> Result<RpPresign> {
        self.inner.presign(ctx, &decode(path)?, args).await
    }
}

/// A deleter that decodes each path it is given.
pub(crate) struct ExactDeleter(oio::Deleter);

impl oio::Delete for ExactDeleter {
    async fn delete(&mut self, path: &str, args: OpDelete) -> Result<()> {
        self.0.delete(&decode(path)?, args).await
    }

    async fn close(&mut self) -> Result<()> {
        self.0.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_survives_normalization_and_comes_back_whole() {
        for key in [
            "a",
            " a",
            "a ",
            " ",
            "\t",
            "x\n",
            "dir/ a",
            "dir//double",
            "a//",
            "/lead",
            "a/../../escape",
            "\u{FDD0}",
            "d/",
            " d /",
            "ünï cødé",
        ] {
            let enc = encode(key);
            assert_eq!(normalize_path(&enc), enc, "{key:?} is left alone");
            assert_eq!(decode(&enc).unwrap(), key);
            assert_eq!(enc.ends_with('/'), key.ends_with('/'), "{key:?}");
        }
        assert_eq!(encode(""), "");
        assert_eq!(decode("plain/path").unwrap(), "plain/path");
        assert!(decode("\u{FDD0}abc").is_err(), "odd length");
        assert!(decode("\u{FDD0}zz").is_err(), "not hex");
        assert!(decode("\u{FDD0}ff").is_err(), "not UTF-8");
    }
}
