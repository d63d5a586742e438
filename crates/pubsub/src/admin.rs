//! Creating the pipeline's topics and subscriptions, idempotently: [`ensure_topology`] for the
//! whole set, [`Admin`] for single topics and subscriptions (tests use it for fresh names).

use std::fmt;
use std::time::Duration;

use firstclick_cli::GcpArgs;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};

use crate::args::{validate_id, PubSubArgs, Topology};
use crate::connection::Connection;
use crate::error::{code_of, PubSubError};

/// Ack deadline of the subscriptions `ensure_topology` creates.
pub(crate) const ACK_DEADLINE: Duration = Duration::from_secs(60);

/// A topic or a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    /// A topic.
    Topic,
    /// A subscription.
    Subscription,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Subscription => "subscription",
        })
    }
}

/// Whether an `ensure_*` call created its resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceOutcome {
    /// It did not exist and was created.
    Created,
    /// It was already there (for a subscription: on the expected topic).
    AlreadyExisted,
}

/// One resource `ensure_topology` dealt with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceStatus {
    /// Topic or subscription.
    pub kind: ResourceKind,
    /// Full resource name (`projects/.../topics/...`).
    pub name: String,
    /// Created or already there.
    pub outcome: ResourceOutcome,
}

/// What `ensure_topology` found and did, in creation order (topics first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyReport {
    /// Every topic and subscription of the topology.
    pub resources: Vec<ResourceStatus>,
}

impl TopologyReport {
    /// The resources that were created by this call.
    pub fn created(&self) -> impl Iterator<Item = &ResourceStatus> {
        self.resources
            .iter()
            .filter(|r| r.outcome == ResourceOutcome::Created)
    }

    /// The resources that were already there.
    pub fn existing(&self) -> impl Iterator<Item = &ResourceStatus> {
        self.resources
            .iter()
            .filter(|r| r.outcome == ResourceOutcome::AlreadyExisted)
    }
}

/// Connects (see [`Connection::connect`]) and creates the four topics and a subscription on
/// each, with a 60 s ack deadline. Running it again is fine: what exists is left alone.
pub async fn ensure_topology(
    gcp: &GcpArgs,
    args: &PubSubArgs,
) -> Result<TopologyReport, PubSubError> {
    let topology = args.topology();
    topology.validate()?;
    let conn = Connection::connect(gcp, args).await?;
    Admin::new(&conn).await?.ensure_topology(&topology).await
}

/// Admin clients for topics and subscriptions on one connection.
#[derive(Clone, Debug)]
pub struct Admin {
    conn: Connection,
    topics: TopicAdmin,
    subscriptions: SubscriptionAdmin,
}

impl Admin {
    /// Builds the admin clients (no call is made yet).
    pub async fn new(conn: &Connection) -> Result<Self, PubSubError> {
        Ok(Self {
            conn: conn.clone(),
            topics: conn.topic_admin().await?,
            subscriptions: conn.subscription_admin().await?,
        })
    }

    /// The connection the clients use.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Creates every topic, then every subscription, of `topology`.
    pub async fn ensure_topology(
        &self,
        topology: &Topology,
    ) -> Result<TopologyReport, PubSubError> {
        topology.validate()?;
        let mut report = TopologyReport::default();
        for topic in topology.topics() {
            let outcome = self.ensure_topic(topic).await?;
            report.resources.push(ResourceStatus {
                kind: ResourceKind::Topic,
                name: self.conn.topic_path(topic),
                outcome,
            });
        }
        for (subscription, topic) in topology.subscriptions() {
            let outcome = self
                .ensure_subscription(subscription, topic, ACK_DEADLINE)
                .await?;
            report.resources.push(ResourceStatus {
                kind: ResourceKind::Subscription,
                name: self.conn.subscription_path(subscription),
                outcome,
            });
        }
        Ok(report)
    }

    /// Creates topic `topic` (an id, not a path) unless it exists.
    pub async fn ensure_topic(&self, topic: &str) -> Result<ResourceOutcome, PubSubError> {
        validate_id("topic", topic)?;
        let name = self.conn.topic_path(topic);
        let operation = format!("creating topic {name}");
        let result = self
            .conn
            .send(
                &operation,
                self.topics.create_topic().set_name(&name).send(),
            )
            .await?;
        match result {
            Ok(_) => {
                tracing::info!(topic = %name, "created topic");
                Ok(ResourceOutcome::Created)
            }
            Err(e) => match code_of(&e) {
                Some(Code::AlreadyExists) => Ok(ResourceOutcome::AlreadyExisted),
                // Creating a topic needs nothing but the project: NOT_FOUND means the project.
                Some(Code::NotFound) => Err(PubSubError::ProjectNotFound {
                    operation,
                    project: self.conn.project_id().to_string(),
                    cause: e,
                }),
                _ => Err(self.conn.context().classify(operation, e)),
            },
        }
    }

