//! Where Pub/Sub is and how to authenticate to it: [`Connection`] turns `GcpArgs` and
//! `PubSubArgs` into an endpoint plus credentials, builds the official clients with them, and
//! bounds every admin call by a timeout so that a wrong set-up fails fast with a clear message.
//!
//! The official crate does not read `PUBSUB_EMULATOR_HOST` itself: against the emulator every
//! client is built with the endpoint `http://HOST:PORT` and anonymous credentials (without them
//! the first call waits ~56 s for a metadata server that is not there).

use std::future::Future;
use std::time::Duration;

use firstclick_cli::GcpArgs;
use google_cloud_auth::credentials::{self, Credentials};
use google_cloud_pubsub::client::{BasePublisher, Subscriber, SubscriptionAdmin, TopicAdmin};

use crate::args::{validate_project, PubSubArgs};
use crate::error::{ClientError, ErrorContext, PubSubError};

/// Time limit for one admin call (and for the first access token) against Google Cloud.
pub const CLOUD_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit for one admin call against the emulator, which answers at once or not at all.
pub(crate) const EMULATOR_TIMEOUT: Duration = Duration::from_secs(10);

/// Time limit for the TCP check of the emulator's address.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which Pub/Sub service is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The emulator at `host` (`HOST:PORT`), plaintext, anonymous credentials.
    Emulator {
        /// `HOST:PORT`.
        host: String,
    },
    /// Google Cloud (`https://pubsub.googleapis.com`).
    GoogleCloud,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Emulator { host } => write!(f, "the emulator at {host}"),
            Target::GoogleCloud => f.write_str("pubsub.googleapis.com"),
        }
    }
}

/// A project on one Pub/Sub service with its credentials; cheap to clone. Builds the official
/// clients ([`crate::Admin`], [`crate::Publisher`], [`crate::Subscription`] take one).
#[derive(Clone, Debug)]
pub struct Connection {
    project_id: String,
    target: Target,
    credentials: Credentials,
    timeout: Duration,
}

impl Connection {
    /// Resolves the target and the credentials.
    ///
    /// Against the emulator this does no I/O. Against Google Cloud it reads the key file given
    /// with `--credentials` (else uses application-default credentials) and fetches a first
    /// access token, so that missing or broken credentials fail here, within
    /// [`CLOUD_TIMEOUT`], rather than on the first message.
    pub async fn connect(gcp: &GcpArgs, args: &PubSubArgs) -> Result<Self, PubSubError> {
        validate_project(&gcp.project_id)?;
        match args.emulator_host.as_deref().map(str::trim) {
            Some(host) if !host.is_empty() => {
                let conn = Self::emulator(host, &gcp.project_id)?;
                conn.probe_emulator().await?;
                Ok(conn)
            }
            _ => {
                let credentials = cloud_credentials(gcp)?;
                probe_credentials(&credentials).await?;
                Ok(Self {
                    project_id: gcp.project_id.clone(),
                    target: Target::GoogleCloud,
                    credentials,
                    timeout: CLOUD_TIMEOUT,
                })
            }
        }
    }

    /// A connection to the emulator at `host` (`HOST:PORT`, an `http://` prefix is accepted).
    pub fn emulator(host: &str, project_id: &str) -> Result<Self, PubSubError> {
        validate_project(project_id)?;
        Ok(Self {
            project_id: project_id.to_string(),
            target: Target::Emulator {
                host: parse_emulator_host(host)?,
            },
            credentials: credentials::anonymous::Builder::new().build(),
            timeout: EMULATOR_TIMEOUT,
        })
    }

    /// The project id.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The service used.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The time limit of one admin call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Overrides the time limit of one admin call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `projects/{project}/topics/{topic}`.
    pub fn topic_path(&self, topic: &str) -> String {
        format!("projects/{}/topics/{topic}", self.project_id)
    }

    /// `projects/{project}/subscriptions/{subscription}`.
    pub fn subscription_path(&self, subscription: &str) -> String {
        format!("projects/{}/subscriptions/{subscription}", self.project_id)
    }

    /// The endpoint to override the client's default with, if any.
    fn endpoint(&self) -> Option<String> {
        match &self.target {
            Target::Emulator { host } => Some(format!("http://{host}")),
            Target::GoogleCloud => None,
        }
    }

