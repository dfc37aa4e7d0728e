//! The rollout API: shadow candidates (stage, report, promote, discard), background replays,
//! and the server's side of the watch (starting it on activations, rolling back).

use super::{Baseline, KEPT_JOBS, judge_guard, run_job, to_allow};
use crate::api::{AppState, Caller};
use crate::auth::{Action, Principal};
use crate::error::ApiError;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

impl AppState {
    /// Follows the registry for rollout: an activation that replaced a revision starts a
    /// watch; a rollback ends it; an unloaded bundle loses its watch and its shadow.
    pub(crate) fn follow_rollout(&self, event: &rulebox::RegistryEvent) {
        use rulebox::RegistryEvent as E;
        let rollout = self.rollout();
        match event {
            E::Activated {
                bundle,
                revision,
                previous,
                ..
            } => {
                // The candidate became active some other way (an upload, a poll): there is
                // nothing left to compare.
                if let (Some(shadow), Ok(active)) =
                    (rollout.shadow(bundle), self.registry().get(bundle))
                    && shadow.candidate.bundle().digest() == active.digest()
                    && rollout.end_shadow(bundle).is_some()
                {
                    tracing::info!(bundle = %bundle, %revision, "shadow ended: its candidate is active");
                    rollout.event(json!({
                        "event": "shadow-ended", "bundle": bundle, "revision": revision,
                        "why": "the candidate became active", "at_ms": crate::decisions::now_ms(),
                    }));
                }
                let Some(previous) = previous else { return };
                let live = self.live();
                let config = &live.config.rollout.watch;
                if !config.enabled {
                    return;
                }
                let now = crate::decisions::now_ms();
                // The window holds the previous revision's traffic up to now.
                let t = self.window().totals(now, Some(bundle), None).rules;
                let ratio = |k: u64| k as f64 / t.evals.max(1) as f64;
                let baseline = Baseline {
                    evaluations: t.evals,
                    error_rate: ratio(t.errors),
                    timeout_ratio: ratio(t.timeouts),
                    health: self.health().score,
                };
                rollout.watch(bundle, revision, previous, baseline, config);
            }
            E::RolledBack { bundle, .. } => rollout.unwatch(bundle),
            E::Unloaded { bundle, .. } => {
                rollout.unwatch(bundle);
                if rollout.end_shadow(bundle).is_some() {
                    tracing::info!(bundle = %bundle, "shadow discarded with its bundle");
                }
            }
            _ => {}
        }
    }

    /// Judges the watched revisions; one that crossed a limit is rolled back (when it is
    /// still the active one), an alert fires and the event is kept with its numbers.
    pub(crate) async fn judge_watches(&self, now: u64) {
        let rollout = self.rollout();
        let live = self.live();
        let config = &live.config.rollout.watch;
        let health = if rollout.any_watch.load(Ordering::Relaxed) {
            self.health().score
        } else {
            return;
        };
        for trip in rollout.judge(now, health, config) {
            let (bundle, w) = (&trip.bundle, &trip.watch);
            let message = format!(
                "bundle {bundle}: revision {} rolled back to {}: {} {:.4} against {:.4} before it (limit {}), over {} rule evaluations in {} ms",
                w.revision,
                w.previous,
                trip.signal,
                trip.value,
                trip.baseline,
                trip.limit,
                w.evaluations,
                now.saturating_sub(w.started_ms)
            );
            let details = json!({
                "bundle": bundle, "from": w.revision, "to": w.previous, "signal": trip.signal,
                "value": trip.value, "baseline": trip.baseline, "limit": trip.limit,
                "evaluations": w.evaluations, "errors": w.errors, "timeouts": w.timeouts,
                "watch": w,
            });
            match self
                .registry()
                .rollback_from(bundle, &w.revision, &w.previous)
                .await
            {
                // Replaced meanwhile: the watch was on a revision that no longer serves.
                Ok(None) => {}
                Ok(Some(_)) => {
                    self.alerts().fire(
                        &format!("automatic-rollback:{bundle}"),
                        crate::config::Severity::Critical,
                        trip.value,
                        trip.limit,
                        &message,
                        details.clone(),
                        now,
                    );
                    if let Some(m) = self.metrics() {
                        m.rollback(bundle, trip.signal);
                    }
                    let mut event = details;
                    event["event"] = "automatic-rollback".into();
                    event["at_ms"] = now.into();
                    event["message"] = message.into();
                    rollout.event(event);
                }
                Err(e) => tracing::error!(bundle = %bundle, "automatic rollback failed: {e}"),
            }
        }
    }

