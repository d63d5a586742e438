//! [`Pipeline`]: the synchronous driver around the engine.
//!
//! Events go in one at a time; after each, the checkouts the watermark made final are turned into
//! rows (the user's name looked up in memory, `processed_at` stamped) and written to the
//! [`RowSink`]. Late clicks go to an optional late output; an optional [`RowObserver`] sees every
//! row and touch (the HTML report). Used by the file replay and the embedded demo; the streaming
//! service has its own asynchronous shell around the same engine.

use std::time::Instant;

use firstclick_engine::{CheckoutOutcome, ClickOutcome, Engine, EngineConfig, FinalCheckout};
use firstclick_model::{Checkout, Click};

use crate::observer::{NoObserver, RowObserver};
use crate::sink::{FileSinkError, LateClickRecord, NdjsonWriter, RowSink};
use crate::summary::Summary;
use crate::users::UserNames;

/// The synchronous pipeline; see the module documentation.
pub struct Pipeline<S: RowSink, O: RowObserver = NoObserver> {
    engine: Engine,
    users: UserNames,
    sink: S,
    late: Option<NdjsonWriter>,
    touches: Option<NdjsonWriter>,
    finals: Vec<FinalCheckout>,
    summary: Summary,
    started: Instant,
    observer: O,
}

impl<S: RowSink> Pipeline<S> {
    /// A pipeline writing rows to `sink`, naming users from `users`.
    pub fn new(config: EngineConfig, users: UserNames, sink: S) -> Self {
        Pipeline {
            engine: Engine::new(config),
            users,
            sink,
            late: None,
            touches: None,
            finals: Vec::with_capacity(1024),
            summary: Summary::default(),
            started: Instant::now(),
            observer: NoObserver,
        }
    }

    /// Also shows every row and touch to `observer` (pass `&mut report` to read it after
    /// [`Pipeline::finish`]).
    pub fn with_observer<O: RowObserver>(self, observer: O) -> Pipeline<S, O> {
        Pipeline {
            engine: self.engine,
            users: self.users,
            sink: self.sink,
            late: self.late,
            touches: self.touches,
            finals: self.finals,
            summary: self.summary,
            started: self.started,
            observer,
        }
    }
}

impl<S: RowSink, O: RowObserver> Pipeline<S, O> {
    /// Also writes every late click to `late`.
    pub fn with_late_output(mut self, late: NdjsonWriter) -> Self {
        self.late = Some(late);
        self
    }

    /// Also writes the touch rows of multi-touch models to `touches` (dropped without it).
    pub fn with_touches_output(mut self, touches: NdjsonWriter) -> Self {
        self.touches = Some(touches);
        self
    }

    /// The engine, read-only (state size, watermark).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Takes in a click.
    pub fn click(&mut self, click: Click) -> Result<(), FileSinkError> {
        self.summary.events_read += 1;
        let watermark = self.engine.watermark();
        let maybe_late = self.late.is_some() && watermark.is_some_and(|w| click.time < w);
        let copy = maybe_late.then(|| click.clone());
        let outcome = self.engine.on_click(click);
        if let (ClickOutcome::Late { stored }, Some(c), Some(late)) =
            (outcome, copy, self.late.as_mut())
        {
            late.write(&LateClickRecord::new(&c, watermark, stored))?;
        }
        let live = self.engine.live_clicks() as u64;
        if live > self.summary.peak_live_clicks {
            self.summary.peak_live_clicks = live;
        }
        if self.engine.drain_final(&mut self.finals) > 0 {
            self.emit()?;
        }
        Ok(())
    }

    /// Takes in a checkout.
    pub fn checkout(&mut self, checkout: Checkout) -> Result<(), FileSinkError> {
        self.summary.events_read += 1;
        if self.engine.on_checkout(checkout) == CheckoutOutcome::Late
            && self.engine.drain_final(&mut self.finals) > 0
        {
            self.emit()?;
        }
        Ok(())
    }

    /// Counts a line that was refused.
    pub fn bad(&mut self) {
        self.summary.events_read += 1;
        self.summary.bad += 1;
    }

    fn emit(&mut self) -> Result<(), FileSinkError> {
        let now = firstclick_model::time::wall_clock();
        for f in self.finals.drain(..) {
            let name = self.users.get(&f.checkout.user_id).cloned();
            if name.is_none() {
                self.summary.unknown_users += 1;
            }
            let (rows, touches) = f.into_rows(name, now);
            self.summary.rows += rows.len() as u64;
            self.summary.touches += touches.len() as u64;
            for row in rows {
                self.observer.observe_row(&row);
                self.sink.write_row(row)?;
            }
            touches.iter().for_each(|t| self.observer.observe_touch(t));
            if let Some(out) = self.touches.as_mut() {
                for t in &touches {
                    out.write_touch(t)?;
                }
            }
        }
        Ok(())
    }

    /// Ends the input: every pending checkout is written, outputs are flushed, and the summary
    /// and the sink are handed back.
    pub fn finish(mut self) -> Result<(Summary, S), FileSinkError> {
        self.engine.flush(&mut self.finals);
        self.emit()?;
        self.sink.flush()?;
        if let Some(late) = self.late.as_mut() {
            late.flush()?;
        }
        if let Some(touches) = self.touches.as_mut() {
            touches.flush()?;
        }
        let s = self.engine.stats();
        let mut summary = self.summary;
        summary.clicks = s.clicks;
        summary.checkouts = s.checkouts;
        summary.attributed = s.attributed;
        summary.unattributed = s.organic;
        summary.late_clicks = s.late_clicks;
        summary.late_checkouts = s.late_checkouts;
        summary.duplicate_clicks = s.duplicate_clicks;
        summary.duplicate_checkouts = s.duplicate_checkouts;
        summary.elapsed = self.started.elapsed();
        Ok((summary, self.sink))
    }
}