    /// Creates subscription `subscription` on `topic` (ids) unless it exists; an existing one
    /// attached to another topic is an error. `ack_deadline` is clamped to Pub/Sub's 10-600 s.
    pub async fn ensure_subscription(
        &self,
        subscription: &str,
        topic: &str,
        ack_deadline: Duration,
    ) -> Result<ResourceOutcome, PubSubError> {
        validate_id("subscription", subscription)?;
        validate_id("topic", topic)?;
        let name = self.conn.subscription_path(subscription);
        let topic_name = self.conn.topic_path(topic);
        let operation = format!("creating subscription {name} on {topic_name}");
        let deadline = ack_deadline.as_secs().clamp(10, 600) as i32;
        let create = self
            .subscriptions
            .create_subscription()
            .set_name(&name)
            .set_topic(&topic_name)
            .set_ack_deadline_seconds(deadline)
            .send();
        match self.conn.send(&operation, create).await? {
            Ok(_) => {
                tracing::info!(subscription = %name, topic = %topic_name, "created subscription");
                Ok(ResourceOutcome::Created)
            }
            Err(e) => match code_of(&e) {
                Some(Code::AlreadyExists) => {
                    let existing = self
                        .conn
                        .call(
                            format!("reading subscription {name}"),
                            self.subscriptions
                                .get_subscription()
                                .set_subscription(&name)
                                .send(),
                        )
                        .await?;
                    if existing.topic != topic_name {
                        return Err(PubSubError::SubscriptionConflict {
                            subscription: name,
                            found_topic: existing.topic,
                            expected_topic: topic_name,
                        });
                    }
                    Ok(ResourceOutcome::AlreadyExisted)
                }
                Some(Code::NotFound) => Err(PubSubError::NotFound {
                    kind: "topic",
                    name: topic_name,
                }),
                _ => Err(self.conn.context().classify(operation, e)),
            },
        }
    }

    /// Fails with [`PubSubError::NotFound`] unless topic `topic` (an id) exists.
    pub async fn check_topic(&self, topic: &str) -> Result<(), PubSubError> {
        let name = self.conn.topic_path(topic);
        let fut = self.topics.get_topic().set_topic(&name).send();
        self.not_found_as("topic", &name, fut).await
    }

    /// Fails with [`PubSubError::NotFound`] unless subscription `subscription` (an id) exists.
    pub async fn check_subscription(&self, subscription: &str) -> Result<(), PubSubError> {
        let name = self.conn.subscription_path(subscription);
        let fut = self
            .subscriptions
            .get_subscription()
            .set_subscription(&name)
            .send();
        self.not_found_as("subscription", &name, fut).await
    }

    /// Deletes topic `topic` (an id); a missing topic is fine.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), PubSubError> {
        let name = self.conn.topic_path(topic);
        let fut = self.topics.delete_topic().set_topic(&name).send();
        ignore_not_found(self.conn.call(format!("deleting topic {name}"), fut).await)
    }

    /// Deletes subscription `subscription` (an id); a missing subscription is fine.
    pub async fn delete_subscription(&self, subscription: &str) -> Result<(), PubSubError> {
        let name = self.conn.subscription_path(subscription);
        let fut = self
            .subscriptions
            .delete_subscription()
            .set_subscription(&name)
            .send();
        ignore_not_found(
            self.conn
                .call(format!("deleting subscription {name}"), fut)
                .await,
        )
    }

    async fn not_found_as<T>(
        &self,
        kind: &'static str,
        name: &str,
        fut: impl std::future::Future<Output = Result<T, crate::error::ClientError>>,
    ) -> Result<(), PubSubError> {
        match self.conn.call(format!("reading {kind} {name}"), fut).await {
            Ok(_) => Ok(()),
            Err(PubSubError::Rpc { cause, .. }) if code_of(&cause) == Some(Code::NotFound) => {
                Err(PubSubError::NotFound {
                    kind,
                    name: name.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }
}

fn ignore_not_found<T>(result: Result<T, PubSubError>) -> Result<(), PubSubError> {
    match result {
        Ok(_) => Ok(()),
        Err(PubSubError::Rpc { cause, .. }) if code_of(&cause) == Some(Code::NotFound) => Ok(()),
        Err(e) => Err(e),
    }
}