    /// Stages every shadow kept under `bundles.state_dir` again (after a restart): call it
    /// once the bundles are loaded. Returns (bundle, revision or why not).
    pub async fn restore_shadows(&self) -> Vec<(String, Result<String, String>)> {
        let registry = self.registry().clone();
        self.rollout()
            .restore(|path, name| {
                let registry = registry.clone();
                async move {
                    registry
                        .stage(&path, &name)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await
    }

    /// Writes every shadow's report now (on a graceful stop).
    pub fn flush_rollout(&self) {
        self.rollout().flush();
    }

    /// The rollout part of a bundle's status: its watch, shadow and recent events.
    pub(crate) fn rollout_json(&self, bundle: &str) -> Value {
        let rollout = self.rollout();
        json!({
            "watch": rollout.watch_of(bundle),
            "shadow": rollout.shadow(bundle).map(|s| json!({
                "revision": s.candidate.bundle().revision(),
                "digest": s.candidate.bundle().digest(),
            })),
            "events": rollout.events_of(bundle),
        })
    }

    /// The shadows the caller sees, for the dashboard.
    pub(crate) fn shadows_json(&self, caller: &Principal) -> Vec<Value> {
        let live = self.live();
        let guard = live.config.rollout.guard.as_ref();
        self.rollout()
            .shadows()
            .into_iter()
            .filter(|s| caller.sees(s.candidate.bundle().name()))
            .map(|s| {
                let name = s.candidate.bundle().name();
                let active = self.registry().get(name).ok();
                let mut v = s.to_json(active.as_ref().map(|a| a.revision()), guard);
                // Counts only: the list of changes is for the API.
                if let Some(o) = v.as_object_mut() {
                    o.remove("changes");
                    o.remove("rules");
                }
                v
            })
            .collect()
    }
}

/// `PUT /v1/bundles/{name}?mode=shadow[&sample=0.1]`: the archive goes through the gate and
/// becomes the bundle's shadow candidate (replacing any other), kept on disk before the
/// answer.
pub(crate) async fn put_shadow(
    state: &AppState,
    caller: &Principal,
    name: &str,
    bytes: &Bytes,
    sample: Option<f64>,
) -> Result<Response, ApiError> {
    let live = state.live();
    let sample = sample.unwrap_or(live.config.rollout.shadow_sample);
    if !(0.0..=1.0).contains(&sample) {
        return Err(ApiError::new(
            "invalid-request",
            format!("sample {sample}: give a share from 0 to 1"),
        ));
    }
    let active = state.registry().get(name).map_err(|_| {
        ApiError::new(
            "not-found",
            format!("bundle `{name}` has no active revision to shadow: upload it without mode=shadow first"),
        )
    })?;
    let rollout = state.rollout();
    let mut file = rollout
        .staging_file()
        .map_err(|e| ApiError::new("conflict", e))?;
    std::io::Write::write_all(&mut file, bytes)
        .map_err(|e| ApiError::new("internal", format!("cannot stage the upload: {e}")))?;
    let candidate = state.registry().stage(file.path(), name).await?;
    if candidate.bundle().digest() == active.digest() {
        return Err(ApiError::new(
            "conflict",
            format!(
                "the candidate is the active revision {} (same digest): nothing to compare",
                active.revision()
            ),
        ));
    }
    let revision = candidate.bundle().revision().to_owned();
    let tests_passed = candidate.tests_passed();
    let replaced = rollout
        .start_shadow(candidate, file, sample, &caller.name)
        .map_err(|e| ApiError::new("internal", e))?;
    tracing::info!(bundle = %name, %revision, sample, by = %caller.name, replaced = ?replaced, "shadow candidate staged");
    rollout.event(json!({
        "event": "shadow-started", "bundle": name, "revision": revision, "sample": sample,
        "by": caller.name, "replaced": replaced, "at_ms": crate::decisions::now_ms(),
    }));
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "bundle": name,
            "mode": "shadow",
            "candidate": {"revision": revision, "digest": state.rollout().shadow(name).map(|s| s.candidate.bundle().digest().to_owned()), "tests_passed": tests_passed},
            "active_revision": active.revision(),
            "sample": sample,
            "replaced": replaced,
        })),
    )
        .into_response())
}

fn no_shadow(name: &str) -> ApiError {
    ApiError::new(
        "not-found",
        format!("bundle `{name}` has no shadow candidate: PUT one with ?mode=shadow"),
    )
}

