//! Google Pub/Sub connector of firstclick, on Google's official `google-cloud-pubsub` crate.
//!
//! # Layout
//!
//! - `args`: the `clap` flags ([`PubSubArgs`]) and the resolved names ([`Topology`]).
//! - `connection`: emulator or Google Cloud, credentials, time limits ([`Connection`]).
//! - `admin`: idempotent creation of topics and subscriptions ([`ensure_topology`], [`Admin`]).
//! - `publisher`: one topic's [`Publisher`], single messages and bulk loads.
//! - `subscriber`: [`Subscription`], N streaming pulls with flow control, lease extension and
//!   late acks through [`AckHandle`].
//! - `error`: [`PubSubError`], with messages that say what to fix.
//!
//! The modules are private; what a caller needs is re-exported here.
//!
//! Against the emulator (`PUBSUB_EMULATOR_HOST=HOST:PORT`) every client uses the endpoint
//! `http://HOST:PORT` and anonymous credentials; against Google Cloud, the key file from
//! `--credentials`, else application-default credentials.

mod admin;
mod args;
mod connection;
mod error;
mod publisher;
mod subscriber;

pub use admin::{
    ensure_topology, Admin, ResourceKind, ResourceOutcome, ResourceStatus, SubscriptionInfo,
    TopologyReport,
};
pub use args::{PubSubArgs, Topology};
pub use connection::{Connection, Target, CLOUD_TIMEOUT};
pub use error::{ClientError, PubSubError};
pub use publisher::{OutgoingMessage, PublishFuture, Publisher, PublisherOptions};
pub use subscriber::{
    AckHandle, ReceivedMessage, SubscribeOptions, Subscription, SubscriptionHandle,
};

/// Installs aws-lc-rs as rustls' process-wide crypto provider, unless one is installed.
///
/// When a build links rustls with both aws-lc-rs (this crate) and ring (e.g.
/// `gcp-bigquery-client`), rustls cannot pick a default and TLS set-up panics with "no
/// process-level CryptoProvider". Call this at the top of `main` in every binary; it is
/// harmless when only one provider is compiled in.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}
