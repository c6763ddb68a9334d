//! The remote metadata client: the namespace of an `alluxio metaserver`, over its gRPC
//! wire (`alluxio_metaserver::rpc`). Same semantics as the embedded client; the server
//! stamps times with its clock.
//!
//! A call that cannot reach the server, or that it refuses (wrong token, other wire
//! version), fails with `MetaError::Storage` (EIO to the application) after the channel's
//! timeout: a metaserver that is down stalls operations for at most [`CALL_TIMEOUT`],
//! never forever.

use std::time::Duration;

use async_trait::async_trait;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use alluxio_metaserver::MetaError;
use alluxio_metaserver::rpc::{
    AUTH_HEADER, Call, GrpcClient, MAX_MESSAGE_BYTES, Op, Reply, Value, WIRE_VERSION, bearer,
};

use super::RunOp;

/// Longest a call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A namespace served by a metaserver.
pub struct RemoteMeta {
    client: GrpcClient<Channel>,
    auth: MetadataValue<tonic::metadata::Ascii>,
    addr: String,
}

impl RemoteMeta {
    /// Connects to `addr` (`HOST:PORT`) with `token`, and checks that the server accepts
    /// both (one call), so a wrong address or token fails here, with a clear error.
    pub async fn connect(addr: &str, token: &str) -> Result<Self, String> {
        let auth = MetadataValue::try_from(bearer(token))
            .map_err(|_| "the token has characters a header cannot carry".to_string())?;
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("metaserver address {addr}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to metaserver {addr}: {e}"))?;
        let client = GrpcClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let me = Self {
            client,
            auth,
            addr: addr.to_string(),
        };
        match me.call(Op::InodesAllocated).await {
            Ok(_) => Ok(me),
            Err(MetaError::Storage(m)) => Err(m),
            Err(e) => Err(format!("metaserver {addr}: {e}")),
        }
    }

    async fn call(&self, op: Op) -> Result<Value, MetaError> {
        let mut req = tonic::Request::new(Call {
            version: WIRE_VERSION,
            op,
        });
        req.metadata_mut().insert(AUTH_HEADER, self.auth.clone());
        let mut client = self.client.clone();
        match client.call(req).await {
            Ok(r) => match r.into_inner() {
                Reply::Ok(v) => Ok(v),
                Reply::Err(e) => Err(e),
            },
            Err(s) => Err(MetaError::Storage(format!(
                "metaserver {}: {} ({:?})",
                self.addr,
                s.message(),
                s.code()
            ))),
        }
    }
}

#[async_trait]
impl RunOp for RemoteMeta {
    async fn run(&self, op: Op) -> Result<Value, MetaError> {
        self.call(op).await
    }
}
