//! The OpenAPI document, generated from the handlers and wire types.

use utoipa::OpenApi;

/// Top of the document; paths are added by the router as routes are mounted.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "brigade",
        description = "Run work in parallel across many machines over plain HTTP/JSON.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "jobs", description = "Batches of tasks submitted together"),
        (name = "tasks", description = "Single tasks"),
        (name = "workers", description = "The worker protocol"),
        (name = "queues", description = "Queues"),
        (name = "limits", description = "Concurrency and rate limits per key"),
        (name = "schedules", description = "Jobs created on a clock"),
        (name = "events", description = "Live events"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "auth", description = "OAuth2 client credentials"),
    ),
    components(schemas(brigade_api::Problem, brigade_api::Event))
)]
pub struct ApiDoc;

/// Add what every operation may answer but its annotation does not repeat: the
/// auth errors (401, 403, 429) and the bearer scheme on private operations, the
/// body errors (400, 413, 415, 422) where there is a body, 408 for a request that
/// takes too long and 503 for a long-poll when too many are held.
pub fn document_common(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let problem = |desc: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(desc)
                .content(
                    brigade_api::problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    for (path, item) in doc.paths.paths.iter_mut() {
        if path == "/v1/auth/token" {
            continue;
        }
        let public = matches!(path.as_str(), "/healthz" | "/readyz");
        let events = path.starts_with("/v1/events");
        let long_poll = path.ends_with("/lease") || path == "/v1/jobs/{id}";
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let has_body = op.request_body.is_some();
            let r = &mut op.responses.responses;
            let mut add = |code: u16, desc: &str| {
                r.entry(code.to_string()).or_insert_with(|| problem(desc));
            };
            if !public {
                add(401, "No or invalid credentials");
                add(
                    403,
                    "The caller's role may not do this, or it is not the owner",
                );
                add(429, "Rate limited; see Retry-After");
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
            }
            if has_body {
                add(400, "Malformed JSON or no body");
                add(413, "Body too large");
                add(415, "Not a JSON body");
                add(422, "Invalid fields");
            }
            if !events {
                add(408, "The request took too long");
            }
            if long_poll {
                add(503, "Too many long-polls held; see Retry-After");
            }
        }
    }
}
