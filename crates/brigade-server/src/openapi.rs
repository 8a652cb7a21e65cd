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
        (name = "events", description = "Live events"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "auth", description = "OAuth2 client credentials"),
    ),
    components(schemas(brigade_api::Problem, brigade_api::Event))
)]
pub struct ApiDoc;
