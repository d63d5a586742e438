//! A checkout's details: the five optional texts that the row copies and nothing else reads
//! (payment method, shipping and billing address, user agent, IP address), in one allocation.
//!
//! Why one: a checkout waits for the watermark for seconds of event time, so by the time its
//! row is written its texts have left the caches. Five separate heap strings were five cache
//! misses per row (and five allocations on the parser's thread, five frees on another); one
//! buffer is one miss that the hardware prefetcher follows, and one allocation.

use std::fmt;

/// The details' texts, borrowed: how details are built ([`CheckoutDetails::from`]) and read
/// all at once ([`CheckoutDetails::texts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetailTexts<'a> {
    /// `payment_method`.
    pub payment_method: Option<&'a str>,
    /// `shipping_address`.
    pub shipping_address: Option<&'a str>,
    /// `billing_address`.
    pub billing_address: Option<&'a str>,
    /// `user_agent`.
    pub user_agent: Option<&'a str>,
    /// `ip_address`.
    pub ip_address: Option<&'a str>,
}

impl<'a> DetailTexts<'a> {
    fn as_array(&self) -> [Option<&'a str>; FIELDS] {
        [
            self.payment_method,
            self.shipping_address,
            self.billing_address,
            self.user_agent,
            self.ip_address,
        ]
    }
}

const FIELDS: usize = 5;

/// The five texts, concatenated; `ends[i]` is where field `i` ends (it starts where the one
/// before ends) and bit `i` of `present` says whether it is there at all (absent or null is
/// not the same as empty). `plain` says that no text needs escaping in JSON (no quote,
/// backslash or control character), so a row writes them as they are.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CheckoutDetails {
    text: Box<str>,
    ends: [u32; FIELDS],
    present: u8,
    plain: bool,
}

impl Default for CheckoutDetails {
    fn default() -> Self {
        CheckoutDetails {
            text: Box::default(),
            ends: [0; FIELDS],
            present: 0,
            plain: true,
        }
    }
}

impl From<DetailTexts<'_>> for CheckoutDetails {
    fn from(texts: DetailTexts<'_>) -> Self {
        CheckoutDetails::new(texts, false)
    }
}

impl CheckoutDetails {
    /// The details of `texts`; `known_plain` when the caller knows that none needs escaping
    /// in JSON (the scanner does for texts it read without escapes), else they are checked.
    ///
    /// Why here: the check runs once, while the texts are in the caches, instead of at the
    /// row's writing, seconds later, when they are not.
    pub(crate) fn new(texts: DetailTexts<'_>, known_plain: bool) -> Self {
        let fields = texts.as_array();
        let len = fields.iter().flatten().map(|t| t.len()).sum();
        let mut text = String::with_capacity(len);
        let mut ends = [0u32; FIELDS];
        let mut present = 0u8;
        for (i, field) in fields.iter().enumerate() {
            if let Some(t) = field {
                text.push_str(t);
                present |= 1 << i;
            }
            // A message is at most a few MiB: its texts fit in u32 offsets.
            ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        let plain = known_plain || crate::row::is_plain_json_text(&text);
        CheckoutDetails {
            text: text.into_boxed_str(),
            ends,
            present,
            plain,
        }
    }

    /// Whether no text needs escaping in JSON: a row may write them between quotes as they
    /// are.
    pub fn is_json_plain(&self) -> bool {
        self.plain
    }

    fn field(&self, i: usize) -> Option<&str> {
        if self.present & (1 << i) == 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..self.ends[i] as usize)
    }

    /// All five texts.
    pub fn texts(&self) -> DetailTexts<'_> {
        DetailTexts {
            payment_method: self.field(0),
            shipping_address: self.field(1),
            billing_address: self.field(2),
            user_agent: self.field(3),
            ip_address: self.field(4),
        }
    }

    /// `payment_method`.
    pub fn payment_method(&self) -> Option<&str> {
        self.field(0)
    }

    /// `shipping_address`.
    pub fn shipping_address(&self) -> Option<&str> {
        self.field(1)
    }

    /// `billing_address`.
    pub fn billing_address(&self) -> Option<&str> {
        self.field(2)
    }

    /// `user_agent`.
    pub fn user_agent(&self) -> Option<&str> {
        self.field(3)
    }

    /// `ip_address`.
    pub fn ip_address(&self) -> Option<&str> {
        self.field(4)
    }
}

impl fmt::Debug for CheckoutDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.texts().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn texts(v: &[Option<String>]) -> DetailTexts<'_> {
        DetailTexts {
            payment_method: v[0].as_deref(),
            shipping_address: v[1].as_deref(),
            billing_address: v[2].as_deref(),
            user_agent: v[3].as_deref(),
            ip_address: v[4].as_deref(),
        }
    }

    proptest! {
        /// Every field reads back as given: absent stays absent, empty stays empty, and
        /// neighbours do not bleed into each other.
        #[test]
        fn fields_read_back_as_given(
            v in proptest::collection::vec(proptest::option::of("[a-z\u{e9} ]{0,6}"), 5),
        ) {
            let d = CheckoutDetails::from(texts(&v));
            prop_assert_eq!(d.texts(), texts(&v));
            prop_assert_eq!(d.ip_address(), v[4].as_deref());
            prop_assert_eq!(d.clone(), d);
        }

        /// The plain mark says exactly whether some text has a quote, a backslash or a
        /// control character.
        #[test]
        fn plain_mark_matches_the_texts(
            v in proptest::collection::vec(proptest::option::of("[a-z\"\\\u{1}\u{e9} ]{0,6}"), 5),
        ) {
            let d = CheckoutDetails::from(texts(&v));
            let needs_escape = v.iter().flatten().any(|t| {
                t.chars().any(|c| c == '"' || c == '\\' || c < ' ')
            });
            prop_assert_eq!(d.is_json_plain(), !needs_escape);
        }
    }

    #[test]
    fn absent_and_empty_differ() {
        let empty = CheckoutDetails::from(DetailTexts {
            user_agent: Some(""),
            ..DetailTexts::default()
        });
        assert_eq!(empty.user_agent(), Some(""));
        assert_eq!(empty.payment_method(), None);
        assert_ne!(empty, CheckoutDetails::default());
    }
}
