//! The cluster: cache nodes on a consistent-hash ring (`ring`), the peer protocol
//! (`wire`), the page source that asks them (`client::Peers`, one more source in the
//! fetch chain between the local tiers and the store) and the listener that answers them
//! (`server`), and the membership followed in the metaserver (`membership`).

pub mod client;
pub mod membership;
pub mod ring;
pub mod server;
pub mod wire;