/// `GET /v1/bundles/{name}/shadow`: what the candidate would have decided on the sample.
pub(crate) async fn get_shadow(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, Some(&name))?;
    let shadow = state
        .rollout()
        .shadow(&name)
        .ok_or_else(|| no_shadow(&name))?;
    let active = state.registry().get(&name).ok();
    let live = state.live();
    Ok(Json(shadow.to_json(
        active.as_ref().map(|a| a.revision()),
        live.config.rollout.guard.as_ref(),
    )))
}

/// `DELETE /v1/bundles/{name}/shadow`: the candidate is discarded with what it found.
pub(crate) async fn delete_shadow(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    caller.check(Action::Operate, Some(&name))?;
    let shadow = state
        .rollout()
        .end_shadow(&name)
        .ok_or_else(|| no_shadow(&name))?;
    let revision = shadow.candidate.bundle().revision().to_owned();
    tracing::info!(bundle = %name, %revision, by = %caller.name, "shadow candidate discarded");
    state.rollout().event(json!({
        "event": "shadow-discarded", "bundle": name, "revision": revision, "by": caller.name,
        "at_ms": crate::decisions::now_ms(),
    }));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    /// Promote although the guard refuses: why (kept with the event).
    #[serde(default)]
    override_guard: Option<String>,
}

/// `POST /v1/bundles/{name}/promote`: the shadow candidate becomes active, atomically (the
/// revision it replaces is kept for rollback), if the promotion guard lets it or the caller
/// overrides the guard with a reason.
pub(crate) async fn promote(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Operate, Some(&name))?;
    let request = if headers.contains_key(axum::http::header::CONTENT_TYPE) {
        let bytes = crate::api::json_body(&state, &headers, body).await?;
        serde_json::from_slice::<PromoteRequest>(&bytes).map_err(crate::api::invalid_json)?
    } else {
        PromoteRequest::default()
    };
    if request
        .override_guard
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return Err(ApiError::new(
            "invalid-request",
            "override_guard: give the reason for overriding the guard",
        ));
    }
    let rollout = state.rollout();
    let shadow = rollout.shadow(&name).ok_or_else(|| no_shadow(&name))?;
    let report = shadow.report();
    let live = state.live();
    let verdict = live
        .config
        .rollout
        .guard
        .as_ref()
        .map(|g| judge_guard(g, &report));
    if let Some(Err(why)) = &verdict
        && request.override_guard.is_none()
    {
        return Err(ApiError {
            detail: Some(Box::new(
                json!({"evaluated": report.replayed, "changed": report.changed, "to_allow": to_allow(&report)}),
            )),
            ..ApiError::new(
                "guard-refused",
                format!(
                    "the promotion guard refuses: {why} (override it with {{\"override_guard\": \"why\"}})"
                ),
            )
        });
    }
    let shadow = rollout.end_shadow(&name).ok_or_else(|| no_shadow(&name))?;
    let activation = state.registry().promote(&shadow.candidate).await;
    let overridden = match (&verdict, &request.override_guard) {
        (Some(Err(why)), Some(reason)) => Some(json!({"guard": why, "reason": reason})),
        _ => None,
    };
    tracing::warn!(bundle = %name, revision = %activation.revision, by = %caller.name, overridden = ?overridden, "shadow candidate promoted");
    let summary = json!({
        "evaluated": report.replayed, "changed": report.changed, "to_allow": to_allow(&report),
        "verdicts": report.verdicts,
    });
    rollout.event(json!({
        "event": "promoted", "bundle": name, "revision": activation.revision,
        "previous": activation.previous, "by": caller.name, "shadow": summary,
        "guard_overridden": overridden, "at_ms": crate::decisions::now_ms(),
    }));
    Ok(Json(json!({
        "activation": activation,
        "shadow": summary,
        "guard": match verdict {
            None => Value::Null,
            Some(Ok(())) => json!({"passes": true}),
            Some(Err(why)) => json!({"passes": false, "why": why, "overridden": overridden}),
        },
    })))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayParams {
    /// `shadow`: replay the bundle's shadow candidate (else the body is the candidate).
    candidate: Option<String>,
    since: Option<String>,
    until: Option<String>,
    verdict: Option<String>,
    limit: Option<usize>,
}

/// The most decisions one replay reads.
const MAX_REPLAY: usize = 1_000_000;

