//! Command-line flags of the Pub/Sub connector ([`PubSubArgs`]), the resolved names of the
//! topics and subscriptions ([`Topology`]), and Pub/Sub's naming rules.
//!
//! The project and the credentials are not here: they come from [`firstclick_cli::GcpArgs`],
//! which the BigQuery connector shares.

use clap::Args;

use crate::error::PubSubError;

/// Pub/Sub flags; flatten into a binary's `clap` parser next to `GcpArgs`.
#[derive(Args, Clone, Debug)]
pub struct PubSubArgs {
    /// Pub/Sub emulator address as HOST:PORT. When set, the emulator is used over plaintext
    /// with anonymous credentials; when unset, Google Cloud.
    #[arg(
        id = "pubsub_emulator_host",
        long = "pubsub-emulator-host",
        env = "PUBSUB_EMULATOR_HOST",
        value_name = "HOST:PORT"
    )]
    pub emulator_host: Option<String>,

    /// Topic the clicks are published to.
    #[arg(long = "click-topic", env = "CLICK_TOPIC", default_value = "clicks")]
    pub click_topic: String,

    /// Topic the checkouts are published to.
    #[arg(
        long = "checkout-topic",
        env = "CHECKOUT_TOPIC",
        default_value = "checkouts"
    )]
    pub checkout_topic: String,

    /// Subscription the pipeline reads clicks from [default: the click topic's name].
    #[arg(long = "click-subscription", env = "CLICK_SUBSCRIPTION")]
    pub click_subscription: Option<String>,

    /// Subscription the pipeline reads checkouts from [default: the checkout topic's name].
    #[arg(long = "checkout-subscription", env = "CHECKOUT_SUBSCRIPTION")]
    pub checkout_subscription: Option<String>,

    /// Topic bad messages are published to (attribute `reason` says why). Its subscription has
    /// the same name.
    #[arg(
        long = "dead-letter-topic",
        env = "DEAD_LETTER_TOPIC",
        default_value = "firstclick-dead-letter"
    )]
    pub dead_letter_topic: String,

    /// Topic late clicks are published to. Its subscription has the same name.
    #[arg(
        long = "late-topic",
        env = "LATE_TOPIC",
        default_value = "firstclick-late-clicks"
    )]
    pub late_topic: String,

    /// Concurrent streaming pulls per subscription (the emulator serves ~2,000 msg/s per
    /// stream).
    #[arg(long = "pubsub-streams", env = "PUBSUB_STREAMS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub streams: u16,

    /// Flow control: messages received but not yet acked or nacked, per subscription, across
    /// its streams.
    #[arg(
        long = "pubsub-max-outstanding-messages",
        env = "PUBSUB_MAX_OUTSTANDING_MESSAGES",
        default_value_t = 4000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_outstanding_messages: u32,

    /// Seconds each lease extension pushes a received message's deadline (10-600). A crashed
    /// consumer's unacknowledged messages come back after at most this long.
    #[arg(
        long = "pubsub-ack-deadline-secs",
        env = "PUBSUB_ACK_DEADLINE_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u16).range(10..=600)
    )]
    pub ack_deadline_secs: u16,

    /// Partitions (P) of a scaled-out deployment, fixed at set-up: with P > 1, `create-pubsub`
    /// makes a clicks and a checkouts topic (and subscription) per partition, `TOPIC-pN`, and
    /// the service routes each message there by its user (docs/design.md §7). Every worker
    /// must use the P that set-up used.
    #[arg(
        long = "partitions",
        env = "PARTITIONS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub partitions: u32,
}

impl Default for PubSubArgs {
    fn default() -> Self {
        Self {
            emulator_host: None,
            click_topic: "clicks".into(),
            checkout_topic: "checkouts".into(),
            click_subscription: None,
            checkout_subscription: None,
            dead_letter_topic: "firstclick-dead-letter".into(),
            late_topic: "firstclick-late-clicks".into(),
            streams: 4,
            max_outstanding_messages: 4000,
            ack_deadline_secs: 60,
            partitions: 1,
        }
    }
}

impl PubSubArgs {
    /// The topic and subscription ids these flags name, defaults applied, not yet validated.
    pub fn topology(&self) -> Topology {
        Topology {
            click_topic: self.click_topic.clone(),
            checkout_topic: self.checkout_topic.clone(),
            click_subscription: self
                .click_subscription
                .clone()
                .unwrap_or_else(|| self.click_topic.clone()),
            checkout_subscription: self
                .checkout_subscription
                .clone()
                .unwrap_or_else(|| self.checkout_topic.clone()),
            dead_letter_topic: self.dead_letter_topic.clone(),
            late_topic: self.late_topic.clone(),
            partitions: self.partitions.max(1),
        }
    }
}

/// The ids (not full resource names) of everything the pipeline uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Clicks topic.
    pub click_topic: String,
    /// Checkouts topic.
    pub checkout_topic: String,
    /// Subscription on the clicks topic.
    pub click_subscription: String,
    /// Subscription on the checkouts topic.
    pub checkout_subscription: String,
    /// Dead-letter topic; its subscription has the same id.
    pub dead_letter_topic: String,
    /// Late-clicks topic; its subscription has the same id.
    pub late_topic: String,
    /// Partitions (P); with more than one, each has its own clicks and checkouts topics
    /// ([`Topology::partition`]).
    pub partitions: u32,
}

