//! Runs that wait for a person: answering their questions, timing them out, and handing
//! the answer to the node that asked when the run goes on.
//!
//! A run that reaches an `interrupt` node is stored `waiting` with its question, in one
//! commit with its last step (see the sink): it holds no slot and no lease, and survives
//! any restart. An answer (checked against the question's schema) or a timeout resolves
//! the question in one conditional transaction, and, when no other question of the run is
//! pending, hands the run back `queued`; whichever instance claims it goes on at the node
//! that asked, with the answer.

use weft_app::wire::{Interrupt, ResumeRequest, Resumed, RunStatus};

use super::{Runner, RunnerError};
use crate::{
    auth::Principal,
    engine::tool::Answer,
    ids::RunId,
    store::{now_millis, Resolution, Resolved, StoreError, StoredInterrupt, StoredRun},
    tools::schema::check as check_answer,
};

/// The most questions one lease tick times out.
const EXPIRE_BATCH: u32 = 256;

impl Runner {
    /// Answers a waiting run's question as `by`: checked against its schema, then
    /// recorded, and the run goes on (from the node that asked) once no question of it is
    /// pending.
    pub async fn answer(&self, run_id: &RunId, request: ResumeRequest, by: &Principal) -> Result<Resumed, RunnerError> {
        self.visible_run(run_id, &by.access()).await?;
        let asked = self.store.interrupts(run_id).await?;
        let Some(question) = asked.iter().find(|asked| asked.id == request.interrupt_id) else {
            return Err(RunnerError::InterruptNotFound {
                run: run_id.clone(),
                interrupt: request.interrupt_id,
            });
        };
        if question.resolved_at.is_some() {
            return Err(RunnerError::InterruptResolved(request.interrupt_id));
        }
        let problems = check_answer(&question_of(question)?.input_schema, &request.input);
        if !problems.is_empty() {
            return Err(RunnerError::InvalidAnswer(problems));
        }
        let answer = serde_json::to_string(&request.input).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let resolved = self
            .store
            .resolve_interrupt(Resolution {
                run_id: run_id.clone(),
                interrupt_id: request.interrupt_id.clone(),
                answer: Some(answer),
                by: by.created_by(),
                at: now_millis(),
            })
            .await?;
        let status = match resolved {
            // Answered meanwhile (another request won), or the run was cancelled.
            Resolved::NotPending => return Err(RunnerError::InterruptResolved(request.interrupt_id)),
            Resolved::StillWaiting => RunStatus::Waiting,
            Resolved::Queued => {
                self.claims.queued();
                RunStatus::Queued
            }
        };
        Ok(Resumed {
            run_id: run_id.to_string(),
            interrupt_id: request.interrupt_id,
            status,
        })
    }

    /// Times out the questions past their deadline, queuing the runs left with none
    /// pending. Answers how many runs it queued.
    pub(super) async fn expire_questions(&self) -> Result<u64, RunnerError> {
        let queued = self.store.expire_interrupts(now_millis(), EXPIRE_BATCH).await?;
        if queued > 0 {
            self.claims.queued();
        }
        Ok(queued)
    }

    /// The questions a run waits on, as the API shows them; none unless it is `waiting`.
    pub async fn pending_questions(&self, run: &StoredRun) -> Result<Vec<Interrupt>, RunnerError> {
        if run.status != RunStatus::Waiting {
            return Ok(Vec::new());
        }
        let asked = self.store.interrupts(&run.id).await?;
        asked
            .iter()
            .filter(|asked| asked.resolved_at.is_none())
            .map(question_of)
            .collect()
    }

    /// The answers a run resumed at its checkpoint goes on with: each resolved question,
    /// with the node that asked and the step it asked at (the engine gives each to the
    /// node waiting at that step, and ignores the rest).
    pub(super) async fn answers_for(&self, run: &StoredRun) -> Result<Vec<(String, u64, Answer)>, RunnerError> {
        let asked = self.store.interrupts(&run.id).await?;
        asked
            .into_iter()
            .filter(|asked| asked.resolved_at.is_some())
            .map(|resolved| {
                let answer = match resolved.answer {
                    Some(text) => Answer::Given {
                        input: serde_json::from_str(&text)
                            .map_err(|err| StoreError::Corrupt(format!("answer to {}: {err}", resolved.id)))?,
                        by: resolved.resolved_by,
                    },
                    None => Answer::TimedOut,
                };
                Ok((resolved.node, resolved.step, answer))
            })
            .collect()
    }
}

/// A stored question as the API shows it.
fn question_of(asked: &StoredInterrupt) -> Result<Interrupt, RunnerError> {
    serde_json::from_str(&asked.request)
        .map_err(|err| StoreError::Corrupt(format!("question {}: {err}", asked.id)).into())
}
