//! The metaserver's wire: one gRPC method, `alluxio.meta.v1.Meta/Call`, whose request is a
//! versioned envelope around one namespace operation ([`Op`]) and whose reply is the
//! operation's value or its [`MetaError`]. Messages are JSON (`application/grpc+json`),
//! so there is no protoc step and the types are the namespace's own.
//!
//! Invariants:
//! - every call carries the shared token in the `authorization` metadata (`Bearer
//!   TOKEN`); a call without it, or with another, is refused with `Unauthenticated` from
//!   its headers, before its message is read.
//! - messages are bounded ([`MAX_MESSAGE_BYTES`]) both ways. A frame whose length prefix
//!   says more is refused from the prefix alone, with an error reply; its body is never
//!   buffered. Garbage on the port fails that connection only.
//! - a call whose `version` is not [`WIRE_VERSION`] is refused with `FailedPrecondition`,
//!   so client and server of different wire versions never misread each other.
//! - namespace semantics are exactly those of [`Namespace`]: the server runs each call on
//!   the blocking pool and stamps times with its own clock.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::{Buf, BufMut};
use serde::{Deserialize, Serialize};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status};

use crate::error::MetaError;
use crate::namespace::{
    ClusterMember, Lookup, Membership, MountEntry, Namespace, NewNode, SetAttr, Ttl, TtlAction,
    UfsChild, XattrMode,
};
use crate::ops::OpValue;
pub use crate::ops::Value;
use crate::record::{DirEntry, InodeNo, InodeRecord, Ownership};
use crate::store::NamespaceStore;

mod generated {
    #![allow(missing_docs, clippy::all, clippy::unwrap_used)]
    include!(concat!(env!("OUT_DIR"), "/alluxio.meta.v1.Meta.rs"));
}

pub use generated::meta_client::MetaClient as GrpcClient;
pub use generated::meta_server::{Meta, MetaServer};

/// The wire version this build speaks.
pub const WIRE_VERSION: u32 = 1;

/// Largest message, either way: a directory listing of about 100,000 entries.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Metadata key of the token.
pub const AUTH_HEADER: &str = "authorization";

/// One call: the wire version and the operation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Call {
    /// Must be [`WIRE_VERSION`].
    pub version: u32,
    /// What to do.
    pub op: Op,
}

/// Expands the table of operations (`crate::ops`) into the wire's [`Op`], its names, and
/// [`dispatch`].
macro_rules! wire {
    ($(
        $(#[$doc:meta])*
        $method:ident $Var:ident $({ $( $(#[$fa:meta])* $f:ident : $t:ty ),* $(,)? })?
            -> $R:ty = |$ns:ident, $now:ident| $body:expr;
    )*) => {
        /// A namespace operation, one per entry of `crate::ops`; fields as in
        /// [`Namespace`]'s methods.
        #[derive(Debug, Serialize, Deserialize)]
        #[allow(missing_docs)]
        pub enum Op {
            $( $(#[$doc])* $Var $({ $( $(#[$fa])* $f: $t ),* })?, )*
        }

        impl Op {
            /// The operation's name (its variant), for metrics and logs.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Op::$Var { .. } => stringify!($Var), )*
                }
            }
        }

        /// Runs one operation on the namespace, at time `now_ns`.
        pub fn dispatch<S: NamespaceStore>(
            ns: &Namespace<S>,
            op: Op,
            now_ns: i64,
        ) -> Result<Value, MetaError> {
            match op {
                $( Op::$Var { $($($f),*)? } => {
                    let $ns = ns;
                    let $now = now_ns;
                    let answer: Result<$R, MetaError> = $body;
                    Ok(answer?.into_value())
                } )*
            }
        }
    };
}

crate::namespace_ops!(wire);

/// Called after each call with the operation's name, how long it took and whether it
/// failed (metrics).
pub type Observer = Arc<dyn Fn(&'static str, std::time::Duration, bool) + Send + Sync>;

/// The reply: the operation's value, or the namespace's error. Transport and
/// authentication failures are gRPC statuses instead.
#[derive(Debug, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Reply {
    Ok(Value),
    Err(MetaError),
}

/// The `authorization` value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Compares in time independent of where the inputs differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The namespace served over gRPC.
pub struct Service<S> {
    ns: Arc<Namespace<S>>,
    auth: TokenCheck,
    observer: Option<Observer>,
}

/// Refuses calls without the token. It runs on the request's headers, before the message
/// is read or decoded.
#[derive(Clone)]
pub struct TokenCheck {
    /// The expected `authorization` value.
    expected: Arc<str>,
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req
            .metadata()
            .get(AUTH_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if same_secret(presented, self.expected.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong token"))
        }
    }
}

/// The service as served: the token check in front of the bounded gRPC service.
pub type Server<S> =
    tonic::service::interceptor::InterceptedService<MetaServer<Service<S>>, TokenCheck>;

impl<S: NamespaceStore + Send + Sync + 'static> Service<S> {
    /// Serves `ns` to callers that present `token`.
    pub fn new(ns: Namespace<S>, token: &str) -> Self {
        Self {
            ns: Arc::new(ns),
            auth: TokenCheck {
                expected: Arc::from(bearer(token)),
            },
            observer: None,
        }
    }

    /// Reports every call to `observer`.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The tonic service: the token check, then the message bounds, then the namespace.
    pub fn into_server(self) -> Server<S> {
        let check = self.auth.clone();
        let svc = MetaServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        tonic::service::interceptor::InterceptedService::new(svc, check)
    }

    /// The namespace, for a clean shutdown (`sync`).
    pub fn namespace(&self) -> Arc<Namespace<S>> {
        self.ns.clone()
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[tonic::async_trait]
impl<S: NamespaceStore + Send + Sync + 'static> Meta for Service<S> {
    async fn call(&self, req: Request<Call>) -> Result<Response<Reply>, Status> {
        // The token was checked before the message was read (`TokenCheck`).
        let call = req.into_inner();
        if call.version != WIRE_VERSION {
            return Err(Status::failed_precondition(format!(
                "wire version {} is not supported (this server speaks {WIRE_VERSION})",
                call.version
            )));
        }
        let ns = self.ns.clone();
        let name = call.op.name();
        let t0 = std::time::Instant::now();
        let reply = tokio::task::spawn_blocking(move || dispatch(&ns, call.op, now_ns()))
            .await
            .map_err(|e| Status::internal(format!("namespace task failed: {e}")))?;
        if let Some(o) = &self.observer {
            o(name, t0.elapsed(), reply.is_err());
        }
        Ok(Response::new(match reply {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Err(e),
        }))
    }
}

/// JSON encoding of the call and reply types (`application/grpc+json`).
#[derive(Debug, Clone)]
pub struct JsonCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for JsonCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

/// Encoder half of [`JsonCodec`].
#[derive(Debug)]
pub struct JsonEncoder<T>(PhantomData<T>);

/// Decoder half of [`JsonCodec`].
#[derive(Debug)]
pub struct JsonDecoder<U>(PhantomData<U>);

impl<T: Serialize> Encoder for JsonEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        serde_json::to_writer(buf.writer(), &item).map_err(|e| Status::internal(e.to_string()))
    }
}

impl<U: serde::de::DeserializeOwned> Decoder for JsonDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if !buf.has_remaining() {
            return Ok(None);
        }
        // A malformed message is the caller's error, answered as such.
        serde_json::from_reader(buf.reader())
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))
    }
}