impl Topology {
    /// The topology of partition `p` (P > 1): the clicks and checkouts topics and
    /// subscriptions suffixed `-pN`; the dead-letter and late topics are shared.
    pub fn partition(&self, p: u32) -> Topology {
        let suffix = |name: &str| format!("{name}-p{p}");
        Topology {
            click_topic: suffix(&self.click_topic),
            checkout_topic: suffix(&self.checkout_topic),
            click_subscription: suffix(&self.click_subscription),
            checkout_subscription: suffix(&self.checkout_subscription),
            dead_letter_topic: self.dead_letter_topic.clone(),
            late_topic: self.late_topic.clone(),
            partitions: 1,
        }
    }

    /// Every partition's topology; empty when there is one partition (it reads the original
    /// subscriptions).
    pub fn partition_topologies(&self) -> Vec<Topology> {
        if self.partitions <= 1 {
            return Vec::new();
        }
        (0..self.partitions).map(|p| self.partition(p)).collect()
    }

    /// The four topics, in creation order.
    pub fn topics(&self) -> [&str; 4] {
        [
            &self.click_topic,
            &self.checkout_topic,
            &self.dead_letter_topic,
            &self.late_topic,
        ]
    }

    /// `(subscription, topic)` pairs, one per topic.
    pub fn subscriptions(&self) -> [(&str, &str); 4] {
        [
            (&self.click_subscription, &self.click_topic),
            (&self.checkout_subscription, &self.checkout_topic),
            (&self.dead_letter_topic, &self.dead_letter_topic),
            (&self.late_topic, &self.late_topic),
        ]
    }

    /// Checks every id against Pub/Sub's naming rules.
    pub fn validate(&self) -> Result<(), PubSubError> {
        for topic in self.topics() {
            validate_id("topic", topic)?;
        }
        for (subscription, _) in self.subscriptions() {
            validate_id("subscription", subscription)?;
        }
        for part in self.partition_topologies() {
            part.validate()?;
        }
        Ok(())
    }
}

/// Checks a topic or subscription id (`kind` is `"topic"` or `"subscription"`) against Pub/Sub's
/// rules, so a bad flag fails here with a clear message rather than at the server.
pub(crate) fn validate_id(kind: &'static str, name: &str) -> Result<(), PubSubError> {
    let fail = |reason| {
        Err(PubSubError::InvalidName {
            kind,
            name: name.to_string(),
            reason,
        })
    };
    if name.len() < 3 {
        return fail("shorter than 3 characters");
    }
    if name.len() > 255 {
        return fail("longer than 255 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return fail("does not start with a letter");
    }
    if name.to_ascii_lowercase().starts_with("goog") {
        return fail("starts with \"goog\"");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.~+%".contains(c))
    {
        return fail("contains a character other than letters, digits and - _ . ~ + %");
    }
    Ok(())
}

/// Checks that a project id can be used in resource names.
pub(crate) fn validate_project(project: &str) -> Result<(), PubSubError> {
    let fail = |reason| {
        Err(PubSubError::InvalidProject {
            project: project.to_string(),
            reason,
        })
    };
    if project.is_empty() {
        return fail("it is empty");
    }
    if !project
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return fail("it contains a character other than letters, digits and - _ . :");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        pubsub: PubSubArgs,
    }

    #[test]
    fn subscriptions_default_to_topic_names() {
        let cli = Cli::parse_from(["x", "--click-topic", "cl1", "--checkout-topic", "ck1"]);
        let t = cli.pubsub.topology();
        assert_eq!(t.click_subscription, "cl1");
        assert_eq!(t.checkout_subscription, "ck1");
        assert_eq!(t.dead_letter_topic, "firstclick-dead-letter");
        assert_eq!(t.late_topic, "firstclick-late-clicks");
        assert_eq!(cli.pubsub.streams, 4);
        t.validate().unwrap();
    }

    #[test]
    fn explicit_subscriptions_win() {
        let cli = Cli::parse_from(["x", "--click-subscription", "mine"]);
        let t = cli.pubsub.topology();
        assert_eq!(t.click_subscription, "mine");
        assert_eq!(t.click_topic, "clicks");
    }

    #[test]
    fn default_matches_clap_defaults() {
        let cli = Cli::parse_from(["x"]);
        let d = PubSubArgs::default();
        assert_eq!(cli.pubsub.topology(), d.topology());
        assert_eq!(cli.pubsub.streams, d.streams);
        assert_eq!(
            cli.pubsub.max_outstanding_messages,
            d.max_outstanding_messages
        );
    }

    #[test]
    fn bad_ids_are_rejected_with_the_reason() {
        for (name, reason) in [
            ("ab", "shorter than 3"),
            ("1abc", "start with a letter"),
            ("google-x", "goog"),
            ("a b c", "contains a character"),
        ] {
            let err = validate_id("topic", name).unwrap_err().to_string();
            assert!(err.contains(reason), "{name}: {err}");
            assert!(err.contains(name), "{name}: {err}");
        }
        validate_id("topic", "a-b_c.d~e+f%g").unwrap();
        assert!(validate_project("").is_err());
        assert!(validate_project("a/b").is_err());
        validate_project("my-project-123").unwrap();
    }
}
