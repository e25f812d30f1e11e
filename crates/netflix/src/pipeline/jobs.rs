//! The pipeline's jobs: what `POST /v1/titles` started and `GET /v1/jobs/{id}`
//! reports, in memory.
//!
//! Guaranteed: at most `max_queued` jobs are waiting or running at once (more are
//! refused, never queued without bound); one job per title id at a time; at most
//! [`HISTORY`] finished jobs are remembered (the oldest forgotten first).
//! Not guaranteed: jobs survive a restart — a restarted pipeline forgets them, and
//! what an interrupted job wrote is unlisted and swept (`publish::sweep_orphans`).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::progress::{Phase, Progress};
use crate::origin::catalog::CatalogEntry;
use crate::origin::key::TitleId;

/// Finished jobs remembered.
pub const HISTORY: usize = 256;

/// One ingest.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub title: TitleId,
    pub name: String,
    pub created_at_ms: u64,
    pub progress: Arc<Progress>,
    outcome: Mutex<Option<Result<CatalogEntry, String>>>,
}

/// A job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub title: TitleId,
    pub name: String,
    pub state: Phase,
    /// 0.0..=1.0 over the whole job.
    pub progress: f64,
    pub created_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The published title, once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<CatalogEntry>,
}

impl Job {
    pub fn view(&self) -> JobView {
        let outcome = self.outcome.lock().clone();
        JobView {
            id: self.id.clone(),
            title: self.title.clone(),
            name: self.name.clone(),
            state: match &outcome {
                Some(Ok(_)) => Phase::Done,
                Some(Err(_)) => Phase::Failed,
                None => self.progress.phase(),
            },
            progress: match &outcome {
                Some(Ok(_)) => 1.0,
                _ => self.progress.fraction(),
            },
            created_at_ms: self.created_at_ms,
            error: outcome.as_ref().and_then(|o| o.as_ref().err().cloned()),
            entry: outcome.and_then(Result::ok),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.outcome.lock().is_some()
    }
}

/// Why a job was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedJob {
    #[error("title `{0}` is being ingested already")]
    Busy(TitleId),
    #[error("{0} jobs are waiting or running; try again later")]
    Full(usize),
}

/// The registry.
#[derive(Debug)]
pub struct Jobs {
    max_queued: usize,
    /// Distinguishes this process's job ids from an earlier run's.
    epoch: String,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    jobs: VecDeque<Arc<Job>>,
}

impl Jobs {
    pub fn new(max_queued: usize, epoch_ms: u64) -> Self {
        Self {
            max_queued,
            epoch: format!("{epoch_ms:x}"),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Starts a job for `title`, unless that title is in flight or the queue is full.
    pub fn reserve(
        &self,
        title: &TitleId,
        name: &str,
        now_ms: u64,
    ) -> Result<Arc<Job>, RefusedJob> {
        let mut inner = self.inner.lock();
        let active: Vec<&Arc<Job>> = inner.jobs.iter().filter(|j| !j.is_finished()).collect();
        if active.iter().any(|j| &j.title == title) {
            return Err(RefusedJob::Busy(title.clone()));
        }
        if active.len() >= self.max_queued {
            return Err(RefusedJob::Full(active.len()));
        }
        inner.next += 1;
        let job = Arc::new(Job {
            id: format!("job-{}-{}", self.epoch, inner.next),
            title: title.clone(),
            name: name.to_owned(),
            created_at_ms: now_ms,
            progress: Arc::new(Progress::default()),
            outcome: Mutex::new(None),
        });
        inner.jobs.push_back(job.clone());
        Ok(job)
    }

    /// Records how a job ended.
    pub fn finish(&self, job: &Job, outcome: Result<CatalogEntry, String>) {
        job.progress.enter(
            if outcome.is_ok() {
                Phase::Done
            } else {
                Phase::Failed
            },
            0,
        );
        *job.outcome.lock() = Some(outcome);
        // Forget the oldest finished jobs beyond the history.
        let mut inner = self.inner.lock();
        let mut finished = inner.jobs.iter().filter(|j| j.is_finished()).count();
        while finished > HISTORY {
            match inner.jobs.iter().position(|j| j.is_finished()) {
                Some(i) => {
                    inner.jobs.remove(i);
                    finished -= 1;
                }
                None => break,
            }
        }
    }

    /// Forgets a job that never ran (its upload failed).
    pub fn abandon(&self, job: &Job) {
        self.inner.lock().jobs.retain(|j| j.id != job.id);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.inner.lock().jobs.iter().find(|j| j.id == id).cloned()
    }

    /// Every remembered job, newest first.
    pub fn list(&self) -> Vec<Arc<Job>> {
        self.inner.lock().jobs.iter().rev().cloned().collect()
    }

    /// Whether a job for `title` is waiting or running.
    pub fn busy(&self, title: &TitleId) -> bool {
        self.inner
            .lock()
            .jobs
            .iter()
            .any(|j| &j.title == title && !j.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TitleId {
        TitleId::parse(s).unwrap()
    }

    #[test]
    fn one_job_per_title_and_a_bounded_queue() {
        let jobs = Jobs::new(2, 1);
        let a = jobs.reserve(&id("a"), "A", 0).unwrap();
        assert_eq!(
            jobs.reserve(&id("a"), "A", 0).unwrap_err(),
            RefusedJob::Busy(id("a"))
        );
        let _b = jobs.reserve(&id("b"), "B", 0).unwrap();
        assert_eq!(
            jobs.reserve(&id("c"), "C", 0).unwrap_err(),
            RefusedJob::Full(2)
        );
        jobs.finish(&a, Err("bad".into()));
        let c = jobs.reserve(&id("c"), "C", 0).unwrap();
        assert_ne!(c.id, a.id);
        let view = jobs.get(&a.id).unwrap().view();
        assert_eq!(
            (view.state, view.error.as_deref()),
            (Phase::Failed, Some("bad"))
        );
        jobs.abandon(&c);
        assert!(jobs.get(&c.id).is_none());
        assert!(!jobs.busy(&id("c")));
    }

    #[test]
    fn history_is_bounded() {
        let jobs = Jobs::new(1, 1);
        for i in 0..HISTORY + 10 {
            let job = jobs.reserve(&id(&format!("t{i}")), "t", 0).unwrap();
            jobs.finish(&job, Err("x".into()));
        }
        assert_eq!(jobs.list().len(), HISTORY);
        assert_eq!(jobs.list()[0].title, id(&format!("t{}", HISTORY + 9)));
    }
}
