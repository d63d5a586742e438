//! The counters of a run, printed at its end.

use std::fmt;
use std::time::Duration;

/// What a replay (or the embedded demo) did.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Lines read (valid or not, blank lines excluded).
    pub events_read: u64,
    /// Valid clicks.
    pub clicks: u64,
    /// Valid checkouts (duplicates included).
    pub checkouts: u64,
    /// Rows written (one per distinct checkout id and model).
    pub rows: u64,
    /// Touch rows of multi-touch models (one per credited click and model).
    pub touches: u64,
    /// Rows with a click.
    pub attributed: u64,
    /// Rows without a click.
    pub unattributed: u64,
    /// Clicks that arrived after the watermark passed them.
    pub late_clicks: u64,
    /// Checkouts that arrived behind the retained state.
    pub late_checkouts: u64,
    /// Lines refused.
    pub bad: u64,
    /// Duplicate clicks ignored.
    pub duplicate_clicks: u64,
    /// Duplicate checkouts ignored.
    pub duplicate_checkouts: u64,
    /// Rows whose user is not known.
    pub unknown_users: u64,
    /// Largest number of clicks held in state at once (sampled at each eviction).
    pub peak_live_clicks: u64,
    /// Wall time.
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Summary {
    /// Events (lines) per second of wall time.
    pub fn events_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.events_read as f64 / s
        } else {
            0.0
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "firstclick summary")?;
        writeln!(f, "  events read       {:>12}", self.events_read)?;
        writeln!(f, "  clicks            {:>12}", self.clicks)?;
        writeln!(f, "  checkouts         {:>12}", self.checkouts)?;
        writeln!(f, "  rows written      {:>12}", self.rows)?;
        if self.touches > 0 {
            writeln!(f, "  touch rows        {:>12}", self.touches)?;
        }
        writeln!(f, "    attributed      {:>12}", self.attributed)?;
        writeln!(f, "    unattributed    {:>12}", self.unattributed)?;
        writeln!(f, "  late clicks       {:>12}", self.late_clicks)?;
        writeln!(f, "  late checkouts    {:>12}", self.late_checkouts)?;
        writeln!(f, "  bad lines         {:>12}", self.bad)?;
        writeln!(
            f,
            "  duplicates        {:>12}  ({} clicks, {} checkouts)",
            self.duplicate_clicks + self.duplicate_checkouts,
            self.duplicate_clicks,
            self.duplicate_checkouts
        )?;
        writeln!(f, "  unknown users     {:>12}", self.unknown_users)?;
        writeln!(f, "  peak live clicks  {:>12}", self.peak_live_clicks)?;
        writeln!(
            f,
            "  elapsed           {:>12.3} s",
            self.elapsed.as_secs_f64()
        )?;
        write!(
            f,
            "  throughput        {:>12.0} events/s",
            self.events_per_second()
        )
    }
}
