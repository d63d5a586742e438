//! The one error type of this crate, and the translation of the official client's errors into
//! messages that say what went wrong and what to do about it (wrong project, missing or rejected
//! credentials, unreachable emulator, missing topic or subscription).
//!
//! Each message is complete on its own (it includes the underlying error), so the underlying
//! error is a `cause` field, not an error `source`: printing the chain would repeat it.

use std::path::PathBuf;
use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::error::PublishError;

/// The error of the official client library.
pub type ClientError = google_cloud_pubsub::Error;

/// Everything that can go wrong talking to Pub/Sub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// `PUBSUB_EMULATOR_HOST` is not of the form `HOST:PORT`.
    #[error(
        "invalid Pub/Sub emulator address {value:?}: expected HOST:PORT (e.g. 127.0.0.1:8085); \
         fix --pubsub-emulator-host / PUBSUB_EMULATOR_HOST, or unset it to use Google Cloud"
    )]
    InvalidEmulatorHost {
        /// The value given.
        value: String,
    },

    /// The project id cannot be part of a resource name.
    #[error(
        "invalid project id {project:?}: {reason}; fix --project-id / PROJECT_ID \
         (a Google Cloud project id such as my-project-123)"
    )]
    InvalidProject {
        /// The project id given.
        project: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A topic or subscription id breaks Pub/Sub's naming rules.
    #[error(
        "invalid {kind} id {name:?}: {reason} (Pub/Sub ids are 3-255 characters, start with a \
         letter, use only letters, digits and - _ . ~ + %, and do not start with \"goog\")"
    )]
    InvalidName {
        /// `"topic"` or `"subscription"`.
        kind: &'static str,
        /// The id given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The key file named by `--credentials` cannot be read.
    #[error(
        "cannot read the credentials file {path}: {cause}; fix --credentials / \
         GOOGLE_APPLICATION_CREDENTIALS (a service-account JSON key)"
    )]
    CredentialsFile {
        /// The path given.
        path: PathBuf,
        /// Why it could not be read.
        cause: std::io::Error,
    },

    /// The key file is not a usable key.
    #[error(
        "the credentials file {path} is not a usable key: {reason}; download a service-account \
         JSON key (IAM > Service accounts > Keys) and pass it with --credentials"
    )]
    CredentialsKey {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// No access token could be obtained (no application-default credentials, a revoked key, no
    /// metadata server...).
    #[error(
        "cannot obtain Google Cloud credentials: {detail}; pass a service-account key with \
         --credentials / GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth \
         application-default login`; to use the emulator instead, set PUBSUB_EMULATOR_HOST"
    )]
    Credentials {
        /// What the credentials library said.
        detail: String,
    },

    /// The official client could not be constructed.
    #[error("cannot create the Pub/Sub client for {target}: {cause}")]
    Client {
        /// The emulator address or Google Cloud.
        target: String,
        /// The client builder's error.
        cause: google_cloud_gax::client_builder::Error,
    },

    /// Nothing accepts connections at the emulator's address.
    #[error(
        "the Pub/Sub emulator at {host} is not reachable ({cause}); start it with `gcloud beta \
         emulators pubsub start --host-port={host}` (or the cloud-pubsub-emulator script with \
         --host and --port), or fix --pubsub-emulator-host / PUBSUB_EMULATOR_HOST"
    )]
    EmulatorUnreachable {
        /// `HOST:PORT`.
        host: String,
        /// Why connecting failed.
        cause: std::io::Error,
    },

    /// Pub/Sub (or the emulator) could not be reached at all.
    #[error("{operation}: Pub/Sub at {target} is not reachable ({cause}); {hint}")]
    Unreachable {
        /// What was being done.
        operation: String,
        /// The emulator address or Google Cloud.
        target: String,
        /// What to check.
        hint: String,
        /// The client's error.
        cause: ClientError,
    },

    /// An operation did not finish in time.
    #[error("{operation}: no answer from Pub/Sub at {target} within {after:?}; {hint}")]
    Timeout {
        /// What was being done.
        operation: String,
        /// The emulator address or Google Cloud.
        target: String,
        /// The time limit.
        after: Duration,
        /// What to check.
        hint: String,
    },

    /// The server rejected the credentials.
    #[error(
        "{operation}: the credentials were rejected ({cause}); check that the key in \
         --credentials / GOOGLE_APPLICATION_CREDENTIALS is valid and not revoked, or re-run \
         `gcloud auth application-default login`"
    )]
    Unauthenticated {
        /// What was being done.
        operation: String,
        /// The client's error.
        cause: ClientError,
    },

    /// The credentials are valid but may not do this.
    #[error(
        "{operation}: permission denied in project {project:?} ({cause}); check --project-id / \
         PROJECT_ID, and grant the service account roles/pubsub.editor (admin) or \
         roles/pubsub.publisher / roles/pubsub.subscriber on that project"
    )]
    PermissionDenied {
        /// What was being done.
        operation: String,
        /// The project used.
        project: String,
        /// The client's error.
        cause: ClientError,
    },

    /// The project does not exist, or the credentials cannot see it.
    #[error(
        "{operation}: project {project:?} was not found, or the credentials cannot see it \
         ({cause}); check --project-id / PROJECT_ID and that the Pub/Sub API is enabled there"
    )]
    ProjectNotFound {
        /// What was being done.
        operation: String,
        /// The project used.
        project: String,
        /// The client's error.
        cause: ClientError,
    },

    /// A topic or subscription this process needs does not exist.
    #[error(
        "{kind} {name} does not exist; create the topology with `create-pubsub` (same \
         --project-id and topic/subscription flags), or fix the name"
    )]
    NotFound {
        /// `"topic"` or `"subscription"`.
        kind: &'static str,
        /// Its full resource name.
        name: String,
    },

    /// A subscription exists but is attached to another topic than expected.
    #[error(
        "subscription {subscription} already exists but is attached to {found_topic}, not \
         {expected_topic}; delete it, or pick another subscription name"
    )]
    SubscriptionConflict {
        /// The subscription's full name.
        subscription: String,
        /// The topic it is attached to.
        found_topic: String,
        /// The topic it should be attached to.
        expected_topic: String,
    },

    /// Any other failed call.
    #[error("{operation} failed: {cause}")]
    Rpc {
        /// What was being done.
        operation: String,
        /// The client's error.
        cause: ClientError,
    },

    /// A message could not be published.
    #[error("publishing to {topic} failed: {cause}")]
    Publish {
        /// The topic's full name.
        topic: String,
        /// The publisher's error.
        cause: PublishError,
    },

    /// A streaming pull failed permanently (transient failures are retried by the client).
    #[error("streaming pull on {subscription} failed: {cause}")]
    Stream {
        /// The subscription's full name.
        subscription: String,
        /// The client's error.
        cause: ClientError,
    },
}