    pub(crate) fn context(&self) -> ErrorContext {
        let (unreachable_hint, timeout_hint) = match &self.target {
            Target::Emulator { host } => (
                format!(
                    "is the emulator running? Start it with `gcloud beta emulators pubsub start \
                     --host-port={host}` (or the cloud-pubsub-emulator script with --host and \
                     --port), or fix --pubsub-emulator-host / PUBSUB_EMULATOR_HOST"
                ),
                format!(
                    "something accepts connections on {host} but does not answer like the \
                     Pub/Sub emulator; check what listens there, or fix --pubsub-emulator-host \
                     / PUBSUB_EMULATOR_HOST"
                ),
            ),
            Target::GoogleCloud => (
                "check the network (and any proxy) to pubsub.googleapis.com; to use the \
                 emulator instead, set PUBSUB_EMULATOR_HOST=HOST:PORT"
                    .to_string(),
                "check the network to pubsub.googleapis.com and the credentials \
                 (--credentials / GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth \
                 application-default login`); to use the emulator, set PUBSUB_EMULATOR_HOST"
                    .to_string(),
            ),
        };
        ErrorContext {
            project: self.project_id.clone(),
            target: self.target.to_string(),
            unreachable_hint,
            timeout_hint,
        }
    }

    /// Against the emulator, checks that something accepts TCP connections at its address
    /// (the client itself retries refused connections until the time limit). Else a no-op.
    pub async fn probe_emulator(&self) -> Result<(), PubSubError> {
        let Target::Emulator { host } = &self.target else {
            return Ok(());
        };
        let unreachable = |cause| PubSubError::EmulatorUnreachable {
            host: host.clone(),
            cause,
        };
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(host)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unreachable(e)),
            Err(_) => Err(unreachable(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TCP connection within {PROBE_TIMEOUT:?}"),
            ))),
        }
    }

    /// Runs one admin call under the time limit. The outer error is a time-out (or an
    /// unreachable emulator); the inner one is the call's own, for the caller to translate.
    pub(crate) async fn send<T, F>(
        &self,
        operation: &str,
        fut: F,
    ) -> Result<Result<T, ClientError>, PubSubError>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => Ok(result),
            Err(_) => {
                self.probe_emulator().await?;
                Err(self.context().timeout(operation.to_string(), self.timeout))
            }
        }
    }

    /// Runs one admin call under the time limit, translating its error.
    pub(crate) async fn call<T, F>(&self, operation: String, fut: F) -> Result<T, PubSubError>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        match self.send(&operation, fut).await? {
            Ok(v) => Ok(v),
            Err(e) => Err(self.context().classify(operation, e)),
        }
    }

    fn client_error(&self, cause: google_cloud_gax::client_builder::Error) -> PubSubError {
        PubSubError::Client {
            target: self.target.to_string(),
            cause,
        }
    }

    pub(crate) async fn topic_admin(&self) -> Result<TopicAdmin, PubSubError> {
        let mut b = TopicAdmin::builder().with_credentials(self.credentials.clone());
        if let Some(e) = self.endpoint() {
            b = b.with_endpoint(e);
        }
        b.build().await.map_err(|e| self.client_error(e))
    }

    pub(crate) async fn subscription_admin(&self) -> Result<SubscriptionAdmin, PubSubError> {
        let mut b = SubscriptionAdmin::builder().with_credentials(self.credentials.clone());
        if let Some(e) = self.endpoint() {
            b = b.with_endpoint(e);
        }
        b.build().await.map_err(|e| self.client_error(e))
    }

    pub(crate) async fn subscriber(&self, subchannels: usize) -> Result<Subscriber, PubSubError> {
        let mut b = Subscriber::builder()
            .with_credentials(self.credentials.clone())
            .with_grpc_subchannel_count(subchannels);
        if let Some(e) = self.endpoint() {
            b = b.with_endpoint(e);
        }
        b.build().await.map_err(|e| self.client_error(e))
    }

    pub(crate) async fn base_publisher(&self) -> Result<BasePublisher, PubSubError> {
        let mut b = BasePublisher::builder().with_credentials(self.credentials.clone());
        if let Some(e) = self.endpoint() {
            b = b.with_endpoint(e);
        }
        b.build().await.map_err(|e| self.client_error(e))
    }
}