impl<T, U> Codec for JsonCodec<T, U>
where
    T: Serialize + Send + 'static,
    U: serde::de::DeserializeOwned + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = JsonEncoder<T>;
    type Decoder = JsonDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        JsonEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        JsonDecoder(PhantomData)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"Bearer abc", b"Bearer abc"));
        assert!(!same_secret(b"Bearer abd", b"Bearer abc"));
        assert!(!same_secret(b"Bearer ab", b"Bearer abc"));
        assert!(!same_secret(b"", b"Bearer abc"));
    }

    #[test]
    fn the_wire_form_of_operations_is_fixed() {
        // Clients and servers of one WIRE_VERSION must agree byte for byte: a unit
        // operation is a bare string, the others an object of their fields.
        let text = |op: Op| serde_json::to_string(&op).unwrap();
        assert_eq!(text(Op::Sync), r#""Sync""#);
        assert_eq!(text(Op::Get { ino: InodeNo(7) }), r#"{"Get":{"ino":7}}"#);
        assert_eq!(
            text(Op::SetPin {
                path: "/a".into(),
                pinned: true
            }),
            r#"{"SetPin":{"path":"/a","pinned":true}}"#
        );
        // A listing from a client that sends no token still decodes.
        let op: Op = serde_json::from_str(
            r#"{"LoadDir":{"dir":1,"listing":[],"defaults":{"uid":0,"gid":0,"file_mode":420,"dir_mode":493}}}"#,
        )
        .unwrap();
        assert!(matches!(op, Op::LoadDir { token: None, .. }), "{op:?}");
        assert_eq!(Op::Sync.name(), "Sync");
        assert_eq!(Op::Get { ino: InodeNo(1) }.name(), "Get");
    }

    #[test]
    fn calls_round_trip_through_json() {
        let call = Call {
            version: WIRE_VERSION,
            op: Op::Lookup {
                parent: InodeNo(1),
                name: b"a\xffb".to_vec(),
            },
        };
        let s = serde_json::to_vec(&call).unwrap();
        let back: Call = serde_json::from_slice(&s).unwrap();
        match back.op {
            Op::Lookup { parent, name } => {
                assert_eq!((parent, name), (InodeNo(1), b"a\xffb".to_vec()))
            }
            other => panic!("{other:?}"),
        }
    }
}
