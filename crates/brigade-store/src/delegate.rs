//! The [`Store`](crate::Store) methods that are the same on every engine.
//!
//! Almost every method runs one function of the shared SQL layer, either on
//! a read connection or in a write transaction; only how an engine gets a
//! connection and commits differs. [`store_impl!`] writes those methods once
//! and an engine supplies two macros of its own:
//!
//! - `read!(self, |c| future)`: run the future (which uses `c`, a
//!   connection of the shared layer) on a read connection;
//! - `write!(self, |c| future, |v| announce)`: run it in a write
//!   transaction; `announce` maps `v`, a reference to the value, to the
//!   `Option<&Changes>` that other servers are to hear of (PostgreSQL
//!   notifies them in the same transaction; SQLite has no other servers).
//!
//! The future may run more than once (PostgreSQL retries a transaction after
//! a deadlock), and on SQLite it runs on another thread: the arguments are
//! owned before it starts.
//!
//! Writes whose changes may leave jobs unsettled call the engine's inherent
//! `settle(&mut Changes, now)` after the commit.

/// The whole `impl Store for $store`: the engine's own methods (`$own`),
/// then the shared ones. (`#[async_trait]` must see every method, so it goes
/// on the impl this writes.)
macro_rules! store_impl {
    ($store:ty, $read:ident, $write:ident; $($own:tt)*) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            $($own)*

            async fn has_queued(&self) -> $crate::Result<bool> {
                $read!(self, |c| $crate::sql::read::has_queued(c))
            }

            async fn submit(
                &self,
                owner: &str,
                job: brigade_core::NewJob,
                idem: Option<$crate::Idempotency>,
                now: i64,
            ) -> $crate::Result<$crate::Submitted> {
                let owner = owner.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::write::submit(c, &owner, &job, idem.as_ref(), now),
                    |v| Some(&v.changes)
                )
            }

            async fn submit_and_lease(
                &self,
                owner: &str,
                job: brigade_core::NewJob,
                idem: Option<$crate::Idempotency>,
                now: i64,
                ttl: i64,
                waiting: Vec<$crate::HandOff>,
            ) -> $crate::Result<$crate::Submitted> {
                let owner = owner.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::write::submit_and_lease(
                        c, &owner, &job, idem.as_ref(), now, ttl, &waiting
                    ),
                    |v| Some(&v.changes)
                )
            }

            async fn job(&self, id: &str) -> $crate::Result<Option<brigade_api::JobView>> {
                let id = id.to_owned();
                $read!(self, |c| $crate::sql::read::job(c, &id))
            }

            async fn jobs(
                &self,
                filter: &$crate::JobFilter,
                limit: u32,
                cursor: Option<&str>,
            ) -> $crate::Result<brigade_api::Page<brigade_api::JobView>> {
                let (filter, cursor) = (filter.clone(), cursor.map(str::to_owned));
                $read!(self, |c| $crate::sql::read::jobs(c, &filter, limit, cursor.as_deref()))
            }

            async fn job_tasks(
                &self,
                job_id: &str,
                state: Option<brigade_api::TaskState>,
                limit: u32,
                cursor: Option<&str>,
            ) -> $crate::Result<Option<brigade_api::Page<brigade_api::TaskView>>> {
                let (id, cursor) = (job_id.to_owned(), cursor.map(str::to_owned));
                $read!(self, |c| $crate::sql::read::job_tasks(
                    c, &id, state, limit, cursor.as_deref()
                ))
            }

            async fn job_owner(&self, id: &str) -> $crate::Result<Option<String>> {
                let id = id.to_owned();
                $read!(self, |c| $crate::sql::read::job_owner(c, &id))
            }

            async fn cancel_job(
                &self,
                id: &str,
                now: i64,
            ) -> $crate::Result<Option<$crate::Changes>> {
                let id = id.to_owned();
                let mut out = $write!(
                    self,
                    |c| $crate::sql::write::cancel_job(c, &id, now),
                    |v| v.as_ref()
                )?;
                if let Some(changes) = &mut out {
                    self.settle(changes, now).await;
                }
                Ok(out)
            }

            async fn delete_job(&self, id: &str) -> $crate::Result<$crate::DeleteOutcome> {
                let id = id.to_owned();
                $write!(self, |c| $crate::sql::write::delete_job(c, &id), |_v| None)
            }

            async fn task(&self, id: &str) -> $crate::Result<Option<brigade_api::TaskView>> {
                let id = id.to_owned();
                $read!(self, |c| $crate::sql::read::task(c, &id))
            }

            async fn cancel_task(
                &self,
                id: &str,
                now: i64,
            ) -> $crate::Result<Option<$crate::Changes>> {
                let id = id.to_owned();
                let mut out = $write!(
                    self,
                    |c| $crate::sql::write::cancel_task(c, &id, now),
                    |v| v.as_ref()
                )?;
                if let Some(changes) = &mut out {
                    self.settle(changes, now).await;
                }
                Ok(out)
            }

            async fn retry_task(&self, id: &str, now: i64) -> $crate::Result<$crate::RetryOutcome> {
                let id = id.to_owned();
                $write!(self, |c| $crate::sql::write::retry_task(c, &id, now), |v| match v {
                    $crate::RetryOutcome::Retried(_, changes) => Some(changes),
                    _ => None,
                })
            }

            async fn tasks(
                &self,
                filter: &$crate::TaskFilter,
                limit: u32,
                cursor: Option<&str>,
            ) -> $crate::Result<brigade_api::Page<brigade_api::TaskView>> {
                let (filter, cursor) = (filter.clone(), cursor.map(str::to_owned));
                $read!(self, |c| $crate::sql::read::tasks(c, &filter, limit, cursor.as_deref()))
            }

            async fn retry_tasks(
                &self,
                filter: &$crate::TaskFilter,
                after: Option<i64>,
                max: u32,
                now: i64,
            ) -> $crate::Result<$crate::Bulk> {
                let filter = filter.clone();
                $write!(
                    self,
                    |c| $crate::sql::write::retry_tasks(c, &filter, after, max, now),
                    |v| Some(&v.changes)
                )
            }

            async fn cancel_tasks(
                &self,
                filter: &$crate::TaskFilter,
                after: Option<i64>,
                max: u32,
                now: i64,
            ) -> $crate::Result<$crate::Bulk> {
                let filter = filter.clone();
                let mut bulk = $write!(
                    self,
                    |c| $crate::sql::write::cancel_tasks(c, &filter, after, max, now),
                    |v| Some(&v.changes)
                )?;
                self.settle(&mut bulk.changes, now).await;
                Ok(bulk)
            }

            async fn join_worker(
                &self,
                owner: &str,
                join: brigade_api::WorkerJoin,
                now: i64,
            ) -> $crate::Result<(brigade_api::WorkerView, $crate::Changes)> {
                let owner = owner.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::write::join_worker(c, &owner, &join, now),
                    |v| Some(&v.1)
                )
            }

            async fn worker(&self, id: &str) -> $crate::Result<Option<brigade_api::WorkerView>> {
                let id = id.to_owned();
                $read!(self, |c| $crate::sql::read::worker(c, &id))
            }

            async fn worker_owner(&self, id: &str) -> $crate::Result<Option<String>> {
                let id = id.to_owned();
                $read!(self, |c| $crate::sql::read::worker_owner(c, &id))
            }

            async fn workers(&self) -> $crate::Result<Vec<brigade_api::WorkerView>> {
                $read!(self, |c| $crate::sql::read::workers(c))
            }

            async fn lease(
                &self,
                worker_id: &str,
                max: u32,
                now: i64,
                ttl: i64,
            ) -> $crate::Result<Option<(Vec<brigade_api::LeasedTask>, $crate::Changes)>> {
                let id = worker_id.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::write::lease(c, &id, max, now, ttl),
                    |v| v.as_ref().map(|(_, changes)| changes)
                )
            }

            async fn heartbeats(
                &self,
                batch: Vec<(String, brigade_api::Heartbeat)>,
                now: i64,
                ttl: i64,
            ) -> $crate::Result<Vec<Option<brigade_api::HeartbeatReply>>> {
                $write!(
                    self,
                    |c| $crate::sql::write::heartbeats(c, &batch, now, ttl),
                    |_v| None
                )
            }

            async fn report(
                &self,
                worker_id: &str,
                results: Vec<brigade_api::TaskResult>,
                now: i64,
            ) -> $crate::Result<Option<(brigade_api::ResultsReply, $crate::Changes)>> {
                let id = worker_id.to_owned();
                let poison = self.poison_after();
                let mut out = $write!(
                    self,
                    |c| $crate::sql::write::report(c, &id, &results, now, poison),
                    |v| v.as_ref().map(|(_, changes)| changes)
                )?;
                if let Some((_, changes)) = &mut out {
                    self.settle(changes, now).await;
                }
                Ok(out)
            }

            async fn report_and_lease(
                &self,
                worker_id: &str,
                results: Vec<brigade_api::TaskResult>,
                max: u32,
                now: i64,
                ttl: i64,
            ) -> $crate::Result<
                Option<(brigade_api::ResultsReply, Vec<brigade_api::LeasedTask>, $crate::Changes)>,
            > {
                let id = worker_id.to_owned();
                let poison = self.poison_after();
                let mut out = $write!(
                    self,
                    |c| $crate::sql::write::report_and_lease(
                        c, &id, &results, max, now, ttl, poison
                    ),
                    |v| v.as_ref().map(|(_, _, changes)| changes)
                )?;
                if let Some((_, _, changes)) = &mut out {
                    self.settle(changes, now).await;
                }
                Ok(out)
            }

            async fn append_logs(
                &self,
                worker_id: &str,
                logs: Vec<brigade_api::LogBatch>,
                now: i64,
            ) -> $crate::Result<Option<brigade_api::LogsReply>> {
                let id = worker_id.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::write::append_logs(c, &id, &logs, now),
                    |_v| None
                )
            }

            async fn task_logs(
                &self,
                task_id: &str,
                after: Option<i64>,
                limit: u32,
            ) -> $crate::Result<Vec<(i64, brigade_api::LogLine)>> {
                let id = task_id.to_owned();
                $read!(self, |c| $crate::sql::read::task_logs(c, &id, after, limit))
            }

            async fn report_progress(
                &self,
                worker_id: &str,
                reports: Vec<brigade_api::ProgressReport>,
                now: i64,
            ) -> $crate::Result<Option<(brigade_api::ResultsReply, $crate::Changes)>> {
                let id = worker_id.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::write::report_progress(c, &id, &reports, now),
                    |v| v.as_ref().map(|(_, changes)| changes)
                )
            }

            async fn task_parents(
                &self,
                task_id: &str,
                limit: u32,
                cursor: Option<&str>,
            ) -> $crate::Result<Option<brigade_api::Page<brigade_api::ParentResult>>> {
                let id = task_id.to_owned();
                let after = $crate::rows::parse_cursor(cursor)?;
                let page = $read!(self, |c| $crate::sql::graph::parents_page(c, &id, after, limit))?;
                Ok(page.map(|(items, next_cursor)| brigade_api::Page { items, next_cursor }))
            }

            async fn leave(
                &self,
                worker_id: &str,
                now: i64,
            ) -> $crate::Result<Option<$crate::Changes>> {
                let id = worker_id.to_owned();
                $write!(self, |c| $crate::sql::write::leave(c, &id, now), |v| v.as_ref())
            }

            async fn drain_worker(
                &self,
                worker_id: &str,
            ) -> $crate::Result<Option<brigade_api::WorkerView>> {
                let id = worker_id.to_owned();
                $write!(self, |c| $crate::sql::write::drain_worker(c, &id), |_v| None)
            }

            async fn queues(&self) -> $crate::Result<Vec<brigade_api::QueueView>> {
                $read!(self, |c| $crate::sql::read::queues(c))
            }

            async fn limits(&self, now: i64) -> $crate::Result<Vec<brigade_api::LimitView>> {
                $read!(self, |c| $crate::sql::limits::views(c, now))
            }

            async fn create_schedule(
                &self,
                owner: &str,
                schedule: brigade_core::schedule::NewSchedule,
                now: i64,
            ) -> $crate::Result<brigade_api::ScheduleView> {
                let owner = owner.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::schedules::create(c, &owner, &schedule, now),
                    |_v| None
                )
            }

            async fn schedule(&self, id: &str) -> $crate::Result<Option<$crate::StoredSchedule>> {
                let id = id.to_owned();
                $read!(self, |c| $crate::sql::schedules::get(c, &id))
            }

            async fn schedules(
                &self,
                owner: Option<&str>,
                limit: u32,
                cursor: Option<&str>,
            ) -> $crate::Result<brigade_api::Page<brigade_api::ScheduleView>> {
                let (owner, cursor) = (owner.map(str::to_owned), cursor.map(str::to_owned));
                $read!(self, |c| $crate::sql::schedules::list(
                    c, owner.as_deref(), limit, cursor.as_deref()
                ))
            }

            async fn replace_schedule(
                &self,
                id: &str,
                schedule: brigade_core::schedule::NewSchedule,
                read_next: Option<i64>,
            ) -> $crate::Result<Option<brigade_api::ScheduleView>> {
                let id = id.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::schedules::replace(c, &id, &schedule, read_next),
                    |_v| None
                )
            }

            async fn delete_schedule(&self, id: &str) -> $crate::Result<bool> {
                let id = id.to_owned();
                $write!(self, |c| $crate::sql::schedules::delete(c, &id), |_v| None)
            }

            async fn trigger_schedule(
                &self,
                id: &str,
                limits: brigade_core::Limits,
                now: i64,
            ) -> $crate::Result<$crate::TriggerOutcome> {
                let id = id.to_owned();
                let mut out = $write!(
                    self,
                    |c| $crate::sql::schedules::trigger(c, &id, &limits, now),
                    |v| match v {
                        $crate::TriggerOutcome::Fired(_, changes)
                        | $crate::TriggerOutcome::Duplicate(_, changes) => Some(changes),
                        _ => None,
                    }
                )?;
                // `overlap: cancel_previous` cancels a job, which may leave it unsettled.
                if let $crate::TriggerOutcome::Fired(_, changes) = &mut out {
                    self.settle(changes, now).await;
                }
                Ok(out)
            }

            async fn fire_schedules(
                &self,
                limits: brigade_core::Limits,
                now: i64,
            ) -> $crate::Result<($crate::Changes, Option<i64>)> {
                let mut out = $write!(
                    self,
                    |c| $crate::sql::schedules::fire_due(c, &limits, now),
                    |v| Some(&v.0)
                )?;
                self.settle(&mut out.0, now).await;
                Ok(out)
            }

            async fn claim_callbacks(
                &self,
                claimer: &str,
                now: i64,
                claim_ms: i64,
                max: u32,
            ) -> $crate::Result<Vec<$crate::DueCallback>> {
                let claimer = claimer.to_owned();
                $write!(
                    self,
                    |c| $crate::sql::callbacks::claim(c, &claimer, now, claim_ms, max),
                    |_v| None
                )
            }

            async fn record_callback(&self, outcome: $crate::CallbackOutcome) -> $crate::Result<()> {
                $write!(self, |c| $crate::sql::callbacks::record(c, &outcome), |_v| None)
            }

            async fn callback_attempts(
                &self,
                job_id: &str,
            ) -> $crate::Result<Option<Vec<brigade_api::CallbackAttempt>>> {
                let id = job_id.to_owned();
                $read!(self, |c| $crate::sql::callbacks::attempts(c, &id))
            }
        }
    };
}

pub(crate) use store_impl;
