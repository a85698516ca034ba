//! Function URL configs as the Lambda API shows them (`2021-10-31`): Create, Get, Update,
//! Delete and List, with Lambda's shapes and errors.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use gust_core::lambda::{function_arn, timestamp};
use gust_core::limits::MAX_CONFIG_BODY_BYTES;
use gust_core::{AuthType, Cors, FunctionUrl, InvokeMode, UrlConfig};
use gust_service::{ServiceError, UrlPatch};
use serde::Deserialize;
use serde_json::{json, Value};

use super::functions::json_body;
use super::{target, AwsError, AwsResult, QueryMap};
use crate::AppState;

/// Lambda's `Cors` shape.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
struct CorsIn {
    allow_credentials: Option<bool>,
    allow_headers: Option<Vec<String>>,
    allow_methods: Option<Vec<String>>,
    allow_origins: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    max_age: Option<u32>,
}

impl From<CorsIn> for Cors {
    fn from(c: CorsIn) -> Cors {
        Cors {
            allow_credentials: c.allow_credentials.unwrap_or(false),
            allow_headers: c.allow_headers.unwrap_or_default(),
            allow_methods: c.allow_methods.unwrap_or_default(),
            allow_origins: c.allow_origins.unwrap_or_default(),
            expose_headers: c.expose_headers.unwrap_or_default(),
            max_age: c.max_age,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UrlIn {
    auth_type: Option<String>,
    cors: Option<CorsIn>,
    invoke_mode: Option<String>,
}

fn cors_out(c: &Cors) -> Value {
    json!({
        "AllowCredentials": c.allow_credentials,
        "AllowHeaders": c.allow_headers,
        "AllowMethods": c.allow_methods,
        "AllowOrigins": c.allow_origins,
        "ExposeHeaders": c.expose_headers,
        "MaxAge": c.max_age.unwrap_or(0),
    })
}

/// FunctionUrlConfig: the ARN is unqualified for `$LATEST`, qualified for an alias.
fn shown(s: &AppState, u: &FunctionUrl) -> Value {
    let qualifier = (u.qualifier != "$LATEST").then_some(u.qualifier.as_str());
    let mut v = json!({
        "FunctionUrl": s.cfg.urls.show(&u.url_id),
        "FunctionArn": function_arn(&u.function, qualifier),
        "AuthType": u.config.auth_type.as_str(),
        "CreationTime": timestamp(u.created_at),
        "LastModifiedTime": timestamp(u.updated_at),
        "InvokeMode": u.config.invoke_mode.as_str(),
    });
    if let Some(c) = &u.config.cors {
        v["Cors"] = cors_out(c);
    }
    v
}

fn invalid(e: gust_core::url::UrlError) -> AwsError {
    AwsError::invalid(e.0)
}

pub(crate) async fn create(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>, body: Body,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    let req: UrlIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let auth_type = req.auth_type.as_deref().ok_or_else(|| AwsError::invalid("AuthType is required"))?;
    let config = UrlConfig {
        auth_type: AuthType::parse(auth_type).map_err(invalid)?,
        cors: req.cors.map(Cors::from),
        invoke_mode: req
            .invoke_mode
            .as_deref()
            .map(InvokeMode::parse)
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default(),
    };
    let u = s.service.create_url(&name, qualifier.as_deref(), config).await.map_err(|e| match e {
        ServiceError::Conflict(_) => AwsError::conflict(format!(
            "Failed to create function url config for [functionArn = {}]. Error message:  FunctionUrlConfig exists for this Lambda function",
            function_arn(&name, qualifier.as_deref())
        )),
        e => e.into(),
    })?;
    let mut v = shown(&s, &u);
    v.as_object_mut().map(|o| o.remove("LastModifiedTime"));
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(crate) async fn get(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    let u = s.service.get_url(&name, qualifier.as_deref()).await?;
    Ok(Json(shown(&s, &u)).into_response())
}

pub(crate) async fn update(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>, body: Body,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    let req: UrlIn = json_body(body, MAX_CONFIG_BODY_BYTES).await?;
    let patch = UrlPatch {
        auth_type: req.auth_type.as_deref().map(AuthType::parse).transpose().map_err(invalid)?,
        cors: req.cors.map(|c| Some(Cors::from(c))),
        invoke_mode: req.invoke_mode.as_deref().map(InvokeMode::parse).transpose().map_err(invalid)?,
    };
    let u = s.service.update_url(&name, qualifier.as_deref(), patch).await?;
    Ok(Json(shown(&s, &u)).into_response())
}

pub(crate) async fn delete(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, qualifier) = target(&raw, q.get("Qualifier").map(String::as_str))?;
    s.service.delete_url(&name, qualifier.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// ListFunctionUrlConfigs, paged by `Marker` (the last qualifier of the previous page) and
/// `MaxItems` (1-50).
pub(crate) async fn list(
    State(s): State<AppState>, Path(raw): Path<String>, Query(q): Query<QueryMap>,
) -> AwsResult {
    let (name, _) = target(&raw, None)?;
    let max = match q.get("MaxItems") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=50).contains(m))
            .ok_or_else(|| AwsError::invalid("MaxItems must be 1-50"))?,
        None => 50,
    };
    let marker = q.get("Marker").filter(|m| !m.is_empty());
    let all = s.service.list_urls(&name).await?;
    let page: Vec<&FunctionUrl> =
        all.iter().filter(|u| marker.is_none_or(|m| u.qualifier.as_str() > m.as_str())).take(max).collect();
    let next = (page.len() == max
        && all.iter().any(|u| u.qualifier.as_str() > page[max - 1].qualifier.as_str()))
    .then(|| page[max - 1].qualifier.clone());
    let items: Vec<Value> = page.iter().map(|u| shown(&s, u)).collect();
    let mut v = json!({ "FunctionUrlConfigs": items });
    if let Some(n) = next {
        v["NextMarker"] = json!(n);
    }
    Ok(Json(v).into_response())
}
