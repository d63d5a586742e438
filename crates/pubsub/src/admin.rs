//! Creating the pipeline's topics and subscriptions, idempotently: [`ensure_topology`] for the
//! whole set, [`Admin`] for single topics and subscriptions (tests use it for fresh names), and
//! reading a subscription's settings ([`Admin::subscription`], [`SubscriptionInfo`]) for the
//! service's checks.

use std::fmt;
use std::time::Duration;

use firstclick_cli::GcpArgs;
use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};

use crate::args::{validate_id, PubSubArgs, Topology};
use crate::connection::Connection;
use crate::error::{code_of, PubSubError};

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
/// each, with the ack deadline of `--pubsub-ack-deadline-secs` (default 60 s, what the service
/// expects). Running it again is fine: what exists is left alone.
pub async fn ensure_topology(
    gcp: &GcpArgs,
    args: &PubSubArgs,
) -> Result<TopologyReport, PubSubError> {
    let topology = args.topology();
    topology.validate()?;
    let conn = Connection::connect(gcp, args).await?;
    let ack_deadline = Duration::from_secs(u64::from(args.ack_deadline_secs));
    Admin::new(&conn)
        .await?
        .ensure_topology(&topology, ack_deadline)
        .await
}

/// What [`Admin::subscription`] reads of a subscription: the settings the service depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Full resource name (`projects/.../subscriptions/...`).
    pub name: String,
    /// Full name of the topic it is attached to (`_deleted-topic_` once that was deleted).
    pub topic: String,
    /// Its ack deadline, seconds.
    pub ack_deadline_secs: i32,
    /// Its dead-letter policy's topic and maximum delivery attempts, when it has one.
    pub dead_letter: Option<(String, i32)>,
    /// Its filter (empty: every message).
    pub filter: String,
    /// The push endpoint, when it is a push subscription (it cannot be pulled then).
    pub push_endpoint: Option<String>,
    /// Detached from its topic: it receives nothing.
    pub detached: bool,
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

    /// Creates every topic, then every subscription, of `topology`; new subscriptions get
    /// `ack_deadline`.
    pub async fn ensure_topology(
        &self,
        topology: &Topology,
        ack_deadline: Duration,
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
                .ensure_subscription(subscription, topic, ack_deadline)
                .await?;
            report.resources.push(ResourceStatus {
                kind: ResourceKind::Subscription,
                name: self.conn.subscription_path(subscription),
                outcome,
            });
        }
        // Scaled out: each partition's clicks and checkouts topics and subscriptions.
        for part in topology.partition_topologies() {
            for topic in [&part.click_topic, &part.checkout_topic] {
                let outcome = self.ensure_topic(topic).await?;
                report.resources.push(ResourceStatus {
                    kind: ResourceKind::Topic,
                    name: self.conn.topic_path(topic),
                    outcome,
                });
            }
            for (subscription, topic) in [
                (&part.click_subscription, &part.click_topic),
                (&part.checkout_subscription, &part.checkout_topic),
            ] {
                let outcome = self
                    .ensure_subscription(subscription, topic, ack_deadline)
                    .await?;
                report.resources.push(ResourceStatus {
                    kind: ResourceKind::Subscription,
                    name: self.conn.subscription_path(subscription),
                    outcome,
                });
            }
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
        self.not_found_as("topic", &name, fut).await.map(drop)
    }

    /// Fails with [`PubSubError::NotFound`] unless subscription `subscription` (an id) exists.
    pub async fn check_subscription(&self, subscription: &str) -> Result<(), PubSubError> {
        self.subscription(subscription).await.map(drop)
    }

    /// Reads subscription `subscription` (an id): its topic, ack deadline, dead-letter policy,
    /// filter and delivery type. Fails with [`PubSubError::NotFound`] when it does not exist.
    pub async fn subscription(&self, subscription: &str) -> Result<SubscriptionInfo, PubSubError> {
        let name = self.conn.subscription_path(subscription);
        let fut = self
            .subscriptions
            .get_subscription()
            .set_subscription(&name)
            .send();
        let s = self.not_found_as("subscription", &name, fut).await?;
        Ok(SubscriptionInfo {
            name: s.name,
            topic: s.topic,
            ack_deadline_secs: s.ack_deadline_seconds,
            dead_letter: s
                .dead_letter_policy
                .filter(|p| !p.dead_letter_topic.is_empty())
                .map(|p| (p.dead_letter_topic, p.max_delivery_attempts)),
            filter: s.filter,
            push_endpoint: s
                .push_config
                .map(|p| p.push_endpoint)
                .filter(|e| !e.is_empty()),
            detached: s.detached,
        })
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
    ) -> Result<T, PubSubError> {
        match self.conn.call(format!("reading {kind} {name}"), fut).await {
            Ok(v) => Ok(v),
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