/// `POST /v1/bundles/{name}/replay[?since=&until=&verdict=&limit=]`: a candidate (the body,
/// a `.tar.gz` put through the gate; or `?candidate=shadow`) evaluated in the background on
/// the decision log's most recent decisions of the bundle. 202 with the job's address.
pub(crate) async fn start_replay(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath(name): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.check(Action::Operate, Some(&name))?;
    let params: ReplayParams = crate::api::query_of(&uri)?;
    let now = crate::decisions::now_ms();
    let limit = params.limit.unwrap_or(10_000);
    if limit == 0 || limit > MAX_REPLAY {
        return Err(ApiError::new(
            "invalid-request",
            format!("limit {limit}: give 1 to {MAX_REPLAY}"),
        ));
    }
    if let Some(v) = &params.verdict
        && !["allow", "deny", "review", "abstain"].contains(&v.as_str())
    {
        return Err(ApiError::new(
            "invalid-request",
            format!("verdict `{v}`: allow, deny, review or abstain"),
        ));
    }
    let filter = crate::decisions::Filter {
        bundle: Some(name.clone()),
        verdict: params.verdict.clone(),
        since_ms: crate::api::time_param("since", params.since.as_deref(), now)?,
        until_ms: crate::api::time_param("until", params.until.as_deref(), now)?,
        ..Default::default()
    };
    if state.decision_log().is_none() {
        return Err(ApiError::new(
            "not-found",
            "no decision log to replay: set decision_log.path in the configuration",
        ));
    }
    let candidate = match params.candidate.as_deref() {
        Some("shadow") => state
            .rollout()
            .shadow(&name)
            .ok_or_else(|| no_shadow(&name))?
            .candidate
            .bundle()
            .clone(),
        Some(other) => {
            return Err(ApiError::new(
                "invalid-request",
                format!("candidate `{other}`: `shadow`, or send the candidate as the body"),
            ));
        }
        None => {
            let bytes = crate::api::archive_body(
                &state,
                &headers,
                body,
                "send the candidate as a .tar.gz with Content-Type: application/gzip, or replay the shadow with ?candidate=shadow",
            )
            .await?;
            let file = crate::api::stage_upload(&state, &bytes, "rulebox-replay-")?;
            // The same gate as an upload: a candidate that fails its golden cases is refused
            // before anything is replayed.
            state
                .registry()
                .stage(file.path(), &name)
                .await?
                .bundle()
                .clone()
        }
    };
    let job = state
        .rollout()
        .new_job(&candidate, &caller.name, limit)
        .map_err(|e| ApiError::new("busy", e))?;
    tracing::info!(bundle = %name, revision = %candidate.revision(), job = %job.id, limit, by = %caller.name, "replay started");
    let for_job = job.clone();
    let for_log = state.clone();
    tokio::task::spawn_blocking(move || {
        run_job(&for_job, &candidate, |add| {
            let log = for_log.decision_log().ok_or("the decision log is gone")?;
            crate::decisions::for_each_recorded(log.reader(), &filter, limit, add)
        });
    });
    let location = format!("/v1/bundles/{name}/replay/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, location.clone())],
        Json(json!({"id": job.id, "state": "running", "status_url": location})),
    )
        .into_response())
}

/// `GET /v1/bundles/{name}/replay/{id}`: a replay's progress, and its report so far.
/// `DELETE /v1/bundles/{name}/replay/{id}`: stops a running replay (its report so far is
/// kept, `state` becomes `cancelled`); 409 when it is not running.
pub(crate) async fn cancel_replay(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.check(Action::Operate, Some(&name))?;
    let job = job_of(&state, &name, &id)?;
    if !job.cancel() {
        return Err(ApiError::new(
            "conflict",
            format!("replay `{id}` is not running"),
        ));
    }
    tracing::info!(bundle = %name, job = %id, by = %caller.name, "replay cancelled");
    Ok((StatusCode::ACCEPTED, Json(job.to_json())))
}

fn job_of(
    state: &AppState,
    name: &str,
    id: &str,
) -> Result<std::sync::Arc<super::ReplayJob>, ApiError> {
    state.rollout().job(name, id).ok_or_else(|| {
        ApiError::new(
            "not-found",
            format!("no replay `{id}` of bundle `{name}` (the last {KEPT_JOBS} are kept)"),
        )
    })
}

pub(crate) async fn get_replay(
    State(state): State<AppState>,
    Caller(caller): Caller,
    UrlPath((name, id)): UrlPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.check(Action::Read, Some(&name))?;
    Ok(Json(job_of(&state, &name, &id)?.to_json()))
}
