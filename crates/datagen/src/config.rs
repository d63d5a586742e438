//! The generator's knobs. Every flag also reads an environment variable.

use clap::{Args, ValueEnum};
use firstclick_model::EventTime;

/// How `datetime_occured` is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TimestampFormat {
    /// The original producers' `YYYY-MM-DD HH:MM:SS.mmm` (UTC, no offset).
    #[default]
    Producer,
    /// RFC 3339 with `Z`.
    Rfc3339,
}

fn parse_start(s: &str) -> Result<EventTime, String> {
    if s == "now" {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| format!("the system clock is before 1970: {e}"))?
            .as_micros();
        // Whole milliseconds, as the producers' timestamp form carries.
        return Ok(EventTime::from_micros((micros / 1000 * 1000) as i64));
    }
    EventTime::parse(s).map_err(|e| format!("{e} (or `now`)"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    parse_fraction_like(s, 0.0, f64::INFINITY, "a rate above 0").and_then(|r| {
        if r > 0.0 {
            Ok(r)
        } else {
            Err(format!("expected a rate above 0, found {s}"))
        }
    })
}

fn parse_probability(s: &str) -> Result<f64, String> {
    parse_fraction_like(s, 0.0, 1.0, "a probability between 0 and 1")
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    parse_fraction_like(s, 0.0, 86_400.0 * 365.0, "a number of seconds of 0 or more")
}

fn parse_fraction_like(s: &str, lo: f64, hi: f64, what: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= lo && v <= hi => Ok(v),
        _ => Err(format!("expected {what}, found {s:?}")),
    }
}

/// What to generate.
#[derive(Args, Clone, Debug)]
pub struct GeneratorConfig {
    /// Seed of the random generator: the same seed and flags give the same events, byte for byte.
    #[arg(long, env = "DATAGEN_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Number of users (ids 1..=N, the ids clicks and checkouts use).
    #[arg(long, env = "DATAGEN_USERS", default_value_t = 100)]
    pub users: u32,

    /// Number of clicks to generate; unbounded when not given (streams until stopped).
    #[arg(long, env = "DATAGEN_CLICKS")]
    pub clicks: Option<u64>,

    /// Event time of the first event: RFC 3339, or `now` for live data (then set --event-rate
    /// to the clicks per second actually published, so event time keeps pace with the clock).
    #[arg(long, env = "DATAGEN_START", default_value = "2026-01-01T00:00:00Z", value_parser = parse_start)]
    pub start: EventTime,

    /// Event-time speed: clicks per second of event time.
    #[arg(long = "event-rate", env = "DATAGEN_EVENT_RATE", default_value = "100", value_parser = parse_rate)]
    pub event_rate: f64,

    /// Probability of one more click and a checkout after each click of a product (repeated).
    #[arg(long, env = "DATAGEN_REPEAT_PROBABILITY", default_value = "0.5", value_parser = parse_probability)]
    pub repeat_probability: f64,

    /// Largest delay, in seconds of event time, between an event and its arrival; arrival order
    /// is event order disturbed by at most this much (each output keeps its own order).
    #[arg(long = "disorder-secs", env = "DATAGEN_DISORDER_SECS", default_value = "0", value_parser = parse_seconds)]
    pub disorder_secs: f64,

    /// Probability that an event is sent twice (a redelivered message).
    #[arg(long = "duplicate-rate", env = "DATAGEN_DUPLICATE_RATE", default_value = "0", value_parser = parse_probability)]
    pub duplicate_rate: f64,

    /// Probability that a product's story is a click followed by a checkout only after the
    /// lookback has passed (the click must not be attributed).
    #[arg(long = "stale-click-rate", env = "DATAGEN_STALE_CLICK_RATE", default_value = "0", value_parser = parse_probability)]
    pub stale_click_rate: f64,

    /// Probability of an extra checkout with no click at all (organic) per product story.
    #[arg(long = "organic-rate", env = "DATAGEN_ORGANIC_RATE", default_value = "0", value_parser = parse_probability)]
    pub organic_rate: f64,

    /// Probability that a story belongs to a user id that is not in the users set.
    #[arg(long = "unknown-user-rate", env = "DATAGEN_UNKNOWN_USER_RATE", default_value = "0", value_parser = parse_probability)]
    pub unknown_user_rate: f64,

    /// Probability of a malformed message after each event (not JSON, missing or wrong fields,
    /// bad timestamps).
    #[arg(long = "malformed-rate", env = "DATAGEN_MALFORMED_RATE", default_value = "0", value_parser = parse_probability)]
    pub malformed_rate: f64,

    /// How long, in seconds, a stale story waits between its click and its checkout, at least:
    /// set it to the pipeline's lookback so those clicks fall outside the window.
    #[arg(
        long = "stale-after-secs",
        env = "DATAGEN_STALE_AFTER_SECS",
        default_value_t = 3600
    )]
    pub stale_after_secs: u64,

    /// How `datetime_occured` is written.
    #[arg(long = "timestamp-format", env = "DATAGEN_TIMESTAMP_FORMAT", value_enum, default_value_t = TimestampFormat::Producer)]
    pub timestamp_format: TimestampFormat,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            users: 100,
            clicks: Some(1000),
            start: EventTime::from_micros(1_767_225_600_000_000),
            event_rate: 100.0,
            repeat_probability: 0.5,
            disorder_secs: 0.0,
            duplicate_rate: 0.0,
            stale_click_rate: 0.0,
            organic_rate: 0.0,
            unknown_user_rate: 0.0,
            malformed_rate: 0.0,
            stale_after_secs: 3600,
            timestamp_format: TimestampFormat::Producer,
        }
    }
}
