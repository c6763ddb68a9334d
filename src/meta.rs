//! The metadata client: how the vfs reaches the namespace.
//!
//! `MetaClient` is remote-shaped: every call takes and returns owned values. Each call is
//! one `rpc::Op`, run by a [`RunOp`]: the embedded client (`embedded`, a namespace in this
//! process) or the metaserver client (`remote`), so both behave alike by construction.

use async_trait::async_trait;

use alluxio_metaserver::ops::OpValue;
use alluxio_metaserver::rpc::{Op, Value};
use alluxio_metaserver::{
    ClusterMember, Lookup, Membership, MetaError, MountEntry, NewNode, SetAttr, Ttl, TtlAction,
    UfsChild, XattrMode,
};

use crate::types::{DirEntry, InodeNo, InodeRecord, Ownership};

pub mod embedded;
pub mod remote;

/// Expands the table of operations (`alluxio_metaserver::ops`) into [`MetaClient`] and
/// its one implementation over any [`RunOp`].
macro_rules! client {
    ($(
        $(#[$doc:meta])*
        $method:ident $Var:ident $({ $( $(#[$fa:meta])* $f:ident : $t:ty ),* $(,)? })?
            -> $R:ty = |$ns:ident, $now:ident| $body:expr;
    )*) => {
        /// Namespace operations used by the vfs, one per operation of the table; semantics
        /// are those of `alluxio_metaserver::Namespace`.
        #[async_trait]
        pub trait MetaClient: Send + Sync + 'static {
            $(
                $(#[$doc])*
                #[allow(clippy::too_many_arguments)]
                async fn $method(&self $($(, $f: $t)*)?) -> Result<$R, MetaError>;
            )*
        }

        #[async_trait]
        impl<T: RunOp> MetaClient for T {
            $(
                #[allow(clippy::too_many_arguments)]
                async fn $method(&self $($(, $f: $t)*)?) -> Result<$R, MetaError> {
                    <$R as OpValue>::from_value(self.run(Op::$Var { $($($f),*)? }).await?)
                }
            )*
        }
    };
}

alluxio_metaserver::namespace_ops!(client);

/// How a client runs one namespace operation: in process ([`embedded`]) or over the wire
/// ([`remote`]). Every [`MetaClient`] call is one [`Op`], so both clients share one
/// mapping (expanded from the table, above) and the wire carries exactly what the
/// embedded client runs.
#[async_trait]
pub trait RunOp: Send + Sync + 'static {
    /// Runs `op` against the namespace.
    async fn run(&self, op: Op) -> Result<Value, MetaError>;
}