impl PubSubError {
    /// Whether waiting may fix it: Pub/Sub did not answer, or not in time, or answered that it
    /// is overloaded or briefly unable. A wrong set-up (missing subscription, rejected
    /// credentials, a bad name) is not, and retrying it would only hide what to fix.
    pub fn is_transient(&self) -> bool {
        match self {
            PubSubError::EmulatorUnreachable { .. }
            | PubSubError::Unreachable { .. }
            | PubSubError::Timeout { .. } => true,
            PubSubError::Rpc { cause, .. } | PubSubError::Stream { cause, .. } => matches!(
                code_of(cause),
                Some(
                    Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::ResourceExhausted
                        | Code::Aborted
                        | Code::Internal
                )
            ),
            _ => false,
        }
    }
}

/// Where an operation was sent, for error messages.
#[derive(Clone, Debug)]
pub(crate) struct ErrorContext {
    /// The project used.
    pub project: String,
    /// `emulator at HOST:PORT` or `pubsub.googleapis.com`.
    pub target: String,
    /// What to do when the target cannot be reached.
    pub unreachable_hint: String,
    /// What to do when the target does not answer in time.
    pub timeout_hint: String,
}

impl ErrorContext {
    /// Translates a client error that no caller handles specially.
    pub(crate) fn classify(&self, operation: String, err: ClientError) -> PubSubError {
        if err.is_authentication() {
            return PubSubError::Credentials {
                detail: format!("{operation}: {err}"),
            };
        }
        if let Some(status) = err.status() {
            match status.code {
                Code::Unauthenticated => {
                    return PubSubError::Unauthenticated {
                        operation,
                        cause: err,
                    }
                }
                Code::PermissionDenied => {
                    return PubSubError::PermissionDenied {
                        operation,
                        project: self.project.clone(),
                        cause: err,
                    }
                }
                Code::Unavailable => return self.unreachable(operation, err),
                _ => {}
            }
        }
        if err.is_connect() || err.is_io() || err.is_transport() || err.is_exhausted() {
            return self.unreachable(operation, err);
        }
        PubSubError::Rpc {
            operation,
            cause: err,
        }
    }

    fn unreachable(&self, operation: String, err: ClientError) -> PubSubError {
        PubSubError::Unreachable {
            operation,
            target: self.target.clone(),
            hint: self.unreachable_hint.clone(),
            cause: err,
        }
    }

    /// The error for an operation that ran out of time.
    pub(crate) fn timeout(&self, operation: String, after: Duration) -> PubSubError {
        PubSubError::Timeout {
            operation,
            target: self.target.clone(),
            after,
            hint: self.timeout_hint.clone(),
        }
    }
}

/// The status code of a client error, if the server answered.
pub(crate) fn code_of(err: &ClientError) -> Option<Code> {
    err.status().map(|s| s.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_call_is_transient_and_a_wrong_set_up_is_not() {
        let timeout = PubSubError::Timeout {
            operation: "checking subscription s".into(),
            target: "127.0.0.1:8085".into(),
            after: Duration::from_secs(5),
            hint: String::new(),
        };
        assert!(timeout.is_transient());
        let missing = PubSubError::NotFound {
            kind: "subscription",
            name: "projects/p/subscriptions/s".into(),
        };
        assert!(!missing.is_transient());
        let bad_name = PubSubError::InvalidName {
            kind: "subscription",
            name: "a b".into(),
            reason: "spaces",
        };
        assert!(!bad_name.is_transient());
    }
}
