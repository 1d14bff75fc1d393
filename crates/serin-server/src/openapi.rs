//! The parts of the OpenAPI document that are not derived from single routes:
//! metadata, the bearer scheme, and the error answers every route shares.

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr};
use utoipa::{OpenApi as _, PartialSchema, ToSchema};

use crate::error::{ErrorBody, ErrorCode, ErrorDetail};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Serin",
        description = "Release control plane for AI agents. Every route but /healthz and /readyz \
                       needs `Authorization: Bearer <token>`. Errors always answer \
                       `{\"error\":{\"code\",\"message\",\"field\"?,\"details\"?}}`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
struct Base;

pub fn base() -> OpenApi {
    Base::openapi()
}

fn error_response(code: ErrorCode) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(code.describe()).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build(),
    );
    if matches!(code, ErrorCode::Overloaded | ErrorCode::Unavailable) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::Integer))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// Adds the shared security scheme and, to every operation, the error answers
/// it can give, so the document lists every status a client may see.
pub fn complete(mut api: OpenApi) -> OpenApi {
    let _ = ErrorBody::schema();
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API token from `serin token create`"))
                .build(),
        ),
    );
    for (path, item) in api.paths.paths.iter_mut() {
        let public = path == "/healthz" || path == "/readyz";
        let has_path_params = path.contains('{');
        let ops: [(HttpMethod, &mut Option<Operation>); 4] = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Delete, &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            let has_body = matches!(method, HttpMethod::Post | HttpMethod::Put);
            let mut add = |code: ErrorCode| {
                let status = code.status().as_u16().to_string();
                let responses = &mut op.responses.responses;
                responses
                    .entry(status)
                    .or_insert_with(|| error_response(code));
            };
            add(ErrorCode::MethodNotAllowed);
            add(ErrorCode::Overloaded);
            add(ErrorCode::Internal);
            add(ErrorCode::UriTooLong);
            add(ErrorCode::HeadersTooLarge);
            if public {
                continue;
            }
            add(ErrorCode::Unauthenticated);
            add(ErrorCode::Forbidden);
            add(ErrorCode::BadRequest);
            add(ErrorCode::Unavailable);
            if has_path_params || path.starts_with("/v1/") {
                add(ErrorCode::NotFound);
            }
            if has_body {
                add(ErrorCode::PayloadTooLarge);
                add(ErrorCode::UnsupportedMediaType);
                add(ErrorCode::InvalidField);
                add(ErrorCode::RequestTimeout);
            }
            if method == HttpMethod::Delete {
                add(ErrorCode::Conflict);
            }
        }
    }
    api
}
