//! `GET /v1/languages`: what the cluster's `code` workers can run now.
//!
//! Built from the active workers' labels: `lang` lists a worker's languages
//! and `lang.<language>` holds its toolchain's version (workers send both at
//! join). Kept in the store with the worker, so every server of a cluster
//! answers the same.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use brigade_api::code::{COMPILED_LANGUAGES, LANG_VERSION_LABEL, LanguageView};
use brigade_api::{WorkerState, WorkerView};

use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::state::AppState;

/// The languages active workers run, with versions, workers and free slots.
#[utoipa::path(get, path = "/v1/languages", tag = "workers",
    responses((status = 200, body = Vec<LanguageView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<LanguageView>>> {
    caller.require(&[Role::Client, Role::Worker])?;
    Ok(Json(languages(&state.store.workers().await?)))
}

/// The languages of `workers` (only active ones that run `code`), by name.
pub fn languages(workers: &[WorkerView]) -> Vec<LanguageView> {
    #[derive(Default)]
    struct Acc {
        versions: BTreeMap<String, u32>,
        workers: u32,
        slots_free: u32,
    }
    let mut by: BTreeMap<String, Acc> = BTreeMap::new();
    for w in workers {
        if w.state != WorkerState::Active || !w.kinds.iter().any(|k| k == "code") {
            continue;
        }
        let Some(langs) = w.labels.get("lang") else {
            continue;
        };
        let free = w.capacity.saturating_sub(w.running);
        for l in langs.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            let acc = by.entry(l.to_string()).or_default();
            acc.workers += 1;
            acc.slots_free += free;
            if let Some(v) = w.labels.get(&format!("{LANG_VERSION_LABEL}{l}")) {
                *acc.versions.entry(v.clone()).or_default() += 1;
            }
        }
    }
    by.into_iter()
        .map(|(language, acc)| LanguageView {
            compiled: COMPILED_LANGUAGES.contains(&language.as_str()),
            // The most common version (workers of one cluster may differ).
            version: acc
                .versions
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(v, _)| v.clone()),
            language,
            workers: acc.workers,
            slots_free: acc.slots_free,
        })
        .collect()
}