/// Accepts `HOST:PORT` (and `http://HOST:PORT`), returns `HOST:PORT`.
fn parse_emulator_host(value: &str) -> Result<String, PubSubError> {
    let bad = || PubSubError::InvalidEmulatorHost {
        value: value.to_string(),
    };
    let host = value.trim();
    let host = host.strip_prefix("http://").unwrap_or(host);
    let host = host.strip_suffix('/').unwrap_or(host);
    let (name, port) = host.rsplit_once(':').ok_or_else(bad)?;
    if name.is_empty() || name.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(host.to_string())
}

/// The credentials to use against Google Cloud: the key file if given, else ADC.
fn cloud_credentials(gcp: &GcpArgs) -> Result<Credentials, PubSubError> {
    let Some(path) = &gcp.credentials else {
        return credentials::Builder::default()
            .build()
            .map_err(|e| PubSubError::Credentials {
                detail: format!("application-default credentials: {e}"),
            });
    };
    let text = std::fs::read_to_string(path).map_err(|cause| PubSubError::CredentialsFile {
        path: path.clone(),
        cause,
    })?;
    let key_error = |reason: String| PubSubError::CredentialsKey {
        path: path.clone(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| key_error(format!("not JSON ({e})")))?;
    let kind = json.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let built = match kind {
        "service_account" => credentials::service_account::Builder::new(json).build(),
        "authorized_user" => credentials::user_account::Builder::new(json).build(),
        "" => return Err(key_error("it has no \"type\" field".into())),
        other => {
            return Err(key_error(format!(
                "its type is {other:?}, expected \"service_account\" (or \"authorized_user\")"
            )))
        }
    };
    built.map_err(|e| key_error(e.to_string()))
}

/// Fetches one access token, so that credential problems surface now and clearly.
async fn probe_credentials(credentials: &Credentials) -> Result<(), PubSubError> {
    match tokio::time::timeout(CLOUD_TIMEOUT, credentials.headers(http::Extensions::new())).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(PubSubError::Credentials {
            detail: e.to_string(),
        }),
        Err(_) => Err(PubSubError::Credentials {
            detail: format!(
                "no access token within {CLOUD_TIMEOUT:?} (without --credentials, outside Google \
                 Cloud, the client waits for a metadata server that is not there)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_forms() {
        assert_eq!(
            parse_emulator_host("127.0.0.1:8085").unwrap(),
            "127.0.0.1:8085"
        );
        assert_eq!(
            parse_emulator_host("http://localhost:8085/").unwrap(),
            "localhost:8085"
        );
        for bad in [
            "localhost",
            "localhost:",
            ":8085",
            "host:99999",
            "host:0",
            "a/b:1",
        ] {
            let err = parse_emulator_host(bad).unwrap_err().to_string();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn paths() {
        let c = Connection::emulator("127.0.0.1:1", "proj").unwrap();
        assert_eq!(c.topic_path("t1x"), "projects/proj/topics/t1x");
        assert_eq!(
            c.subscription_path("s1x"),
            "projects/proj/subscriptions/s1x"
        );
        assert_eq!(c.endpoint().as_deref(), Some("http://127.0.0.1:1"));
    }

    #[test]
    fn key_file_errors_name_the_file_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("fc-pubsub-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = GcpArgs {
            project_id: "p-1".into(),
            credentials: Some(dir.join("nope.json")),
        };
        let err = cloud_credentials(&missing).unwrap_err().to_string();
        assert!(
            err.contains("nope.json") && err.contains("--credentials"),
            "{err}"
        );

        let wrong = dir.join("wrong.json");
        std::fs::write(&wrong, r#"{"type": "external_account_x"}"#).unwrap();
        let gcp = GcpArgs {
            project_id: "p-1".into(),
            credentials: Some(wrong),
        };
        let err = cloud_credentials(&gcp).unwrap_err().to_string();
        assert!(err.contains("service_account"), "{err}");

        let broken = dir.join("broken.json");
        std::fs::write(&broken, r#"{"type": "service_account"}"#).unwrap();
        let gcp = GcpArgs {
            project_id: "p-1".into(),
            credentials: Some(broken),
        };
        let err = cloud_credentials(&gcp).unwrap_err().to_string();
        assert!(err.contains("broken.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
