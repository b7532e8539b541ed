//! Concurrent searches share one pass over the index.
//!
//! An exact search reads every stored vector (200 MB at 100k images of 512
//! floats), so sixteen clients searching at once would read the index sixteen
//! times and wait for each other's memory traffic. Here each request queues its
//! query; whichever request finds no scan running takes everything queued and
//! answers it with one [`Index::search_many`] pass, which reads each vector once
//! and scores it against every query while it is in cache. A request that
//! arrives during a scan waits for it and is answered by the next one. Answers
//! are exactly what [`crate::query::search_filtered`] gives for each request.
//!
//! No thread is added: the scan runs on the blocking-pool thread of one of the
//! waiting requests. A panic in a scan is caught; its requests get an error and
//! the next request scans again.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};

use super::snapshot::Snapshot;
use crate::index::{IndexHit, PathFilter};

/// One queued search.
struct Job {
    snap: Arc<Snapshot>,
    query: Vec<f32>,
    top: usize,
    under: Option<String>,
    threshold: Option<f32>,
    reply: Sender<Vec<IndexHit>>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    scanning: bool,
}

/// The shared search queue of a server.
#[derive(Default)]
pub(crate) struct Batcher {
    queue: Mutex<Queue>,
    done: Condvar,
}

/// Most queries answered by one pass; more wait for the next.
const MAX_BATCH: usize = 64;

impl Batcher {
    /// The top `top` hits of unit vector `query` in `snap` (the request's
    /// snapshot), under `under` and at or above `threshold`, as
    /// [`crate::query::search_filtered`] gives them; `None` if the scan that
    /// carried this query panicked.
    pub(crate) fn search(
        &self,
        snap: Arc<Snapshot>,
        query: Vec<f32>,
        top: usize,
        ef: usize,
        under: Option<&str>,
        threshold: Option<f32>,
    ) -> Option<Vec<IndexHit>> {
        let (reply, answer) = mpsc::channel();
        let mut q = self.lock();
        q.jobs.push(Job {
            snap,
            query,
            top,
            under: under.map(str::to_string),
            threshold,
            reply,
        });
        loop {
            match answer.try_recv() {
                Ok(hits) => return Some(hits),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if q.scanning {
                q = self.done.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Nobody is scanning: answer what is queued (this request included,
            // unless an earlier pass answered it already).
            let take = q.jobs.len().min(MAX_BATCH);
            let batch: Vec<Job> = q.jobs.drain(..take).collect();
            q.scanning = true;
            drop(q);
            // Replies are sent inside; a panic drops the senders, so the waiting
            // requests see a disconnected channel.
            let _ = catch_unwind(AssertUnwindSafe(|| run(batch, ef)));
            q = self.lock();
            q.scanning = false;
            self.done.notify_all();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Answers a batch: one pass per distinct (snapshot, top); in practice one pass,
/// as the page always asks for the same number of hits.
fn run(mut batch: Vec<Job>, ef: usize) {
    while !batch.is_empty() {
        let snap = Arc::clone(&batch[0].snap);
        let k = batch[0].top;
        let (same, rest): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|j| Arc::ptr_eq(&j.snap, &snap) && j.top == k);
        batch = rest;
        let filters: Vec<_> = same
            .iter()
            .map(|j| {
                let under = j.under.as_deref();
                move |p: &str| crate::query::filter::under(under, p)
            })
            .collect();
        let allow: Vec<PathFilter<'_>> = filters
            .iter()
            .map(|f| Some(f as &(dyn Fn(&str) -> bool + Sync)))
            .collect();
        let queries: Vec<&[f32]> = same.iter().map(|j| j.query.as_slice()).collect();
        let found = snap.index.search_many(&queries, k, ef, &allow);
        for (job, mut hits) in same.iter().zip(found) {
            if let Some(t) = job.threshold {
                hits.retain(|h| h.score >= t);
            }
            // The request may have gone (client hung up): nothing to do then.
            let _ = job.reply.send(hits);
        }
    }
}
