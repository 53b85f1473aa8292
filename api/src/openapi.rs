//! The OpenAPI document (generated from the handlers' annotations, so it cannot drift
//! from the routes) and the interactive docs page.

use axum::response::Html;
use utoipa::Modify;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "DeployGuard API",
        version = "2",
        description = "Finds leaked secrets in the whole history of git repositories, removes \
                       the ones you select by rewriting history, and hands the cleaned \
                       repository back. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&Security),
    tags(
        (name = "jobs", description = "Scan, select, clean, download and push"),
        (name = "admin", description = "For the admin panel (role `admin`)"),
        (name = "health", description = "Probes and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "gateway",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-User-ID",
                "Set by the authentication gateway (gateway mode)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// An interactive page over `/api/v2/openapi.json` (Swagger UI, loaded by the browser).
pub async fn docs_page() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>DeployGuard API</title>
  <link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
  <div id="docs"></div>
  <noscript>The machine-readable document is at <a href="/api/v2/openapi.json">/api/v2/openapi.json</a>.</noscript>
  <script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js" crossorigin></script>
  <script>
    window.onload = () => SwaggerUIBundle({ url: "/api/v2/openapi.json", dom_id: "#docs" });
  </script>
</body>
</html>"##,
    )
}
