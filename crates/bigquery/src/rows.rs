//! [`TableRow`]: what the writers need of a row of one of our two tables, so that insertAll
//! ([`crate::BigQuery::insert_rows`], [`crate::BigQuery::insert_touches`]) and the
//! exactly-once path ([`crate::EpochWriter`]) serve the output table ([`AttributedRow`]) and
//! the touches table ([`TouchRow`]) with one implementation each: same batching, limits,
//! retries and split of errors.
//!
//! A row gives its insertAll JSON and its protobuf encoding for the Storage Write API; the
//! writer schema of the protobuf comes from the table's columns ([`TableRow::COLUMNS`]), field
//! numbers being the columns' positions plus one.

use firstclick_model::schema::{Column, OUTPUT_COLUMNS, TOUCH_COLUMNS};
use firstclick_model::{AttributedRow, AttributionModel, TouchRow};
use prost::Message;

use crate::storage_write::{ProtoRow, ProtoTouch};

/// A row of one of firstclick's tables. Implemented for [`AttributedRow`] (the output table)
/// and [`TouchRow`] (the touches table).
pub trait TableRow: Clone + std::fmt::Debug + Send + Sync + 'static {
    /// The table's columns, in order (`firstclick_model::schema`).
    const COLUMNS: &'static [Column];

    /// The checkout the row belongs to (for logs and refusals).
    fn checkout_id(&self) -> String;

    /// The insertAll `insertId`: the table's key as text.
    fn insert_id(&self) -> String;

    /// The row's insertAll JSON (keys are the column names).
    fn json_value(&self) -> Result<serde_json::Value, String>;

    /// The row as protobuf bytes for the Storage Write API.
    fn encode_proto(&self) -> Vec<u8>;
}

impl TableRow for AttributedRow {
    const COLUMNS: &'static [Column] = OUTPUT_COLUMNS;

    fn checkout_id(&self) -> String {
        self.checkout.checkout_id.as_text().into_owned()
    }

    /// Its checkout for first click (as before several models existed), the checkout and the
    /// model otherwise (the table's key, `firstclick_model::schema::PRIMARY_KEY`).
    fn insert_id(&self) -> String {
        let id = self.checkout.checkout_id.as_text();
        match self.model {
            AttributionModel::FirstClick => id.into_owned(),
            model => format!("{id}:{}", model.as_str()),
        }
    }

    fn json_value(&self) -> Result<serde_json::Value, String> {
        serde_json::to_value(self).map_err(|e| e.to_string())
    }

    fn encode_proto(&self) -> Vec<u8> {
        ProtoRow::from(self).encode_to_vec()
    }
}

impl TableRow for TouchRow {
    const COLUMNS: &'static [Column] = TOUCH_COLUMNS;

    fn checkout_id(&self) -> String {
        self.checkout_id.as_text().into_owned()
    }

    /// `checkout_id:model:click_id` (`firstclick_model::schema::TOUCH_KEY`).
    fn insert_id(&self) -> String {
        format!(
            "{}:{}:{}",
            self.checkout_id.as_text(),
            self.model.as_str(),
            self.click.click_id.as_text()
        )
    }

    fn json_value(&self) -> Result<serde_json::Value, String> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        serde_json::from_slice(&out).map_err(|e| e.to_string())
    }

    fn encode_proto(&self) -> Vec<u8> {
        ProtoTouch::from(self).encode_to_vec()
    }
}

/// A row already encoded, as a message the client crate's `StorageApi::create_rows` accepts.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Encoded(pub(crate) Vec<u8>);

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: rows only go out.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firstclick_model::{ClickRef, Decimal9, EventTime, Id};

    #[test]
    fn touch_insert_ids_are_the_touch_key() {
        let t = TouchRow {
            checkout_id: Id::new("k1"),
            user_id: 7,
            product_id: Id::new("p"),
            checkout_time: EventTime::from_micros(2_000_000),
            click: ClickRef {
                click_id: Id::new("c1"),
                time: EventTime::from_micros(1_000_000),
            },
            model: AttributionModel::Linear,
            credit: Decimal9(500_000_000),
            credited_revenue: None,
            processed_at: EventTime::from_micros(0),
        };
        assert_eq!(t.insert_id(), "k1:linear:c1");
        let json = t.json_value().expect("JSON");
        assert_eq!(json["credit"], "0.5");
        assert!(json["credited_revenue"].is_null());
        assert_eq!(Encoded(t.encode_proto()).encode_to_vec(), t.encode_proto());
    }
}
