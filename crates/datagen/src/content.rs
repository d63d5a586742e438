//! The fake fields of users, clicks and checkouts, drawn from a seeded random generator.

use fake::faker::address::en::{BuildingNumber, CityName, StreetName, ZipCode};
use fake::faker::internet::en::{IPv4, Password, UserAgent};
use fake::faker::lorem::en::Word;
use fake::faker::name::en::Name;
use fake::Fake;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::config::TimestampFormat;
use firstclick_model::EventTime;

/// A version-4 UUID from the generator's random stream.
pub(crate) fn uuid(rng: &mut ChaCha8Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A person's name.
pub(crate) fn name(rng: &mut ChaCha8Rng) -> String {
    Name().fake_with_rng(rng)
}

/// A password, as the original generator stored one (never copied anywhere by the pipeline).
pub(crate) fn password(rng: &mut ChaCha8Rng) -> String {
    Password(10..16).fake_with_rng(rng)
}

/// A product: its name and price.
pub(crate) fn product(rng: &mut ChaCha8Rng) -> (String, f64) {
    let word: String = Word().fake_with_rng(rng);
    let cents: u32 = rng.random_range(99..50_000);
    (word, f64::from(cents) / 100.0)
}

/// A browser's user agent.
pub(crate) fn user_agent(rng: &mut ChaCha8Rng) -> String {
    UserAgent().fake_with_rng(rng)
}

/// An IPv4 address.
pub(crate) fn ip(rng: &mut ChaCha8Rng) -> String {
    IPv4().fake_with_rng(rng)
}

/// A postal address on one line.
pub(crate) fn address(rng: &mut ChaCha8Rng) -> String {
    let number: String = BuildingNumber().fake_with_rng(rng);
    let street: String = StreetName().fake_with_rng(rng);
    let city: String = CityName().fake_with_rng(rng);
    let zip: String = ZipCode().fake_with_rng(rng);
    format!("{number} {street}, {city} {zip}")
}

/// A payment method.
pub(crate) fn payment_method(rng: &mut ChaCha8Rng) -> &'static str {
    const METHODS: [&str; 5] = [
        "credit_card",
        "debit_card",
        "paypal",
        "gift_card",
        "bank_transfer",
    ];
    METHODS[rng.random_range(0..METHODS.len())]
}

/// `datetime_occured` in the chosen form.
pub(crate) fn timestamp(t: EventTime, format: TimestampFormat) -> String {
    let rfc = t.to_rfc3339();
    match format {
        TimestampFormat::Rfc3339 => rfc,
        TimestampFormat::Producer => {
            // 2026-01-01T00:00:00[.fff[fff]]Z -> 2026-01-01 00:00:00.fff (milliseconds).
            let micros = t.as_micros().rem_euclid(1_000_000);
            format!("{} {}.{:03}", &rfc[0..10], &rfc[11..19], micros / 1000)
        }
    }
}

/// A click message, with the original producer's fields.
#[derive(Serialize)]
pub(crate) struct ClickJson<'a> {
    /// Unique id.
    pub(crate) click_id: &'a str,
    /// The user.
    pub(crate) user_id: i64,
    /// The product.
    pub(crate) product_id: &'a str,
    /// Product name.
    pub(crate) product: &'a str,
    /// Product price.
    pub(crate) price: f64,
    /// Page clicked.
    pub(crate) url: &'a str,
    /// Browser.
    pub(crate) user_agent: &'a str,
    /// Client address.
    pub(crate) ip_address: &'a str,
    /// Event time.
    pub(crate) datetime_occured: &'a str,
}

/// A checkout message, with the original producer's fields.
#[derive(Serialize)]
pub(crate) struct CheckoutJson<'a> {
    /// Unique id.
    pub(crate) checkout_id: &'a str,
    /// The user.
    pub(crate) user_id: i64,
    /// The product.
    pub(crate) product_id: &'a str,
    /// Payment method.
    pub(crate) payment_method: &'a str,
    /// Amount paid.
    pub(crate) total_amount: f64,
    /// Where it goes.
    pub(crate) shipping_address: &'a str,
    /// Who pays.
    pub(crate) billing_address: &'a str,
    /// Browser.
    pub(crate) user_agent: &'a str,
    /// Client address.
    pub(crate) ip_address: &'a str,
    /// Event time.
    pub(crate) datetime_occured: &'a str,
}

/// One malformed message of a random kind, shaped like a message of the stream it goes to.
pub(crate) fn malformed(rng: &mut ChaCha8Rng, click: bool, valid_time: &str) -> String {
    let id_field = if click { "click_id" } else { "checkout_id" };
    match rng.random_range(0..6) {
        0 => "this is not json".to_string(),
        1 => format!("{{\"{id_field}\": \"{}\", \"user_id\": 3", uuid(rng)),
        2 => format!(
            "{{\"{id_field}\": \"{}\", \"product_id\": \"{}\", \"datetime_occured\": \"{valid_time}\"}}",
            uuid(rng),
            uuid(rng)
        ),
        3 => format!(
            "{{\"{id_field}\": \"{}\", \"user_id\": 3, \"product_id\": \"{}\", \"datetime_occured\": \"yesterday\"}}",
            uuid(rng),
            uuid(rng)
        ),
        4 => format!(
            "{{\"{id_field}\": \"{}\", \"user_id\": \"three\", \"product_id\": \"{}\", \"datetime_occured\": \"{valid_time}\"}}",
            uuid(rng),
            uuid(rng)
        ),
        _ => "[1, 2, 3]".to_string(),
    }
}
